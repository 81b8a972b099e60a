// paged_attention_decode_*: attention for steps in which every sequence has exactly one query
// row (pure decode), built to run at memory bandwidth. Prefill and mixed steps use
// paged_attention.cu.
//
// Why a separate kernel: at decode the work is reading the cache. The general kernel runs one
// block per (row, q head), so each K/V byte is read num_heads / num_kv_heads times and a long
// context is walked by 4 warps of one block. Here one block handles one (sequence, kv head,
// context split): every q head of the GQA group is computed from the same K/V load, and a long
// context is split over several blocks whose partial softmax states (max m, sum l, normalized
// output o) paged_attention_merge_* combines afterwards.
//
//   out[s, h, :] = softmax_j(q_h . k_j * scale) . v_j  over keys j of sequence s
//   (keys first..ctx-1: first = 0, or with a sliding window w, max(0, ctx - w))
//
// CPU reference: device/cpu/attention.rs (attention), for q_len = 1.
// Layout: as paged_attention.cu. qkv [rows, (num_heads + 2 num_kv_heads) * head_dim], row of
// sequence s = query_start_locs[s]; k_cache, v_cache [num_blocks, block_size, num_kv_heads,
// head_dim]; out [rows, num_heads * head_dim]. Partials (num_splits > 1): part_o
// [num_seqs * num_splits, num_heads, head_dim] f32 and part_ml [num_seqs * num_splits,
// num_heads, 2] f32 (m, l), entry (s * num_splits + split).
//
// Launch: grid (num_splits, num_kv_heads, num_seqs), block DEC_THREADS (4 warps).
// Template parameters: PER elements of head_dim per lane (4: head_dim <= 128, 8: <= 256;
// head_dim % PER == 0, so each lane's slice is one aligned vector load), HC q heads per warp
// (a power of two), SUB key rows a warp loads side by side (1; 2 for head_dim <= 64, where one
// row fills only 16 lanes of 4 elements: the two half-warps then take different keys, and a
// warp keeps twice the bytes in flight at the same registers; with one row per warp a
// head_dim-64 model's decode attention reached about half the share of copy bandwidth that
// head_dim 128 does). The group's heads are cut into nchunks = ceil(group / HC) <= 4 chunks; warp w
// takes chunk w % nchunks and every (4 / nchunks)-th tile of DEC_KEYS keys of the split, so the
// warps of one block read neighbouring keys and a chunk's re-read of a key hits L1.
//
// Per tile each group of RL = 32 / SUB lanes loads DEC_KEYS K and V rows (lane l of the group
// holds elements [PER l, PER l + PER)), forms HC * DEC_KEYS partial dot products per lane and
// reduces them all at once within the group with a "transposing" butterfly (N values over RL
// lanes in N - 1 + log2(RL / N) shuffles instead of N log2(RL)), after which lane l of the
// group holds the full score of pair idx = l >> (log2 RL - log2 N),
// idx = head * DEC_KEYS + key. The online softmax runs on those lanes; the probabilities and the
// per-head rescale factors go through shared memory to every lane for the P.V update.
#include "paged_attention_decode.cuh"

#define DEC_KEYS 4

