// silu_mul_f32: out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i], silu(g) = g / (1 + e^-g).
//
// CPU reference: runtime/cpu/ops.rs (silu_mul).
// Layout: gate_up [rows, 2 * inter] row-major ([gate | up] per row); out [rows, inter].
// Launch: grid (rows, ceil(inter / 256)), block 256 (rows on x: y is limited to 65535); one element per thread. expf is the accurate
// one (no fast-math), to stay close to the CPU reference.
#include "common.cuh"

extern "C" __global__ void silu_mul_f32(const float* __restrict__ gate_up, uint32_t inter,
                                        float* __restrict__ out) {
    const uint32_t i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= inter) return;
    const float* gu = gate_up + (size_t)blockIdx.x * 2 * inter;
    const float g = gu[i];
    out[(size_t)blockIdx.x * inter + i] = g / (1.0f + expf(-g)) * gu[inter + i];
}
