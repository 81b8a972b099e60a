// add_bias_f32: out[r, c] += bias[c] — the bias of a linear layer, added after the cuBLAS GEMM
// (Qwen2's q/k/v projections).
//
// CPU reference: runtime/cpu/gemm.rs (matmul_transposed with a bias).
// Layout: out [rows, n] row-major; bias [n].
// Launch: grid (rows, ceil(n / 256)), block 256 (rows on x: y is limited to 65535); one element per thread.
#include "common.cuh"

extern "C" __global__ void add_bias_f32(float* __restrict__ out, const float* __restrict__ bias,
                                        uint32_t n) {
    const uint32_t c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= n) return;
    out[(size_t)blockIdx.x * n + c] += bias[c];
}