// Reduces v[0..N) (N a power of two, N <= 2 O) over the groups of 2 O lanes, transposed: returns,
// on lane l, the sum over its group of v[(l % 2O) >> (log2 2O - log2 N)]. At each step the lanes
// whose bit O is set keep the upper half of their values and the others the lower half, each
// adding the partner's copy of the half it keeps. Lanes in different groups never exchange.
template <int N, int O> struct TransposeSum {
    static __device__ __forceinline__ float run(float* v, uint32_t lane) {
        const bool upper = lane & O;
#pragma unroll
        for (int i = 0; i < N / 2; i++) {
            const float send = upper ? v[i] : v[i + N / 2];
            const float keep = upper ? v[i + N / 2] : v[i];
            v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
        }
        return TransposeSum<N / 2, O / 2>::run(v, lane);
    }
};
// N = 1: a plain butterfly over the remaining offsets (none left when N started at 32: O = 0).
template <int O> struct TransposeSum<1, O> {
    static __device__ __forceinline__ float run(float* v, uint32_t) {
        float x = v[0];
#pragma unroll
        for (int o = O; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
        return x;
    }
};

// One lane's PER elements of a K or V row as loaded, not yet widened to f32 (so a prefetched
// row holds its load in flight without waiting for it): PER * sizeof(T) / 4 32-bit words.
template <typename T, int PER> struct RawRows {
    static constexpr int WORDS = PER * (int)sizeof(T) / 4;
    static_assert(WORDS == 2 || WORDS % 4 == 0, "RawRows: 8, 16 or 32 bytes per lane");
    uint32_t w[WORDS];

    __device__ __forceinline__ void load(const T* __restrict__ p) {
        if constexpr (WORDS == 2) {
            const uint2 v = *reinterpret_cast<const uint2*>(p);
            w[0] = v.x; w[1] = v.y;
        } else {
#pragma unroll
            for (int i = 0; i < WORDS / 4; i++) {
                const uint4 v = reinterpret_cast<const uint4*>(p)[i];
                w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
            }
        }
    }
    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < WORDS; i++) w[i] = 0;  // 0.0 in f32 and bf16 alike
    }
    __device__ __forceinline__ void widen(float* o) const {
        if constexpr (sizeof(T) == 4) {
#pragma unroll
            for (int i = 0; i < PER; i++) o[i] = __uint_as_float(w[i]);
        } else {
#pragma unroll
            for (int i = 0; i < WORDS; i++) {
                o[2 * i] = bf16_lo(w[i]);
                o[2 * i + 1] = bf16_hi(w[i]);
            }
        }
    }
};

// Loads the K and V rows of keys j0 .. j0 + DEC_KEYS - 1 (zeros past `end` and on lanes past
// head_dim); `col` is the element offset of this lane's slice within a cache row.
template <typename T, int PER>
__device__ __forceinline__ void fetch_tile(RawRows<T, PER> (&kn)[DEC_KEYS],
                                           RawRows<T, PER> (&vn)[DEC_KEYS],
                                           const T* __restrict__ k_cache,
                                           const T* __restrict__ v_cache,
                                           const uint32_t* __restrict__ table, uint32_t j0,
                                           uint32_t end, uint32_t block_size, size_t kv_width,
                                           size_t col, bool lane_on) {
#pragma unroll
    for (int u = 0; u < DEC_KEYS; u++) {
        const uint32_t j = j0 + u;
        if (lane_on && j < end) {
            const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
            const size_t off = slot * kv_width + col;
            kn[u].load(k_cache + off);
            vn[u].load(v_cache + off);
        } else {
            kn[u].zero();
            vn[u].zero();
        }
    }
}

__host__ __device__ constexpr int dec_log2(int n) { return n <= 1 ? 0 : 1 + dec_log2(n / 2); }

