// paged_attention_decode_tc_bf16_d<D>: paged_attention_decode.cu's pure-decode attention for
// bf16 storage, with both products on the tensor cores (mma.sync m16n8k16, kernels/mma.cuh), for
// head_dim D = 64 or 128, GQA groups of at most 8 q heads and block sizes that are multiples of
// 16. Same semantics, arguments, launch shape and split partials as paged_attention_decode.cu
// (device/cuda/attention.rs picks this one where it applies; the merge kernel is shared).
//
// Why: the scalar bf16 kernel stays well below copy bandwidth while its f32 twin, reading twice
// the bytes for the same arithmetic, comes close to it: per key byte it issues a widening, q.k FMAs for each head of the group, a transposing shuffle reduction and the
// P.V FMAs, and the bf16 kernel runs out of issue slots before the memory system saturates. Here
// a warp's 16-key tile costs 3 D/16 mma instructions plus a softmax on four scores per lane, so
// the loop is left with little but its loads.
//
// Method, per warp and tile of 16 keys (a tile lies inside one cache block: tiles start at
// multiples of 16 and the host only sends block sizes that are multiples of 16, so one
// block-table lookup serves the tile):
//   S = Q K^T: M = q heads (rows g < group hold the group's heads; rows 8..15 and heads past
//     the group are zero), N = 8 keys (two products: keys 0..7 and 8..15), K = D dims in D/16
//     steps. The dims of a step are permuted so that each lane's operands are plain 32-bit
//     words of one contiguous slice: lane (g, t) holds dims [t D/4, (t+1) D/4) of its key row
//     and of q, and step ks takes dims t D/4 + 4 ks + (0, 1) as columns (2t, 2t+1) and + (2, 3)
//     as (2t+8, 2t+9) — the same permutation on both sides, so the dot products are unchanged.
//   Softmax: lane (g, t) holds head g's scores at keys (2t, 2t+1, 2t+8, 2t+9); the tile's max
//     per head is two shuffles away (the 4 lanes of a g). Online softmax in log2 units (exp2f,
//     scale * log2(e) applied to S in f32); P is rounded to bf16 for the second product and l
//     sums the rounded values, so the weights applied to V sum to exactly 1 (as
//     paged_attention_prefill.cu).
//   O^T += V^T P^T: M = 16 dims, N = 8 q heads, K = the 16 keys. S's result registers are
//     exactly P^T's operand registers (row g = head g, columns = keys), so P never moves. V^T's
//     operand pairs two keys per register: lane (g, t) loads dims [g D/8, (g+1) D/8) of keys
//     (2t, 2t+1, 2t+8, 2t+9) and pairs their halves with __byte_perm; product mb takes dim
//     g D/8 + 2 mb as row g and g D/8 + 2 mb + 1 as row g + 8. The result lane (g, t) holds is
//     head (2t, 2t+1) at those two dims; its rescale factors come from lanes 8t and 8t + 4.
// Keys outside the split's [begin, end) are loaded as zeros (no stale cache value, NaN
// included, reaches a product) and scored -inf. The next tile's K and V are loaded before the
// current one is used (two register sets in turn), so each warp keeps a tile's 64 D bytes of K
// and V in flight (32 KB a block at D = 128).
//
// Launch as paged_attention_decode.cu: grid (num_splits, num_kv_heads, num_seqs), 128 threads;
// the four warps take the split's tiles in turn and combine through dec_write_block. Registers:
// at D = 128 a lane holds two 64-word tile sets, 32 accumulators and 16 q words.
#include "mma.cuh"
#include "paged_attention_decode.cuh"

#define TC_KEYS 16

// Loads N 32-bit words (N a multiple of 4) from p, 16-byte aligned, or zeros when !on.
template <int N>
__device__ __forceinline__ void tc_load_words(uint32_t* w, const bf16* __restrict__ p, bool on) {
    static_assert(N % 4 == 0, "whole 16-byte vectors");
#pragma unroll
    for (int i = 0; i < N / 4; i++) {
        uint4 v = make_uint4(0, 0, 0, 0);
        if (on) v = reinterpret_cast<const uint4*>(p)[i];
        w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
    }
}

// One tile's operands as loaded: k[n] is key row g + 8n (dims [t D/4, (t+1) D/4)), v[r] key
// 2t + (r & 1) + 8 (r >> 1) (dims [g D/8, (g+1) D/8)).
template <int D> struct TcTile {
    uint32_t k[2][D / 8];
    uint32_t v[4][D / 16];
};

// Where a lane's slices of a tile live: the shared part of fetch_tc's arguments.
struct TcSrc {
    const bf16* __restrict__ k_cache;
    const bf16* __restrict__ v_cache;
    const uint32_t* __restrict__ table;
    size_t kv_width;  // elements per cache slot
    size_t kcol;      // this lane's K slice within a slot
    size_t vcol;      // this lane's V slice within a slot
    uint32_t block_size, begin, end, g, t;
};

