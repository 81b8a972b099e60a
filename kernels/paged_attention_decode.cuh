// What the two decode-attention kernels share: paged_attention_decode.cu (scalar, any dtype) and
// paged_attention_decode_tc.cu (tensor cores, bf16). Both take the same arguments, launch shape
// and split partials, so the host swaps one for the other and paged_attention_merge_* combines
// either's splits. The layout and the split contract are described in paged_attention_decode.cu.
#pragma once

#include "common.cuh"
#include "dtype.cuh"

#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / TANDEM_WARP)
// Fewest keys a split gets (the host picks splits from the longest context; shorter sequences
// leave their trailing splits empty rather than splitting into slivers).
#define DEC_MIN_SPLIT_KEYS 64
// Most splits the merge kernel combines (device/cuda/attention.rs caps num_splits at this).
#define DEC_MAX_SPLITS 64

__device__ __forceinline__ float dec_neg_inf() { return __int_as_float(0xff800000); }

// The keys [begin, end) that split `split` of `num_splits` covers for a sequence of context `ctx`
// (its window's keys only, with a sliding window): equal shares of at least DEC_MIN_SPLIT_KEYS,
// so the trailing splits of a short sequence are empty (begin == end).
__device__ __forceinline__ void dec_split_range(uint32_t ctx, uint32_t sliding_window,
                                                uint32_t num_splits, uint32_t split,
                                                uint32_t& begin, uint32_t& end) {
    const uint32_t first = (sliding_window > 0 && ctx > sliding_window) ? ctx - sliding_window : 0;
    const uint32_t span = ctx - first;
    uint32_t per_split = (span + num_splits - 1) / num_splits;
    per_split = per_split < DEC_MIN_SPLIT_KEYS ? DEC_MIN_SPLIT_KEYS : per_split;
    begin = first + min(span, split * per_split);
    end = first + min(span, (split + 1) * per_split);
}

// Where a block's result goes: the block's (sequence s, kv head kvh, split) and the step's shape.
struct DecBlock {
    uint32_t s, kvh, split, row, group, num_heads, head_dim, num_splits;
};

// Combines the warps' softmax states and writes the block's result. Warp w's state for head
// slot h (q head kvh * group + (w % nchunks) * HC + h) is m = sm_m[w][h] (running max, natural
// log units; -inf when the warp saw no key), l = sm_l[w][h] (sum of e^(score - m)) and the
// unnormalized output sm_acc[w][h][0..head_dim); the warps of chunk c are c, c + nchunks, ...
//   M = max m_w, L = sum l_w e^(m_w - M), o = sum acc_w e^(m_w - M) / L.
// With one split, o is the final output; otherwise o goes to part_o and (M, L) to part_ml for
// paged_attention_merge_*. Call after a __syncthreads that publishes the shared arrays.
template <typename T, int HC, int WIDTH>
__device__ __forceinline__ void dec_write_block(const float (&sm_m)[DEC_WARPS][HC],
                                                const float (&sm_l)[DEC_WARPS][HC],
                                                const float (&sm_acc)[DEC_WARPS][HC][WIDTH],
                                                uint32_t nchunks, const DecBlock& b,
                                                T* __restrict__ out, float* __restrict__ part_o,
                                                float* __restrict__ part_ml) {
    const uint32_t kgroups = DEC_WARPS / nchunks;
    const uint32_t items = nchunks * HC * b.head_dim;
    for (uint32_t it = threadIdx.x; it < items; it += DEC_THREADS) {
        const uint32_t c = it / (HC * b.head_dim), h = (it / b.head_dim) % HC, d = it % b.head_dim;
        if (c * HC + h >= b.group) continue;
        float big = dec_neg_inf();
        for (uint32_t g = 0; g < kgroups; g++) big = fmaxf(big, sm_m[c + g * nchunks][h]);
        float total = 0.0f, sum = 0.0f;
        for (uint32_t g = 0; g < kgroups; g++) {
            const uint32_t w = c + g * nchunks;
            const float wt = sm_l[w][h] > 0.0f ? expf(sm_m[w][h] - big) : 0.0f;
            total += sm_l[w][h] * wt;
            sum += sm_acc[w][h][d] * wt;
        }
        const uint32_t head = b.kvh * b.group + c * HC + h;
        if (b.num_splits == 1) {
            // The whole context in one block: the final output (total > 0: ctx >= 1).
            out[(size_t)b.row * b.num_heads * b.head_dim + (size_t)head * b.head_dim + d] =
                from_f32<T>(sum / total);
        } else {
            const size_t e = ((size_t)b.s * b.num_splits + b.split) * b.num_heads + head;
            part_o[e * b.head_dim + d] = total > 0.0f ? sum / total : 0.0f;
            if (d == 0) {
                part_ml[2 * e] = big;
                part_ml[2 * e + 1] = total;
            }
        }
    }
}

#define DEC_ARGS(T)                                                                              \
    const T *__restrict__ qkv, const T *__restrict__ k_cache, const T *__restrict__ v_cache,      \
        const uint32_t *__restrict__ query_start_locs, const uint32_t *__restrict__ context_lens, \
        const uint32_t *__restrict__ block_tables, uint32_t max_blocks_per_seq,                   \
        uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim, uint32_t block_size,        \
        float scale, uint32_t sliding_window, uint32_t num_splits, T *__restrict__ out,           \
        float *__restrict__ part_o, float *__restrict__ part_ml
#define DEC_PASS                                                                                  \
    qkv, k_cache, v_cache, query_start_locs, context_lens, block_tables, max_blocks_per_seq,      \
        num_heads, num_kv_heads, head_dim, block_size, scale, sliding_window, num_splits, out,    \
        part_o, part_ml
