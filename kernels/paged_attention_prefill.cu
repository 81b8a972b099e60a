// paged_attention_prefill_bf16_d<D>: causal attention of a step's query rows over the paged
// cache on the tensor cores (nvcuda::wmma, m16n16k16, bf16 inputs, f32 accumulation) — the
// prefill, chunked-prefill and mixed steps of bf16 storage whose head_dim D is a multiple of 16
// up to 128 (one instance per such D). Semantics exactly as paged_attention.cu (which remains
// the kernel for f32, other head_dims, and the reference this one is benchmarked against):
//
// For sequence s with q new rows and context length c, query row i of s sits at key index
// c - q + i and attends to keys first..=c - q + i, where first = 0, or with a sliding window w,
// max(0, c - q + i + 1 - w). Key j lives at slot block_tables[s][j / block_size] * block_size +
// j % block_size. Query head h reads kv head h / (num_heads / num_kv_heads).
//
//   out[row, h, :] = softmax_j(q . k_j * scale) . v_j
//
// CPU reference: device/cpu/attention.rs (attention).
// Layout: as paged_attention.cu. qkv [rows, (num_heads + 2 num_kv_heads) * D] row-major (q
// heads first); k_cache, v_cache [num_blocks, block_size, num_kv_heads, D]; query_start_locs
// [S + 1], context_lens [S], block_tables [S, max_blocks_per_seq] u32; out [rows, num_heads * D].
// Arguments: paged_attention.cu's list (num_seqs and head_dim are implied here by the tiles and
// the instance), then row_tiles [num_tiles, 2] u32: (sequence, tile within the sequence) for
// every tile of PF_ROWS rows the step has (StepInput::row_tiles, uploaded with the metadata).
//
// Launch: grid (num_tiles, num_heads), block PF_THREADS (4 warps), at most 168 registers a
// thread so that 3 blocks fit an SM (PF_MIN_BLOCKS). A block takes PF_ROWS = 64 consecutive
// query rows of one sequence (tile t: rows 64t.., fewer at the sequence's end) and one q head.
// Why a tile list rather than a (max_q / 64, heads, sequences) grid: a mixed step of 250 decode
// rows beside one long prompt would launch a block per 64 rows of the prompt's length for every
// sequence, nearly all of them empty (~10^5-10^6 blocks per layer, milliseconds of launch).
//
// Method (FlashAttention-2's loop, on wmma). Warp w owns rows 16w..16w+15 of the block. The
// block's Q is staged through shared memory (rows past q zero) into D/16 matrix_a fragments each
// warp keeps in registers. The block then walks its key range (the first row's first key to the
// last row's own key) in tiles of KEYS keys (64 for D <= 64, 32 above: what 48 KB of static
// shared memory holds). Per tile:
//   1. all 128 threads gather the tile's K and V rows from the paged cache into shared memory
//      (16-byte loads, all issued before any store; keys past the block's last key zero, so no
//      stale value, NaN included, can reach the products);
//   2. each warp whose rows see any key of the tile (others skip to the barrier: the diagonal
//      and window edges cost only the warps they touch): S = Q K^T on the tensor cores (K in
//      shared memory as [key][dim] row-major is K^T col-major, matrix_b), stored to the warp's
//      f32 tile; two lanes per row then apply scale, the causal and window mask and the online
//      softmax in f32 (running max m and sum l per row, exp2 with log2(e) folded into the scale;
//      a row with no key yet keeps m = -inf and gets p = 0, alpha = 1: never -inf - -inf), write
//      P rounded to bf16 and the row's rescale factor alpha to shared memory;
//   3. O (16 x D per warp, D/16 accumulator fragments that never leave registers) is rescaled
//      by alpha and O += P V runs on the tensor cores (P matrix_a from shared memory, V
//      row-major matrix_b).
// At the end each warp stores O a fragment at a time to its f32 tile and two lanes per row
// write out[row] = O / l as bf16 (16-byte stores), for rows < q only. l sums the bf16-rounded P
// that the products used, so the weights applied to V sum to exactly 1.
//
// Why: the general kernel runs one block per (row, head) on scalar FMAs, re-reading every key
// for every query row; here 64 rows share each K/V tile load and the
// products run on the tensor cores, so prefill attention becomes a compute-bound loop.
//
// The fragment layout is opaque (it differs by architecture and is not the emulator's), so
// per-row work never reads a fragment's elements by position: rows are scaled through a "row
// index" accumulator fragment loaded from a 16 x 16 matrix whose element (r, c) is r, so that
// o.x[i] *= alpha[(int)rowidx.x[i]] pairs elements of identically shaped fragments, as the API
// allows; everything else per row goes through shared memory.
//
// Shared memory (static): K and V tiles [KEYS][D + 8] bf16 each (the 16-byte row pad spreads
// the rows over the banks and keeps every fragment pointer 32-byte aligned), per warp an f32
// score tile and a bf16 P tile [16][KEYS + 8], the row-index matrix, alpha: 46.3 KB at D = 64
// (KEYS 64), 33.2 KB at D = 128 (KEYS 32).
#include "common.cuh"
#include "dtype.cuh"
#ifndef TANDEM_EMU  // the emulator (kernels/emu/cuda_emu.h) has its own wmma
#include <mma.h>
#endif
using namespace nvcuda;

