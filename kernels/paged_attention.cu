// paged_attention_<dtype>: causal attention of every query row and head over its sequence's keys and
// values in the paged cache — decode, prefill and chunked prefill in one kernel, grouped-query
// heads, optional sliding window. f32 or bf16 storage, f32 accumulation.
//
// For sequence s with q new rows and context length c (cached + new), query row i of s sits at
// key index c - q + i and attends to keys first..=c - q + i, where first = 0, or with a sliding
// window w, max(0, c - q + i + 1 - w). Key j lives at slot block_tables[s][j / block_size] *
// block_size + j % block_size. Query head h reads kv head h / (num_heads / num_kv_heads).
//
//   out[row, h, :] = softmax_j(q . k_j * scale) . v_j
//
// CPU reference: device/cpu/attention.rs (attention).
// Layout: qkv [rows, (num_heads + 2 num_kv_heads) * head_dim] row-major (q heads first);
// k_cache, v_cache [num_blocks, block_size, num_kv_heads, head_dim]; query_start_locs [S + 1],
// context_lens [S], block_tables [S, max_blocks_per_seq] u32; out [rows, num_heads * head_dim].
//
// Launch: grid (rows, num_heads), block ATTN_THREADS (4 warps); head_dim <= ATTN_MAX_HEAD_DIM.
// Method (correctness first): one block per (row, head). Each warp walks every 4th group of
// ATTN_KEYS consecutive keys, lane l owning dims l, l+32, ...; it keeps an online-softmax state
// (running max m, sum l, accumulator) in registers; the 4 warps' states are merged through
// shared memory at the end. Pure decode steps (one row per sequence) run
// paged_attention_decode.cu instead, which splits long contexts over blocks and shares each K/V
// load across the q heads of a GQA group; the other steps of bf16 storage with head_dim a
// multiple of 16 up to 128 run paged_attention_prefill.cu (tensor cores).
#include "common.cuh"
#include "dtype.cuh"

#define ATTN_THREADS 128
#define ATTN_WARPS (ATTN_THREADS / TANDEM_WARP)
#define ATTN_MAX_HEAD_DIM 256
#define ATTN_PER_LANE (ATTN_MAX_HEAD_DIM / TANDEM_WARP)
#define ATTN_KEYS 4

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

