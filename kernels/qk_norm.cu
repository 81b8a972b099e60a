// qk_norm_f32: RMSNorm of every q head (weight q_w) and every k head (weight k_w) of the fused
// qkv rows, in place (Qwen3). v heads are untouched.
//
// CPU reference: runtime/cpu/ops.rs (qk_norm).
// Layout: qkv [rows, row_width] row-major, each row [q heads | k heads | v heads], every head
// head_dim wide; q_w and k_w are [head_dim].
// Launch: grid (rows, ceil((num_heads + num_kv_heads) / 4)), block 128: one warp per head.
#include "common.cuh"

extern "C" __global__ void qk_norm_f32(float* __restrict__ qkv, const float* __restrict__ q_w,
                                       const float* __restrict__ k_w, float eps,
                                       uint32_t num_heads, uint32_t num_kv_heads,
                                       uint32_t head_dim) {
    const uint32_t lane = threadIdx.x % TANDEM_WARP;
    const uint32_t head = blockIdx.y * (blockDim.x / TANDEM_WARP) + threadIdx.x / TANDEM_WARP;
    if (head >= num_heads + num_kv_heads) return;  // whole warps leave together
    const size_t row_width = (size_t)(num_heads + 2 * num_kv_heads) * head_dim;
    float* x = qkv + blockIdx.x * row_width + (size_t)head * head_dim;
    const float* w = head < num_heads ? q_w : k_w;
    float ss = 0.0f;
    for (uint32_t c = lane; c < head_dim; c += TANDEM_WARP) ss += x[c] * x[c];
    const float inv = 1.0f / sqrtf(warp_sum(ss) / (float)head_dim + eps);
    for (uint32_t c = lane; c < head_dim; c += TANDEM_WARP) x[c] = x[c] * (inv * w[c]);
}