#define PF_THREADS 128
#define PF_WARPS (PF_THREADS / TANDEM_WARP)
#define PF_ROWS (16 * PF_WARPS)
// Blocks per SM the register budget is held to (168 registers a thread): without the floor ptxas
// spends 200+ registers at D = 128, leaving 2 blocks (8 warps) per SM to hide the tile loads.
#define PF_MIN_BLOCKS 3

__device__ __forceinline__ float pf_neg_inf() { return __int_as_float(0xff800000); }

// The first key a query row at key index `pos` attends to.
__device__ __forceinline__ uint32_t pf_first_key(uint32_t pos, uint32_t window) {
    return (window > 0 && pos + 1 > window) ? pos + 1 - window : 0;
}

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> PfAcc;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> PfA;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> PfBRow;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> PfBCol;

template <int D> struct PrefillSmem {
    static constexpr int KEYS = D <= 64 ? 64 : 32;  // keys per tile
    static constexpr int LDK = D + 8;               // elements per K/V (and staged Q) row
    static constexpr int LDS = KEYS + 8;            // elements per score / P row
    alignas(32) bf16 kv[2 * KEYS * LDK];            // K tile, then V tile; Q staged here first
    alignas(32) float s[PF_WARPS][16 * LDS];
    alignas(32) bf16 p[PF_WARPS][16 * LDS];
    alignas(32) float rowidx[16 * 16];
    float alpha[PF_WARPS][16];
};

