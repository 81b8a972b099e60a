// silu_mul_<dtype>: out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i],
// silu(g) = g / (1 + e^-g), in f32, rounded once on store.
//
// CPU reference: device/cpu/ops.rs (silu_mul).
// Layout: gate_up [rows, 2 * inter] row-major ([gate | up] per row); out [rows, inter].
// Launch: grid (rows, ceil(inter / (256 * PER))), block 256 (rows on x: y is limited to 65535),
// where PER = 16 / sizeof(T) (4 f32, 8 bf16) when inter is a multiple of PER, else 1: each thread
// takes PER consecutive elements with one 16-byte load of gate, one of up and one store (rows
// then start 16-byte aligned); otherwise one element per thread. expf is the accurate one (no
// fast-math), to stay close to the CPU reference.
#include "common.cuh"
#include "dtype.cuh"

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

template <typename T>
__device__ __forceinline__ void silu_mul_impl(const T* __restrict__ gate_up, uint32_t inter,
                                              T* __restrict__ out) {
    constexpr int PER = Vec16<T>::N;
    const T* gu = gate_up + (size_t)blockIdx.x * 2 * inter;
    T* o = out + (size_t)blockIdx.x * inter;
    if (inter % PER == 0) {
        const uint32_t i = (blockIdx.y * blockDim.x + threadIdx.x) * PER;
        if (i >= inter) return;
        float g[PER], u[PER];
        load_vec<PER>(gu + i, g);
        load_vec<PER>(gu + inter + i, u);
#pragma unroll
        for (int k = 0; k < PER; k++) g[k] = silu_times(g[k], u[k]);
        store_vec<PER>(o + i, g);
    } else {
        const uint32_t i = blockIdx.y * blockDim.x + threadIdx.x;
        if (i >= inter) return;
        o[i] = from_f32<T>(silu_times(to_f32(gu[i]), to_f32(gu[inter + i])));
    }
}

#define SILU_MUL_ENTRY(SUFFIX, T)                                                                 \
    extern "C" __global__ void silu_mul_##SUFFIX(const T* __restrict__ gate_up, uint32_t inter,   \
                                                 T* __restrict__ out) {                           \
        grid_dependency_sync();                                                                   \
        silu_mul_impl<T>(gate_up, inter, out);                                                    \
    }
SILU_MUL_ENTRY(f32, float)
SILU_MUL_ENTRY(bf16, bf16)