template <int D>
__device__ __forceinline__ void fetch_tc(TcTile<D>& x, const TcSrc& src, uint32_t j0) {
    // j0 is a multiple of 16 and block_size of 16: keys j0..j0+15 share a cache block.
    const size_t base = (size_t)src.table[j0 / src.block_size] * src.block_size + j0 % src.block_size;
#pragma unroll
    for (int n = 0; n < 2; n++) {
        const uint32_t key = src.g + 8 * n;
        const bool on = j0 + key >= src.begin && j0 + key < src.end;
        tc_load_words<D / 8>(x.k[n], src.k_cache + (base + key) * src.kv_width + src.kcol, on);
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const uint32_t key = 2 * src.t + (r & 1) + 8 * (r >> 1);
        const bool on = j0 + key >= src.begin && j0 + key < src.end;
        tc_load_words<D / 16>(x.v[r], src.v_cache + (base + key) * src.kv_width + src.vcol, on);
    }
}

// A lane's share of the warp's running state: m (log2 units) and l (this lane's part of the sum)
// for head g, and O^T's accumulators (heads 2t, 2t+1 at dims g D/8 + 2 mb + (0, 1)).
template <int D> struct TcState {
    float m, l;
    float acc[D / 16][4];
};

// Folds tile x (keys j0..j0+15) into the state.
template <int D>
__device__ __forceinline__ void consume_tc(TcState<D>& st, const TcTile<D>& x,
                                           const uint32_t (&qa)[D / 16][2], float scale_log2,
                                           const TcSrc& src, uint32_t j0) {
    float sc[2][4];
#pragma unroll
    for (int n = 0; n < 2; n++) {
#pragma unroll
        for (int i = 0; i < 4; i++) sc[n][i] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            const uint32_t a[4] = {qa[ks][0], 0u, qa[ks][1], 0u};
            const uint32_t b[2] = {x.k[n][2 * ks], x.k[n][2 * ks + 1]};
            mma_bf16_16816(sc[n], a, b);
        }
    }
    // Head g's scores at keys 2t, 2t+1 (sc[0]) and 2t+8, 2t+9 (sc[1]); rows g+8 are unused.
    float s[4] = {sc[0][0], sc[0][1], sc[1][0], sc[1][1]};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint32_t key = j0 + 2 * src.t + (i & 1) + 8 * (i >> 1);
        s[i] = (key >= src.begin && key < src.end) ? s[i] * scale_log2 : dec_neg_inf();
    }
    float mx = fmaxf(fmaxf(s[0], s[1]), fmaxf(s[2], s[3]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    mx = fmaxf(mx, st.m);  // finite: every tile holds a key of [begin, end)
    const float corr = exp2f(st.m - mx);  // the first tile: m = -inf, corr = 0
    const uint32_t p0 = pack_bf16x2(exp2f(s[0] - mx), exp2f(s[1] - mx));
    const uint32_t p1 = pack_bf16x2(exp2f(s[2] - mx), exp2f(s[3] - mx));
    st.l = st.l * corr + (bf16_lo(p0) + bf16_hi(p0)) + (bf16_lo(p1) + bf16_hi(p1));
    st.m = mx;
    // The rescale factors of heads 2t and 2t+1, whose O^T columns this lane holds.
    const float c0 = __shfl_sync(0xffffffffu, corr, 8 * src.t);
    const float c1 = __shfl_sync(0xffffffffu, corr, 8 * src.t + 4);
    const uint32_t b[2] = {p0, p1};
#pragma unroll
    for (int mb = 0; mb < D / 16; mb++) {
        st.acc[mb][0] *= c0;
        st.acc[mb][1] *= c1;
        st.acc[mb][2] *= c0;
        st.acc[mb][3] *= c1;
        const uint32_t a[4] = {__byte_perm(x.v[0][mb], x.v[1][mb], 0x5410),
                               __byte_perm(x.v[0][mb], x.v[1][mb], 0x7632),
                               __byte_perm(x.v[2][mb], x.v[3][mb], 0x5410),
                               __byte_perm(x.v[2][mb], x.v[3][mb], 0x7632)};
        mma_bf16_16816(st.acc[mb], a, b);
    }
}

template <int D> __device__ __forceinline__ void decode_tc_impl(DEC_ARGS(bf16)) {
    static_assert(D == 64 || D == 128, "head_dim 64 or 128");
    __shared__ float sm_m[DEC_WARPS][8];
    __shared__ float sm_l[DEC_WARPS][8];
    __shared__ float sm_acc[DEC_WARPS][8][D];

    const uint32_t split = blockIdx.x, kvh = blockIdx.y, s = blockIdx.z;
    const uint32_t lane = threadIdx.x % TANDEM_WARP, warp = threadIdx.x / TANDEM_WARP;
    const uint32_t g = lane / 4, t = lane % 4;
    const uint32_t group = num_heads / num_kv_heads;  // <= 8 (checked by the host)
    const uint32_t row = query_start_locs[s];
    const uint32_t ctx = context_lens[s];
    uint32_t begin, end;
    dec_split_range(ctx, sliding_window, num_splits, split, begin, end);

    const size_t kv_width = (size_t)num_kv_heads * D;
    const size_t row_width = (size_t)num_heads * D + 2 * kv_width;
    const TcSrc src{k_cache,
                    v_cache,
                    block_tables + (size_t)s * max_blocks_per_seq,
                    kv_width,
                    (size_t)kvh * D + t * (D / 4),
                    (size_t)kvh * D + g * (D / 8),
                    block_size,
                    begin,
                    end,
                    g,
                    t};

    // Warp w takes tiles w, w + 4, ... of the split (tile starts aligned to 16); an empty split
    // (begin == end) takes none. Each warp's first tile holds a key of [begin, end): warp 0's
    // holds begin, the others start past it and before end.
    const uint32_t stride = DEC_WARPS * TC_KEYS;
    const uint32_t j_first = (begin / TC_KEYS) * TC_KEYS + warp * TC_KEYS;
    const bool any = begin < end && j_first < end;
    // Of the cache, the kernel before this one (rope_write_kv) writes only the step's new key,
    // at position ctx - 1; the older keys were written by earlier steps and the metadata by
    // copies that completed before that kernel began. So a first tile short of the new key is
    // loaded before waiting on that kernel (kernels/common.cuh): under programmatic dependent
    // launch its loads are in flight while that kernel finishes. The tile holding the new key,
    // and q (that kernel's rotated output), are read after the wait.
    TcTile<D> x0, x1;
    const bool early = any && j_first + TC_KEYS < ctx;
    if (early) fetch_tc(x0, src, j_first);
    grid_dependency_sync();

    // Q's operand words: head g's dims [t D/4, (t+1) D/4), zero for rows past the group.
    uint32_t qa[D / 16][2];
    {
        uint32_t w[D / 8];
        const bf16* q = qkv + (size_t)row * row_width + (size_t)(kvh * group + g) * D + t * (D / 4);
        tc_load_words<D / 8>(w, q, g < group);
#pragma unroll
        for (int ks = 0; ks < D / 16; ks++) {
            qa[ks][0] = w[2 * ks];
            qa[ks][1] = w[2 * ks + 1];
        }
    }
    const float scale_log2 = scale * 1.4426950408889634f;

    TcState<D> st;
    st.m = dec_neg_inf();
    st.l = 0.0f;
#pragma unroll
    for (int mb = 0; mb < D / 16; mb++) {
#pragma unroll
        for (int i = 0; i < 4; i++) st.acc[mb][i] = 0.0f;
    }
    if (any) {
        if (!early) fetch_tc(x0, src, j_first);
        for (uint32_t j0 = j_first;; j0 += 2 * stride) {
            if (j0 + stride < end) fetch_tc(x1, src, j0 + stride);
            consume_tc(st, x0, qa, scale_log2, src, j0);
            if (j0 + stride >= end) break;
            if (j0 + 2 * stride < end) fetch_tc(x0, src, j0 + 2 * stride);
            consume_tc(st, x1, qa, scale_log2, src, j0 + stride);
            if (j0 + 2 * stride >= end) break;
        }
    }

    // Head g's sum over its four lanes; the states go to shared memory in natural-log units.
    st.l += __shfl_xor_sync(0xffffffffu, st.l, 1);
    st.l += __shfl_xor_sync(0xffffffffu, st.l, 2);
    if (t == 0) {
        sm_m[warp][g] = st.m * 0.6931471805599453f;  // -inf stays -inf
        sm_l[warp][g] = st.l;
    }
#pragma unroll
    for (int mb = 0; mb < D / 16; mb++) {
        const uint32_t d = g * (D / 8) + 2 * mb;
        sm_acc[warp][2 * t][d] = st.acc[mb][0];
        sm_acc[warp][2 * t + 1][d] = st.acc[mb][1];
        sm_acc[warp][2 * t][d + 1] = st.acc[mb][2];
        sm_acc[warp][2 * t + 1][d + 1] = st.acc[mb][3];
    }
    __syncthreads();
    const DecBlock b{s, kvh, split, row, group, num_heads, D, num_splits};
    dec_write_block<bf16, 8, D>(sm_m, sm_l, sm_acc, 1, b, out, part_o, part_ml);
}

// Entry points: paged_attention_decode_tc_bf16_d<D>.
#define DEC_TC_ENTRY(D)                                                                           \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS, 1)                                  \
        paged_attention_decode_tc_bf16_d##D(DEC_ARGS(bf16)) {                                     \
        decode_tc_impl<D>(DEC_PASS);                                                              \
    }

DEC_TC_ENTRY(64)
DEC_TC_ENTRY(128)