template <typename T, int PER, int HC, int SUB>
__device__ __forceinline__ void decode_impl(
    const T* __restrict__ qkv, const T* __restrict__ k_cache, const T* __restrict__ v_cache,
    const uint32_t* __restrict__ query_start_locs, const uint32_t* __restrict__ context_lens,
    const uint32_t* __restrict__ block_tables, uint32_t max_blocks_per_seq, uint32_t num_heads,
    uint32_t num_kv_heads, uint32_t head_dim, uint32_t block_size, float scale,
    uint32_t sliding_window, uint32_t num_splits, T* __restrict__ out,
    float* __restrict__ part_o, float* __restrict__ part_ml) {
    static_assert(SUB == 1 || SUB == 2, "SUB: one or two key rows per warp");
    constexpr int RL = TANDEM_WARP / SUB;  // lanes per key row
    constexpr int KEYS = DEC_KEYS * SUB;   // keys per tile per warp
    constexpr int N = HC * DEC_KEYS;       // scores per tile per lane group
    constexpr int SH = dec_log2(RL) - dec_log2(N);
    static_assert(N <= RL && (N & (N - 1)) == 0, "HC * DEC_KEYS: a power of two <= 32 / SUB");
    constexpr int WIDTH = PER * RL;  // most head_dim this instance handles

    __shared__ float sm_p[DEC_WARPS][SUB][N];
    __shared__ float sm_corr[DEC_WARPS][HC];
    __shared__ float sm_m[DEC_WARPS][HC];
    __shared__ float sm_l[DEC_WARPS][HC];
    __shared__ float sm_acc[DEC_WARPS][HC][WIDTH];

    const uint32_t split = blockIdx.x, kvh = blockIdx.y, s = blockIdx.z;
    const uint32_t lane = threadIdx.x % TANDEM_WARP, warp = threadIdx.x / TANDEM_WARP;
    const uint32_t sub = lane / RL, rl = lane % RL;  // key row within the tile, lane within it
    const uint32_t group = num_heads / num_kv_heads;
    const uint32_t nchunks = (group + HC - 1) / HC;  // <= DEC_WARPS (checked by the host)
    const uint32_t kgroups = DEC_WARPS / nchunks;
    const uint32_t chunk = warp % nchunks, kg = warp / nchunks;
    const bool active = kg < kgroups;  // nchunks = 3 leaves warp 3 idle

    const uint32_t row = query_start_locs[s];
    uint32_t begin, end;
    dec_split_range(context_lens[s], sliding_window, num_splits, split, begin, end);

    const size_t kv_width = (size_t)num_kv_heads * head_dim;
    const size_t row_width = (size_t)num_heads * head_dim + 2 * kv_width;
    const uint32_t head0 = kvh * group + chunk * HC;  // first q head of this warp's chunk
    const uint32_t d0 = rl * PER;
    const bool lane_on = d0 < head_dim;
    const uint32_t* table = block_tables + (size_t)s * max_blocks_per_seq;

    // q, pre-scaled, for the chunk's heads (heads past the group stay 0 and are not written).
    float q[HC][PER], acc[HC][PER];
#pragma unroll
    for (int h = 0; h < HC; h++) {
        const bool on = lane_on && chunk * HC + h < group;
        if (on) {
            load_vec<PER>(qkv + (size_t)row * row_width + (size_t)(head0 + h) * head_dim + d0,
                          q[h]);
        }
#pragma unroll
        for (int i = 0; i < PER; i++) {
            q[h][i] = on ? q[h][i] * scale : 0.0f;
            acc[h][i] = 0.0f;
        }
    }

    // This lane's (head, key) pair after the transposing reduction, and its softmax state: m is
    // the running max of head `my_h`, l the running sum of its probabilities at key `my_u` of
    // each tile (summed over the tile's keys at the end).
    const uint32_t idx = rl >> SH;
    const uint32_t my_h = idx / DEC_KEYS, my_u = idx % DEC_KEYS;
    float m = dec_neg_inf(), l = 0.0f;

    // bf16 prefetches: the tile's K/V rows are loaded (raw) one iteration ahead. Without it the
    // bf16 kernel spends most of its stalls waiting on these loads, far from DRAM bandwidth:
    // half the bytes of f32 per load leaves too little in flight. f32 (close to copy bandwidth
    // without it) keeps the registers.
    constexpr bool PREFETCH = sizeof(T) == 2;
    RawRows<T, PER> kn[DEC_KEYS], vn[DEC_KEYS];
    const uint32_t stride = kgroups * KEYS;
    const uint32_t j_first = begin + kg * KEYS;
    const uint32_t j_sub = sub * DEC_KEYS;  // this lane group's first key within a tile
    if (PREFETCH && active && j_first < end) {
        fetch_tile(kn, vn, k_cache, v_cache, table, j_first + j_sub, end, block_size, kv_width,
                   (size_t)kvh * head_dim + d0, lane_on);
    }
    for (uint32_t j0 = j_first; active && j0 < end; j0 += stride) {
        if (!PREFETCH) {
            fetch_tile(kn, vn, k_cache, v_cache, table, j0 + j_sub, end, block_size, kv_width,
                       (size_t)kvh * head_dim + d0, lane_on);
        }
        float kr[DEC_KEYS][PER], vr[DEC_KEYS][PER];
#pragma unroll
        for (int u = 0; u < DEC_KEYS; u++) {
            kn[u].widen(kr[u]);
            vn[u].widen(vr[u]);
        }
        if (PREFETCH && j0 + stride < end) {  // warp-uniform
            fetch_tile(kn, vn, k_cache, v_cache, table, j0 + stride + j_sub, end, block_size,
                       kv_width,
                       (size_t)kvh * head_dim + d0, lane_on);
        }
        float sc[N];
#pragma unroll
        for (int h = 0; h < HC; h++) {
#pragma unroll
            for (int u = 0; u < DEC_KEYS; u++) {
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < PER; i++) dot += q[h][i] * kr[u][i];
                sc[h * DEC_KEYS + u] = dot;
            }
        }
        float score = TransposeSum<N, RL / 2>::run(sc, lane);
        if (j0 + j_sub + my_u >= end) score = dec_neg_inf();
        // The tile's max for head my_h: its DEC_KEYS scores of a lane group sit on lanes
        // differing in the bits SH .. SH + log2(DEC_KEYS) - 1, the other group's across bit RL.
        float mx = score;
#pragma unroll
        for (int o = 1 << SH; o < (DEC_KEYS << SH); o *= 2) {
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        }
        if constexpr (SUB == 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, RL));
        mx = fmaxf(mx, m);  // key j0 < end is valid, so mx is finite
        const float p = expf(score - mx);  // a masked key: e^-inf = 0
        const float corr = expf(m - mx);   // the first tile: m = -inf, corr = 0
        l = l * corr + p;
        m = mx;
        __syncwarp();  // the previous tile's reads of sm_p / sm_corr are done
        sm_p[warp][sub][idx] = p;  // lanes sharing (sub, idx) write the same value
        sm_corr[warp][my_h] = corr;
        __syncwarp();