template <int D>
__device__ __forceinline__ void prefill_impl(
    const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache,
    const bf16* __restrict__ v_cache, const uint32_t* __restrict__ query_start_locs,
    const uint32_t* __restrict__ context_lens, const uint32_t* __restrict__ block_tables,
    uint32_t max_blocks_per_seq, uint32_t num_heads, uint32_t num_kv_heads, uint32_t block_size,
    float scale, uint32_t sliding_window, bf16* __restrict__ out,
    const uint32_t* __restrict__ row_tiles) {
    typedef PrefillSmem<D> Sm;
    constexpr int KEYS = Sm::KEYS, LDK = Sm::LDK, LDS = Sm::LDS;
    constexpr int DF = D / 16;     // fragments across head_dim
    constexpr int NF = KEYS / 16;  // fragments across a key tile
    constexpr int CPR = D / 8;     // 16-byte chunks per row
    constexpr int LOADS = (KEYS * CPR + PF_THREADS - 1) / PF_THREADS;  // K (and V) chunks/thread
    static_assert(D % 16 == 0 && D <= 128, "head_dim: a multiple of 16 up to 128");
    static_assert(PF_ROWS <= 2 * KEYS, "the staged Q fits in the K/V tiles");
    static_assert(sizeof(Sm) <= 48 * 1024, "static shared memory above 48 KB");
    __shared__ Sm sm;

    const uint32_t s = row_tiles[2 * blockIdx.x], head = blockIdx.y;
    const uint32_t tid = threadIdx.x, lane = tid % TANDEM_WARP, warp = tid / TANDEM_WARP;
    const uint32_t q_start = query_start_locs[s];
    const uint32_t q_len = query_start_locs[s + 1] - q_start;
    const uint32_t i0 = row_tiles[2 * blockIdx.x + 1] * PF_ROWS;  // first row within the sequence
    if (i0 >= q_len) return;  // (a well-formed tile list has none) the whole block, no barrier yet
    const uint32_t rows = min(q_len - i0, (uint32_t)PF_ROWS);
    const uint32_t pos0 = context_lens[s] - q_len + i0;  // key index of the block's first row
    const uint32_t key_lo = pf_first_key(pos0, sliding_window);
    const uint32_t key_hi = pos0 + rows - 1;

    const uint32_t kv_head = head / (num_heads / num_kv_heads);
    const size_t row_width = (size_t)(num_heads + 2 * num_kv_heads) * D;
    const size_t kv_width = (size_t)num_kv_heads * D;
    const uint32_t* table = block_tables + (size_t)s * max_blocks_per_seq;

    // Q rows (zeros past q) into the K/V tile space, and the row-index matrix.
    const bf16* q = qkv + (size_t)(q_start + i0) * row_width + (size_t)head * D;
    for (uint32_t idx = tid; idx < PF_ROWS * CPR; idx += PF_THREADS) {
        const uint32_t r = idx / CPR, c = idx % CPR;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < rows) v = *reinterpret_cast<const uint4*>(q + r * row_width + c * 8);
        *reinterpret_cast<uint4*>(&sm.kv[r * LDK + c * 8]) = v;
    }
    for (uint32_t idx = tid; idx < 16 * 16; idx += PF_THREADS) sm.rowidx[idx] = (float)(idx / 16);
    __syncthreads();
    PfA qf[DF];
#pragma unroll
    for (int f = 0; f < DF; f++) wmma::load_matrix_sync(qf[f], &sm.kv[warp * 16 * LDK + f * 16], LDK);
    __syncthreads();  // the K/V tiles overwrite the staged Q

    // The warp's rows, and this lane's: lanes 2r and 2r + 1 share row r of the warp's 16, each
    // taking every other group of 4 columns of a score tile.
    const uint32_t wrow0 = warp * 16;
    const uint32_t wrows = rows > wrow0 ? min(rows - wrow0, 16u) : 0;
    const uint32_t w_lo = pf_first_key(pos0 + wrow0, sliding_window);  // warp's first key
    const uint32_t w_hi = pos0 + wrow0 + wrows - 1;                     // warp's last key
    const uint32_t r = lane >> 1, half = lane & 1;
    const bool row_on = r < wrows;
    const uint32_t my_hi = pos0 + wrow0 + r;  // the row's own key: the last it sees
    const uint32_t my_lo = pf_first_key(my_hi, sliding_window);
    const float scale_log2 = scale * 1.4426950408889634f;  // exp(x s) = exp2(x s log2 e)
    const bool bs_pow2 = (block_size & (block_size - 1)) == 0;
    const uint32_t bs_shift = __ffs((int)block_size) - 1;

    PfAcc o[DF];
