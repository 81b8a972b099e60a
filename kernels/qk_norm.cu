// qk_norm_<dtype>: RMSNorm of every q head (weight q_w) and every k head (weight k_w) of the
// fused qkv rows, in place (Qwen3). v heads are untouched. f32 arithmetic, one rounding on store.
//
// CPU reference: runtime/cpu/ops.rs (qk_norm).
// Layout: qkv [rows, row_width] row-major, each row [q heads | k heads | v heads], every head
// head_dim wide; q_w and k_w are [head_dim].
// Launch: grid (rows, ceil((num_heads + num_kv_heads) / 4)), block 128: one warp per head; lanes
// take 4 consecutive elements at a time (one 8-byte bf16 / 16-byte f32 load) when head_dim is a
// multiple of 4 and at most 256, else one.
#include "common.cuh"
#include "dtype.cuh"

template <typename T>
__device__ __forceinline__ void qk_norm_impl(T* __restrict__ qkv, const T* __restrict__ q_w,
                                             const T* __restrict__ k_w, float eps,
                                             uint32_t num_heads, uint32_t num_kv_heads,
                                             uint32_t head_dim) {
    const uint32_t lane = threadIdx.x % TANDEM_WARP;
    const uint32_t head = blockIdx.y * (blockDim.x / TANDEM_WARP) + threadIdx.x / TANDEM_WARP;
    if (head >= num_heads + num_kv_heads) return;  // whole warps leave together
    const size_t row_width = (size_t)(num_heads + 2 * num_kv_heads) * head_dim;
    T* x = qkv + blockIdx.x * row_width + (size_t)head * head_dim;
    const T* w = head < num_heads ? q_w : k_w;
    constexpr int PER = 4;
    if (head_dim % PER == 0 && head_dim <= 2 * TANDEM_WARP * PER) {
        // Up to two vectors of 4 per lane, held in registers between the sum and the scaling
        // (head offsets are multiples of 4 elements: aligned for load4).
        const uint32_t chunks = head_dim / PER;
        float v[2][PER];
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const uint32_t c = lane + j * TANDEM_WARP;
            if (c < chunks) {
                load4(x + c * PER, v[j]);
#pragma unroll
                for (int k = 0; k < PER; k++) ss += v[j][k] * v[j][k];
            }
        }
        const float inv = 1.0f / sqrtf(warp_sum(ss) / (float)head_dim + eps);
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const uint32_t c = lane + j * TANDEM_WARP;
            if (c < chunks) {
                float g[PER];
                load4(w + c * PER, g);
#pragma unroll
                for (int k = 0; k < PER; k++) v[j][k] = v[j][k] * (inv * g[k]);
                store4(x + c * PER, v[j]);
            }
        }
        return;
    }
    float ss = 0.0f;
    for (uint32_t c = lane; c < head_dim; c += TANDEM_WARP) {
        const float v = to_f32(x[c]);
        ss += v * v;
    }
    const float inv = 1.0f / sqrtf(warp_sum(ss) / (float)head_dim + eps);
    for (uint32_t c = lane; c < head_dim; c += TANDEM_WARP) {
        x[c] = from_f32<T>(to_f32(x[c]) * (inv * to_f32(w[c])));
    }
}

#define QK_NORM_ENTRY(SUFFIX, T)                                                                  \
    extern "C" __global__ void qk_norm_##SUFFIX(T* __restrict__ qkv, const T* __restrict__ q_w,   \
                                                const T* __restrict__ k_w, float eps,             \
                                                uint32_t num_heads, uint32_t num_kv_heads,        \
                                                uint32_t head_dim) {                              \
        qk_norm_impl<T>(qkv, q_w, k_w, eps, num_heads, num_kv_heads, head_dim);                   \
    }
QK_NORM_ENTRY(f32, float)
QK_NORM_ENTRY(bf16, bf16)