template <typename T>
__device__ __forceinline__ void paged_attention_impl(
    const T* __restrict__ qkv, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const uint32_t* __restrict__ query_start_locs, const uint32_t* __restrict__ context_lens,
    const uint32_t* __restrict__ block_tables, uint32_t num_seqs, uint32_t max_blocks_per_seq,
    uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim, uint32_t block_size,
    float scale, uint32_t sliding_window, T* __restrict__ out) {
    __shared__ float sm_m[ATTN_WARPS];
    __shared__ float sm_l[ATTN_WARPS];
    __shared__ float sm_acc[ATTN_WARPS][ATTN_MAX_HEAD_DIM];

    const uint32_t row = blockIdx.x, head = blockIdx.y;
    const uint32_t lane = threadIdx.x % TANDEM_WARP, warp = threadIdx.x / TANDEM_WARP;

    // The row's sequence: the last s with query_start_locs[s] <= row.
    uint32_t lo = 0, hi = num_seqs;
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        if (query_start_locs[mid] <= row) lo = mid; else hi = mid;
    }
    const uint32_t s = lo;
    const uint32_t q_start = query_start_locs[s];
    const uint32_t q_len = query_start_locs[s + 1] - q_start;
    const uint32_t key_pos = context_lens[s] - q_len + (row - q_start);
    const uint32_t first =
        (sliding_window > 0 && key_pos + 1 > sliding_window) ? key_pos + 1 - sliding_window : 0;

    const uint32_t kv_head = head / (num_heads / num_kv_heads);
    const size_t kv_width = (size_t)num_kv_heads * head_dim;
    const T* q = qkv + (size_t)row * (num_heads + 2 * num_kv_heads) * head_dim +
                     (size_t)head * head_dim;
    const uint32_t* table = block_tables + (size_t)s * max_blocks_per_seq;

    float qr[ATTN_PER_LANE], acc[ATTN_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATTN_PER_LANE; i++) {
        const uint32_t d = lane + TANDEM_WARP * i;
        qr[i] = d < head_dim ? to_f32(q[d]) : 0.0f;
        acc[i] = 0.0f;
    }
    float m = neg_inf(), l = 0.0f;

    for (uint32_t j0 = first + warp * ATTN_KEYS; j0 <= key_pos; j0 += ATTN_WARPS * ATTN_KEYS) {
        float sc[ATTN_KEYS];
        size_t off[ATTN_KEYS];
#pragma unroll
        for (int u = 0; u < ATTN_KEYS; u++) {
            const uint32_t j = j0 + u;
            float part = 0.0f;
            off[u] = 0;
            if (j <= key_pos) {
                const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
                off[u] = slot * kv_width + (size_t)kv_head * head_dim;
                const T* k = k_cache + off[u];
#pragma unroll
                for (int i = 0; i < ATTN_PER_LANE; i++) {
                    const uint32_t d = lane + TANDEM_WARP * i;
                    if (d < head_dim) part += qr[i] * to_f32(k[d]);
                }
            }
            sc[u] = part;
        }
        float mx = m;
#pragma unroll
        for (int u = 0; u < ATTN_KEYS; u++) {
            const float dot = warp_sum(sc[u]);  // j0 + u <= key_pos is the same on every lane
            sc[u] = j0 + u <= key_pos ? dot * scale : neg_inf();
            mx = fmaxf(mx, sc[u]);
        }
        const float corr = expf(m - mx);  // m = -inf on the first group: corr = 0
        l *= corr;
#pragma unroll
        for (int i = 0; i < ATTN_PER_LANE; i++) acc[i] *= corr;
#pragma unroll
        for (int u = 0; u < ATTN_KEYS; u++) {
            if (j0 + u > key_pos) break;
            const float p = expf(sc[u] - mx);
            l += p;
            const T* v = v_cache + off[u];
#pragma unroll
            for (int i = 0; i < ATTN_PER_LANE; i++) {
                const uint32_t d = lane + TANDEM_WARP * i;
                if (d < head_dim) acc[i] += p * to_f32(v[d]);
            }
        }
        m = mx;
    }

    // Merge the warps' states: M = max m_w, L = sum l_w e^(m_w - M), o = sum acc_w e^(m_w - M) / L.
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATTN_PER_LANE; i++) {
        const uint32_t d = lane + TANDEM_WARP * i;
        if (d < head_dim) sm_acc[warp][d] = acc[i];
    }
    __syncthreads();
    float big = neg_inf();
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) big = fmaxf(big, sm_m[w]);
    float weight[ATTN_WARPS], total = 0.0f;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) {
        // A warp that saw no keys has m = -inf, l = 0, acc = 0: its weight is 0.
        weight[w] = sm_l[w] > 0.0f ? expf(sm_m[w] - big) : 0.0f;
        total += sm_l[w] * weight[w];
    }
    const float inv_total = 1.0f / total;
    T* o = out + (size_t)row * num_heads * head_dim + (size_t)head * head_dim;
    for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++) sum += sm_acc[w][d] * weight[w];
        o[d] = from_f32<T>(sum * inv_total);
    }
}

#define PAGED_ATTENTION_ENTRY(SUFFIX, T)                                                          \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS) paged_attention_##SUFFIX(          \
        const T* __restrict__ qkv, const T* __restrict__ k_cache, const T* __restrict__ v_cache,  \
        const uint32_t* __restrict__ query_start_locs, const uint32_t* __restrict__ context_lens, \
        const uint32_t* __restrict__ block_tables, uint32_t num_seqs,                             \
        uint32_t max_blocks_per_seq, uint32_t num_heads, uint32_t num_kv_heads,                   \
        uint32_t head_dim, uint32_t block_size, float scale, uint32_t sliding_window,             \
        T* __restrict__ out) {                                                                    \
        grid_dependency_sync();                                                                   \
        paged_attention_impl<T>(qkv, k_cache, v_cache, query_start_locs, context_lens,            \
                                block_tables, num_seqs, max_blocks_per_seq, num_heads,            \
                                num_kv_heads, head_dim, block_size, scale, sliding_window, out);  \
    }
PAGED_ATTENTION_ENTRY(f32, float)
PAGED_ATTENTION_ENTRY(bf16, bf16)