#pragma unroll
    for (int f = 0; f < DF; f++) wmma::fill_fragment(o[f], 0.0f);
    float m = pf_neg_inf(), l = 0.0f;
    float* s_tile = sm.s[warp];
    bf16* p_tile = sm.p[warp];
    const bf16* k_tile = sm.kv;
    const bf16* v_tile = sm.kv + KEYS * LDK;

    for (uint32_t k0 = key_lo; k0 <= key_hi; k0 += KEYS) {
        // 1. The tile's K and V rows: every load in flight before the first store.
        uint4 kr[LOADS], vr[LOADS];
#pragma unroll
        for (int it = 0; it < LOADS; it++) {
            const uint32_t idx = tid + it * PF_THREADS;
            const uint32_t u = idx / CPR, c = idx % CPR, j = k0 + u;
            kr[it] = vr[it] = make_uint4(0, 0, 0, 0);
            if (u < KEYS && j <= key_hi) {
                const uint32_t blk = bs_pow2 ? j >> bs_shift : j / block_size;
                const size_t slot = (size_t)table[blk] * block_size + (j - blk * block_size);
                const size_t off = slot * kv_width + (size_t)kv_head * D + c * 8;
                kr[it] = *reinterpret_cast<const uint4*>(k_cache + off);
                vr[it] = *reinterpret_cast<const uint4*>(v_cache + off);
            }
        }
#pragma unroll
        for (int it = 0; it < LOADS; it++) {
            const uint32_t idx = tid + it * PF_THREADS;
            const uint32_t u = idx / CPR, c = idx % CPR;
            if (u < KEYS) {
                *reinterpret_cast<uint4*>(&sm.kv[u * LDK + c * 8]) = kr[it];
                *reinterpret_cast<uint4*>(&sm.kv[(KEYS + u) * LDK + c * 8]) = vr[it];
            }
        }
        __syncthreads();

        // Warp-uniform: whether any of the warp's rows sees a key of this tile.
        if (wrows > 0 && k0 <= w_hi && k0 + (KEYS - 1) >= w_lo) {
            // 2. S = Q K^T, to the warp's score tile.
#pragma unroll
            for (int n = 0; n < NF; n++) {
                PfAcc sf;
                wmma::fill_fragment(sf, 0.0f);
#pragma unroll
                for (int f = 0; f < DF; f++) {
                    PfBCol kb;
                    wmma::load_matrix_sync(kb, k_tile + n * 16 * LDK + f * 16, LDK);
                    wmma::mma_sync(sf, qf[f], kb, sf);
                }
                wmma::store_matrix_sync(s_tile + n * 16, sf, LDS, wmma::mem_row_major);
            }
            __syncwarp();

            // Online softmax of row r over this lane's columns 8t + 4 half + e.
            float x[KEYS / 8][4];
            float mx = pf_neg_inf();
#pragma unroll
            for (int t = 0; t < KEYS / 8; t++) {
                const uint32_t c = 8 * t + 4 * half;
                const float4 v = *reinterpret_cast<const float4*>(s_tile + r * LDS + c);
                const float sv[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const uint32_t j = k0 + c + e;
                    const bool seen = row_on && j >= my_lo && j <= my_hi;
                    x[t][e] = seen ? sv[e] * scale_log2 : pf_neg_inf();
                    mx = fmaxf(mx, x[t][e]);
                }
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            const float m_new = fmaxf(m, mx);
            float alpha = 1.0f, sum = 0.0f;
            const bool any = m_new != pf_neg_inf();  // else: no key yet, O and l stay 0
#pragma unroll
            for (int t = 0; t < KEYS / 8; t++) {
                uint32_t w0 = 0, w1 = 0;
                if (any) {
                    w0 = pack_bf16x2(exp2f(x[t][0] - m_new), exp2f(x[t][1] - m_new));
                    w1 = pack_bf16x2(exp2f(x[t][2] - m_new), exp2f(x[t][3] - m_new));
                    sum += (bf16_lo(w0) + bf16_hi(w0)) + (bf16_lo(w1) + bf16_hi(w1));
                }
                *reinterpret_cast<uint2*>(p_tile + r * LDS + 8 * t + 4 * half) = make_uint2(w0, w1);
            }
            if (any) alpha = exp2f(m - m_new);  // m = -inf before the row's first key: 0
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            l = l * alpha + sum;
            m = m_new;
            if (half == 0) sm.alpha[warp][r] = alpha;
            __syncwarp();

            // 3. O = O alpha + P V (the row-index fragment is reloaded per tile rather than
            // held: its registers would be live through the K/V loads).
            PfAcc rowidx;
            wmma::load_matrix_sync(rowidx, sm.rowidx, 16, wmma::mem_row_major);
            float a[PfAcc::num_elements];
#pragma unroll
            for (int i = 0; i < PfAcc::num_elements; i++) a[i] = sm.alpha[warp][(int)rowidx.x[i]];
#pragma unroll
            for (int f = 0; f < DF; f++) {
#pragma unroll
                for (int i = 0; i < PfAcc::num_elements; i++) o[f].x[i] *= a[i];
            }
            PfA pf[NF];
#pragma unroll
            for (int n = 0; n < NF; n++) wmma::load_matrix_sync(pf[n], p_tile + n * 16, LDS);
#pragma unroll
            for (int f = 0; f < DF; f++) {
#pragma unroll
                for (int n = 0; n < NF; n++) {
                    PfBRow vb;
                    wmma::load_matrix_sync(vb, v_tile + n * 16 * LDK + f * 16, LDK);
                    wmma::mma_sync(o[f], pf[n], vb, o[f]);
                }
            }
        }
        __syncthreads();  // the next tile overwrites K and V
    }

    // out = O / l, a fragment (16 columns) at a time through the warp's score tile.
    if (wrows > 0) {
        const float inv_l = l > 0.0f ? 1.0f / l : 0.0f;  // every row < q has seen its own key
        bf16* o_row = out + (size_t)(q_start + i0 + wrow0 + r) * num_heads * D + (size_t)head * D;
#pragma unroll
        for (int f = 0; f < DF; f++) {
            wmma::store_matrix_sync(s_tile, o[f], LDS, wmma::mem_row_major);
            __syncwarp();
            if (row_on) {
                const float4 a = *reinterpret_cast<const float4*>(s_tile + r * LDS + 8 * half);
                const float4 b = *reinterpret_cast<const float4*>(s_tile + r * LDS + 8 * half + 4);
                *reinterpret_cast<uint4*>(o_row + f * 16 + 8 * half) = make_uint4(
                    pack_bf16x2(a.x * inv_l, a.y * inv_l), pack_bf16x2(a.z * inv_l, a.w * inv_l),
                    pack_bf16x2(b.x * inv_l, b.y * inv_l), pack_bf16x2(b.z * inv_l, b.w * inv_l));
            }
            __syncwarp();
        }
    }
}

