// qk_norm_<dtype>: RMSNorm of every q head (weight q_w) and every k head (weight k_w) of the
// fused qkv rows, in place (Qwen3). v heads are untouched. f32 arithmetic, one rounding on store.
//
// CPU reference: device/cpu/ops.rs (qk_norm).
// Layout: qkv [rows, row_width] row-major, each row [q heads | k heads | v heads], every head
// head_dim wide; q_w and k_w are [head_dim].
// Launch: grid (rows, ceil((num_heads + num_kv_heads) / 4)), block 128: one warp per head; lanes
// take 4 consecutive elements at a time (one 8-byte bf16 / 16-byte f32 load) when head_dim is a
// multiple of 4 and at most 256, else one.
//
// qk_norm_rope_write_kv_<dtype>: qk_norm, then rope.cu's rope_write_kv (RoPE on the q and k
// heads, the rotated k heads and the v heads into the paged cache at the row's slot), in one
// launch: what a Qwen3 layer runs before attention, three launches on a few KB per decode row.
// Same results as the three kernels in turn: the normalized heads are rounded to T before they
// are rotated, as the unfused path stores them. One warp per head again (v heads: copied to the
// cache); each lane keeps its normalized elements in registers and the warp shares the head
// through shared memory for the rotation, whose partner element (i +- head_dim / 2) another lane
// holds. For head_dim a multiple of 4 up to 256 (the host runs the three kernels otherwise).
// Extra arguments as rope_write_kv: cos_sin [max_positions, head_dim], positions [rows] u32
// (a position outside the table writes NaN into the row's q and k heads, as rope does),
// k_cache, v_cache [num_slots, num_kv_heads * head_dim], slot_mapping [rows] i64.
// Launch: grid (rows, ceil((num_heads + 2 num_kv_heads) / 4)), block 128.
#include "common.cuh"
#include "dtype.cuh"

// The vector path's normalization of one head by one warp (head_dim a multiple of 4, at most
// 256): lane l holds elements [4c, 4c + 4) for c = l and l + 32 (while c < head_dim / 4) in v,
// normalized and scaled by w, in f32 (not yet rounded to T).
template <typename T>
__device__ __forceinline__ void qk_norm_head(const T* __restrict__ x, const T* __restrict__ w,
                                             float eps, uint32_t head_dim, uint32_t lane,
                                             float (&v)[2][4]) {
    constexpr int PER = 4;
    const uint32_t chunks = head_dim / PER;
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
        }
    }
}

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
        float v[2][PER];
        qk_norm_head(x, w, eps, head_dim, lane, v);
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const uint32_t c = lane + j * TANDEM_WARP;
            if (c < head_dim / PER) store4(x + c * PER, v[j]);
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
        grid_dependency_sync();                                                                   \
        qk_norm_impl<T>(qkv, q_w, k_w, eps, num_heads, num_kv_heads, head_dim);                   \
    }
QK_NORM_ENTRY(f32, float)
QK_NORM_ENTRY(bf16, bf16)

#define QKR_WARPS 4
#define QKR_MAX_HEAD_DIM 256

template <typename T>
__device__ __forceinline__ void qk_norm_rope_write_kv_impl(
    T* __restrict__ qkv, const T* __restrict__ q_w, const T* __restrict__ k_w, float eps,
    const T* __restrict__ cos_sin, const uint32_t* __restrict__ positions, uint32_t max_positions,
    uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim, T* __restrict__ k_cache,
    T* __restrict__ v_cache, const int64_t* __restrict__ slot_mapping, uint64_t num_slots) {
    __shared__ float sm_head[QKR_WARPS][QKR_MAX_HEAD_DIM];
    constexpr int PER = 4;
    const uint32_t lane = threadIdx.x % TANDEM_WARP, warp = threadIdx.x / TANDEM_WARP;
    const uint32_t head = blockIdx.y * QKR_WARPS + warp;
    const uint32_t rotated_heads = num_heads + num_kv_heads;
    if (head >= rotated_heads + num_kv_heads) return;  // whole warps leave together
    const size_t row_width = (size_t)(num_heads + 2 * num_kv_heads) * head_dim;
    const size_t kv_width = (size_t)num_kv_heads * head_dim;
    T* x = qkv + blockIdx.x * row_width + (size_t)head * head_dim;
    const int64_t slot = slot_mapping[blockIdx.x];
    const bool store = slot >= 0 && (uint64_t)slot < num_slots;
    if (head >= rotated_heads) {  // a v head: copied to the cache
        if (store) {
            T* d = v_cache + (size_t)slot * kv_width + (size_t)(head - rotated_heads) * head_dim;
            for (uint32_t c = lane; c < head_dim; c += TANDEM_WARP) d[c] = x[c];
        }
        return;
    }
    // RMSNorm as qk_norm_impl's vector path, each value rounded to T as its store would.
    const uint32_t chunks = head_dim / PER;
    float v[2][PER];
    qk_norm_head(x, head < num_heads ? q_w : k_w, eps, head_dim, lane, v);
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const uint32_t c = lane + j * TANDEM_WARP;
        if (c < chunks) {
#pragma unroll
            for (int k = 0; k < PER; k++) {
                v[j][k] = to_f32(from_f32<T>(v[j][k]));
                sm_head[warp][c * PER + k] = v[j][k];
            }
        }
    }
    __syncwarp();
    // RoPE, as rope_impl: element e < half pairs with e + half (x = e, y = e + half).
    const uint32_t pos = positions[blockIdx.x];
    const bool bad = pos >= max_positions;
    const uint32_t half = head_dim / 2;
    const T* cs = cos_sin + (size_t)(bad ? 0 : pos) * head_dim;
    T* kd = (store && head >= num_heads)
                ? k_cache + (size_t)slot * kv_width + (size_t)(head - num_heads) * head_dim
                : nullptr;
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const uint32_t c = lane + j * TANDEM_WARP;
        if (c < chunks) {
            float o[PER];
#pragma unroll
            for (int k = 0; k < PER; k++) {
                const uint32_t e = c * PER + k;
                const uint32_t i = e < half ? e : e - half;
                const float cv = to_f32(cs[i]), sv = to_f32(cs[half + i]);
                if (bad) {
                    o[k] = tandem_nan();
                } else if (e < half) {
                    o[k] = v[j][k] * cv - sm_head[warp][e + half] * sv;
                } else {
                    o[k] = v[j][k] * cv + sm_head[warp][i] * sv;
                }
            }
            store4(x + c * PER, o);
            if (kd) store4(kd + c * PER, o);
        }
    }
}

#define QK_NORM_ROPE_ENTRY(SUFFIX, T)                                                             \
    extern "C" __global__ void qk_norm_rope_write_kv_##SUFFIX(                                    \
        T* __restrict__ qkv, const T* __restrict__ q_w, const T* __restrict__ k_w, float eps,     \
        const T* __restrict__ cos_sin, const uint32_t* __restrict__ positions,                    \
        uint32_t max_positions, uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim,     \
        T* __restrict__ k_cache, T* __restrict__ v_cache,                                         \
        const int64_t* __restrict__ slot_mapping, uint64_t num_slots) {                           \
        grid_dependency_sync();                                                                   \
        qk_norm_rope_write_kv_impl<T>(qkv, q_w, k_w, eps, cos_sin, positions, max_positions,      \
                                      num_heads, num_kv_heads, head_dim, k_cache, v_cache,        \
                                      slot_mapping, num_slots);                                   \
    }
QK_NORM_ROPE_ENTRY(f32, float)
QK_NORM_ROPE_ENTRY(bf16, bf16)