#pragma unroll
        for (int h = 0; h < HC; h++) {
            const float c = sm_corr[warp][h];
#pragma unroll
            for (int i = 0; i < PER; i++) acc[h][i] *= c;
#pragma unroll
            for (int u = 0; u < DEC_KEYS; u++) {
                const float pu = sm_p[warp][sub][h * DEC_KEYS + u];
#pragma unroll
                for (int i = 0; i < PER; i++) acc[h][i] += pu * vr[u][i];
            }
        }
    }

    // The warp's state per head: l summed over the tile's key columns (and lane groups, which
    // share m: their max was taken together), acc over the lane groups.
#pragma unroll
    for (int o = 1 << SH; o < (DEC_KEYS << SH); o *= 2) l += __shfl_xor_sync(0xffffffffu, l, o);
    if constexpr (SUB == 2) {
        l += __shfl_xor_sync(0xffffffffu, l, RL);
#pragma unroll
        for (int h = 0; h < HC; h++) {
#pragma unroll
            for (int i = 0; i < PER; i++) acc[h][i] += __shfl_xor_sync(0xffffffffu, acc[h][i], RL);
        }
    }
    sm_m[warp][my_h] = m;
    sm_l[warp][my_h] = l;
    if (sub == 0) {
#pragma unroll
        for (int h = 0; h < HC; h++) {
#pragma unroll
            for (int i = 0; i < PER; i++) sm_acc[warp][h][d0 + i] = acc[h][i];
        }
    }
    __syncthreads();

    const DecBlock b{s, kvh, split, row, group, num_heads, head_dim, num_splits};
    dec_write_block<T, HC, WIDTH>(sm_m, sm_l, sm_acc, nchunks, b, out, part_o, part_ml);
}

// paged_attention_merge_*: combines the splits of each (sequence, q head):
//   M = max_p m_p,  w_p = l_p e^(m_p - M),  out = sum_p w_p o_p / sum_p w_p.
// Empty splits (l = 0) weigh 0. Launch: grid (num_seqs, num_heads), block 128;
// num_splits <= DEC_MAX_SPLITS.
template <typename T>
__device__ __forceinline__ void merge_impl(const float* __restrict__ part_o,
                                           const float* __restrict__ part_ml,
                                           const uint32_t* __restrict__ query_start_locs,
                                           uint32_t num_splits, uint32_t num_heads,
                                           uint32_t head_dim, T* __restrict__ out) {
    __shared__ float sm_w[DEC_MAX_SPLITS];
    __shared__ float sm_inv;
    const uint32_t s = blockIdx.x, head = blockIdx.y;
    const size_t e0 = (size_t)s * num_splits * num_heads + head;  // entry of split 0
    if (threadIdx.x < TANDEM_WARP) {
        float big = dec_neg_inf();
        for (uint32_t p = threadIdx.x; p < num_splits; p += TANDEM_WARP) {
            big = fmaxf(big, part_ml[2 * (e0 + (size_t)p * num_heads)]);
        }
#pragma unroll
        for (int o = TANDEM_WARP / 2; o > 0; o /= 2) {
            big = fmaxf(big, __shfl_xor_sync(0xffffffffu, big, o));
        }
        float total = 0.0f;
        for (uint32_t p = threadIdx.x; p < num_splits; p += TANDEM_WARP) {
            const size_t e = e0 + (size_t)p * num_heads;
            const float l = part_ml[2 * e + 1];
            const float w = l > 0.0f ? l * expf(part_ml[2 * e] - big) : 0.0f;
            sm_w[p] = w;
            total += w;
        }
        total = warp_sum(total);
        if (threadIdx.x == 0) sm_inv = 1.0f / total;
    }
    __syncthreads();
    const float inv = sm_inv;
    const uint32_t row = query_start_locs[s];
    T* o = out + (size_t)row * num_heads * head_dim + (size_t)head * head_dim;
    for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float sum = 0.0f;
        for (uint32_t p = 0; p < num_splits; p++) {
            sum += sm_w[p] * part_o[(e0 + (size_t)p * num_heads) * head_dim + d];
        }
        o[d] = from_f32<T>(sum * inv);
    }
}