#define PAGED_ATTENTION_PREFILL_ENTRY(D)                                                           \
    extern "C" __global__ void __launch_bounds__(PF_THREADS, PF_MIN_BLOCKS)                        \
    paged_attention_prefill_bf16_d##D(                                                             \
        const bf16* __restrict__ qkv, const bf16* __restrict__ k_cache,                            \
        const bf16* __restrict__ v_cache, const uint32_t* __restrict__ query_start_locs,           \
        const uint32_t* __restrict__ context_lens, const uint32_t* __restrict__ block_tables,      \
        uint32_t num_seqs, uint32_t max_blocks_per_seq, uint32_t num_heads,                        \
        uint32_t num_kv_heads, uint32_t head_dim, uint32_t block_size, float scale,                \
        uint32_t sliding_window, bf16* __restrict__ out, const uint32_t* __restrict__ row_tiles) { \
        grid_dependency_sync();                                                                    \
        (void)num_seqs;                                                                            \
        (void)head_dim;                                                                            \
        prefill_impl<D>(qkv, k_cache, v_cache, query_start_locs, context_lens, block_tables,       \
                        max_blocks_per_seq, num_heads, num_kv_heads, block_size, scale,            \
                        sliding_window, out, row_tiles);                                           \
    }
PAGED_ATTENTION_PREFILL_ENTRY(16)
PAGED_ATTENTION_PREFILL_ENTRY(32)
PAGED_ATTENTION_PREFILL_ENTRY(48)
PAGED_ATTENTION_PREFILL_ENTRY(64)
PAGED_ATTENTION_PREFILL_ENTRY(80)
PAGED_ATTENTION_PREFILL_ENTRY(96)
PAGED_ATTENTION_PREFILL_ENTRY(112)
PAGED_ATTENTION_PREFILL_ENTRY(128)
