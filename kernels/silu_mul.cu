// silu_mul_<dtype>: out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i],
// silu(g) = g / (1 + e^-g), in f32, rounded once on store.
//
// CPU reference: runtime/cpu/ops.rs (silu_mul).
// Layout: gate_up [rows, 2 * inter] row-major ([gate | up] per row); out [rows, inter].
// Launch: grid (rows, ceil(inter / 256)), block 256 (rows on x: y is limited to 65535); one
// element per thread. expf is the accurate one (no fast-math), to stay close to the CPU
// reference.
#include "common.cuh"
#include "dtype.cuh"

template <typename T>
__device__ __forceinline__ void silu_mul_impl(const T* __restrict__ gate_up, uint32_t inter,
                                              T* __restrict__ out) {
    const uint32_t i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= inter) return;
    const T* gu = gate_up + (size_t)blockIdx.x * 2 * inter;
    const float g = to_f32(gu[i]);
    out[(size_t)blockIdx.x * inter + i] = from_f32<T>(g / (1.0f + expf(-g)) * to_f32(gu[inter + i]));
}

#define SILU_MUL_ENTRY(SUFFIX, T)                                                                 \
    extern "C" __global__ void silu_mul_##SUFFIX(const T* __restrict__ gate_up, uint32_t inter,   \
                                                 T* __restrict__ out) {                           \
        silu_mul_impl<T>(gate_up, inter, out);                                                    \
    }
SILU_MUL_ENTRY(f32, float)
SILU_MUL_ENTRY(bf16, bf16)