// Entry points: paged_attention_decode_<dtype>_d<PER * 32 / SUB>_h<HC>.
#define DEC_ENTRY(NAME, T, PER, HC, SUB)                                                          \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS, 1) NAME(DEC_ARGS(T)) {                 \
        grid_dependency_sync();                                                                   \
        decode_impl<T, PER, HC, SUB>(DEC_PASS);                                                   \
    }

DEC_ENTRY(paged_attention_decode_f32_d64_h1, float, 4, 1, 2)
DEC_ENTRY(paged_attention_decode_f32_d64_h2, float, 4, 2, 2)
DEC_ENTRY(paged_attention_decode_f32_d64_h4, float, 4, 4, 2)
DEC_ENTRY(paged_attention_decode_bf16_d64_h1, bf16, 4, 1, 2)
DEC_ENTRY(paged_attention_decode_bf16_d64_h2, bf16, 4, 2, 2)
DEC_ENTRY(paged_attention_decode_bf16_d64_h4, bf16, 4, 4, 2)

DEC_ENTRY(paged_attention_decode_f32_d128_h1, float, 4, 1, 1)
DEC_ENTRY(paged_attention_decode_f32_d128_h2, float, 4, 2, 1)
DEC_ENTRY(paged_attention_decode_f32_d128_h4, float, 4, 4, 1)
DEC_ENTRY(paged_attention_decode_f32_d128_h8, float, 4, 8, 1)
DEC_ENTRY(paged_attention_decode_f32_d256_h1, float, 8, 1, 1)
DEC_ENTRY(paged_attention_decode_f32_d256_h2, float, 8, 2, 1)
DEC_ENTRY(paged_attention_decode_f32_d256_h4, float, 8, 4, 1)
DEC_ENTRY(paged_attention_decode_bf16_d128_h1, bf16, 4, 1, 1)
DEC_ENTRY(paged_attention_decode_bf16_d128_h2, bf16, 4, 2, 1)
DEC_ENTRY(paged_attention_decode_bf16_d128_h4, bf16, 4, 4, 1)
DEC_ENTRY(paged_attention_decode_bf16_d128_h8, bf16, 4, 8, 1)
DEC_ENTRY(paged_attention_decode_bf16_d256_h1, bf16, 8, 1, 1)
DEC_ENTRY(paged_attention_decode_bf16_d256_h2, bf16, 8, 2, 1)
DEC_ENTRY(paged_attention_decode_bf16_d256_h4, bf16, 8, 4, 1)

extern "C" __global__ void paged_attention_merge_f32(const float* __restrict__ part_o,
                                                     const float* __restrict__ part_ml,
                                                     const uint32_t* __restrict__ query_start_locs,
                                                     uint32_t num_splits, uint32_t num_heads,
                                                     uint32_t head_dim, float* __restrict__ out) {
    grid_dependency_sync();
    merge_impl<float>(part_o, part_ml, query_start_locs, num_splits, num_heads, head_dim, out);
}

extern "C" __global__ void paged_attention_merge_bf16(const float* __restrict__ part_o,
                                                      const float* __restrict__ part_ml,
                                                      const uint32_t* __restrict__ query_start_locs,
                                                      uint32_t num_splits, uint32_t num_heads,
                                                      uint32_t head_dim, bf16* __restrict__ out) {
    grid_dependency_sync();
    merge_impl<bf16>(part_o, part_ml, query_start_locs, num_splits, num_heads, head_dim, out);
}
