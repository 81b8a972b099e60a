// gemm_skinny_bf16_t<NT>_k<KW>: out[rows, n] = x[rows, k] w[n, k]^T (+ bias[n]) in bf16 with
// f32 accumulation, for the few rows of a decode step (rows <= 8 NT, NT = 1, 2, 4 or 8; KW = 1,
// 2, 4 or 8 warps of a block split k).
//
// Why: a decode step's products are matrix-vector-like: a few rows against weights read once,
// so their floor is the weight bytes over the memory bandwidth. cuBLAS's tiles are shaped for
// many rows, which leaves the small products far below that floor: a 3072-feature product cut
// into 128-feature tiles fills 24 of 132 SMs. Here a block
// covers only 16 FW features, its KW warps split the reduction over k and add their partial
// sums through shared memory at the end, so even the o product (2048 features) launches
// 128 / FW blocks of 8 warps, each keeping 4 KB of weights in flight.
//
// Method: the product is taken transposed, out^T = w x^T, so the features are the mma's M (16
// a warp) and the rows its N (8 a tile, NT tiles): a decode step's row count is padded to 8,
// not 16. A warp takes the k range in chunks of 32; the chunks of the block's KW warps
// interleave. Within a chunk, lane (g, t) loads 16 contiguous bytes of weight rows g and g + 8
// and of x row (token) g + 8 nt, all at k offset 8t, and the two mma steps of the chunk take
// those words as they are: step s uses k offsets 8t + 4s + (0, 1) as the fragment's columns
// (2t, 2t+1) and 8t + 4s + (2, 3) as (2t+8, 2t+9) — the same permutation of k on both operands,
// which leaves every dot product unchanged (kernels/mma.cuh has the fragment layout). Weights
// are loaded with the streaming hint (read once: they should not evict x from the caches);
// four chunks' loads are issued before the first is used (the first four before the kernel waits
// on its predecessor: see the loop). Weight rows past n and x rows past
// `rows` are read as row 0 (valid memory) and their results are never written: an mma's output
// columns and rows are independent, so they cannot touch the rest.
//
// Split k (gridDim.y = S > 1): block (i, s) takes the s-th of S equal runs of k's chunks and
// writes its f32 sums to ws[s][row][feature]; the block that finishes a feature tile last (a
// counter per tile, counters[i], counted up with atomicAdd after a fence) adds the S partial
// sums and the bias, writes out and sets the counter back to 0 for the next launch (a replayed
// graph included). Why: with 64 rows, a block's x loads (64 rows x 64 bytes a chunk) outweigh
// its weight loads unless many feature warps share them, and many feature warps a block leave
// too few blocks to fill the GPU; splitting k brings the blocks back.
//
// CPU reference: device/cpu/gemm.rs (matmul_transposed, the bias added before one rounding).
// Layout: x [rows, k], w [n, k], out [rows, n] row-major; bias [n] or null.
// Requires: k a multiple of 32, x and w 16-byte aligned (device/cuda/gemm.rs checks, and uses
// cuBLAS otherwise).
// Launch: grid (ceil(n / (16 FW)), S), block 256 (8 warps: FW = 8 / KW feature groups of KW
// warps). With S > 1: ws holds S rows n floats and counters ceil(n / (16 FW)) zeros; both
// may be null when S = 1.
#include "common.cuh"
#include "dtype.cuh"
#include "mma.cuh"

#define SKINNY_THREADS 256
#define SKINNY_WARPS (SKINNY_THREADS / TANDEM_WARP)
#define SKINNY_CHUNK 32
#define SKINNY_AHEAD 4

// A 16-byte load of data read once: evict-first in both caches.
__device__ __forceinline__ uint4 load_streaming(const bf16* p) {
    return __ldcs(reinterpret_cast<const uint4*>(p));
}

template <int NT, int KW>
__device__ __forceinline__ void gemm_skinny_impl(const bf16* __restrict__ x,
                                                 const bf16* __restrict__ w,
                                                 const bf16* __restrict__ bias, uint32_t rows,
                                                 uint32_t n, uint32_t k, bf16* __restrict__ out,
                                                 float* __restrict__ ws,
                                                 uint32_t* __restrict__ counters) {
    constexpr int FW = SKINNY_WARPS / KW;
    constexpr int COLS = 8 * NT;
    // Each warp's 16 x COLS partial sums; the odd row pitch spreads a lane group's stores over
    // the banks.
    __shared__ float partial[SKINNY_WARPS][16][COLS + 1];

    const int lane = threadIdx.x % TANDEM_WARP, warp = threadIdx.x / TANDEM_WARP;
    const int g = lane / 4, t = lane % 4;
    const int fw = warp / KW, kw = warp % KW;
    const uint32_t f0 = blockIdx.x * (16 * FW) + 16 * fw;
    // This block's run of chunks: [c_begin, c_end).
    const uint32_t chunks = k / SKINNY_CHUNK, splits = gridDim.y;
    const uint32_t c_begin = (uint32_t)((uint64_t)chunks * blockIdx.y / splits);
    const uint32_t c_end = (uint32_t)((uint64_t)chunks * (blockIdx.y + 1) / splits);

    const uint32_t wr0 = f0 + g < n ? f0 + g : 0, wr1 = f0 + g + 8 < n ? f0 + g + 8 : 0;
    const bf16* w0 = w + (size_t)wr0 * k + 8 * t;
    const bf16* w1 = w + (size_t)wr1 * k + 8 * t;
    const bf16* xr[NT];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const uint32_t r = g + 8 * nt;
        xr[nt] = x + (size_t)(r < rows ? r : 0) * k + 8 * t;
    }

    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;

    // The weights are never written by a kernel, so the first chunks' loads are issued before
    // waiting on the kernel before this one (kernels/common.cuh): under programmatic dependent
    // launch they are in flight while that kernel finishes. Everything else (x, ws, counters)
    // is read after the wait. A batch is the SKINNY_AHEAD chunks from c0 on, KW apart.
    uint4 a0[SKINNY_AHEAD], a1[SKINNY_AHEAD];
    auto load_batch = [&](uint32_t c0) {
#pragma unroll
        for (int u = 0; u < SKINNY_AHEAD; u++) {
            const uint32_t c = c0 + u * KW;
            if (c < c_end) {
                a0[u] = load_streaming(w0 + (size_t)c * SKINNY_CHUNK);
                a1[u] = load_streaming(w1 + (size_t)c * SKINNY_CHUNK);
            }
        }
    };
    load_batch(c_begin + kw);
    grid_dependency_sync();
    for (uint32_t c0 = c_begin + kw; c0 < c_end; c0 += KW * SKINNY_AHEAD) {
#pragma unroll
        for (int u = 0; u < SKINNY_AHEAD; u++) {
            const uint32_t c = c0 + u * KW;
            if (c >= c_end) break;
            const uint32_t s0[4] = {a0[u].x, a1[u].x, a0[u].y, a1[u].y};
            const uint32_t s1[4] = {a0[u].z, a1[u].z, a0[u].w, a1[u].w};
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const uint4 b = __ldg(reinterpret_cast<const uint4*>(xr[nt] + (size_t)c * SKINNY_CHUNK));
                const uint32_t b0[2] = {b.x, b.y}, b1[2] = {b.z, b.w};
                mma_bf16_16816(acc[nt], s0, b0);
                mma_bf16_16816(acc[nt], s1, b1);
            }
        }
        load_batch(c0 + KW * SKINNY_AHEAD);  // the next batch, before the loop's test
    }

    // acc[nt] holds feature g at columns 8 nt + 2t, +1 (0, 1) and feature g + 8 (2, 3).
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int c = 8 * nt + 2 * t;
        partial[warp][g][c] = acc[nt][0];
        partial[warp][g][c + 1] = acc[nt][1];
        partial[warp][g + 8][c] = acc[nt][2];
        partial[warp][g + 8][c + 1] = acc[nt][3];
    }
    __syncthreads();
    // Features vary fastest across threads, so a row of out is written in contiguous runs.
    // Element i of the block's tile is feature tile_f0 + i % (16 FW), row i / (16 FW).
    constexpr int TILE_FEATURES = 16 * FW;
    const uint32_t tile_f0 = blockIdx.x * TILE_FEATURES;
    auto in_range = [&](int i) {
        return (uint32_t)(i / TILE_FEATURES) < rows && tile_f0 + i % TILE_FEATURES < n;
    };
    auto store = [&](int i, float s) {
        const uint32_t f = tile_f0 + i % TILE_FEATURES;
        if (bias != nullptr) s += to_f32(bias[f]);
        out[(size_t)(i / TILE_FEATURES) * n + f] = from_f32<bf16>(s);
    };
    auto ws_at = [&](uint32_t split, int i) -> float* {
        return &ws[((size_t)split * rows + i / TILE_FEATURES) * n + tile_f0 + i % TILE_FEATURES];
    };
    for (int i = threadIdx.x; i < TILE_FEATURES * COLS; i += SKINNY_THREADS) {
        if (!in_range(i)) continue;
        const int fl = i % TILE_FEATURES, col = i / TILE_FEATURES;
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < KW; j++) s += partial[(fl / 16) * KW + j][fl % 16][col];
        if (splits == 1) store(i, s); else store_for_other_blocks(ws_at(blockIdx.y, i), s);
    }
    if (splits == 1) return;
    // Publish this block's sums before counting it in; the tile's last block reads them all.
    __threadfence();
    __syncthreads();
    __shared__ bool last;
    if (threadIdx.x == 0) last = atomicAdd(&counters[blockIdx.x], 1u) == splits - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = threadIdx.x; i < TILE_FEATURES * COLS; i += SKINNY_THREADS) {
        if (!in_range(i)) continue;
        float s = 0.0f;
        // Through L2 only: other SMs wrote these.
        for (uint32_t p = 0; p < splits; p++) s += __ldcg(ws_at(p, i));
        store(i, s);
    }
    if (threadIdx.x == 0) counters[blockIdx.x] = 0;
}

// Entry points: gemm_skinny_bf16_t<NT>_k<KW>.
#define SKINNY_ENTRY(NT, KW)                                                                      \
    extern "C" __global__ void __launch_bounds__(SKINNY_THREADS)                                  \
        gemm_skinny_bf16_t##NT##_k##KW(const bf16* __restrict__ x, const bf16* __restrict__ w,    \
                                       const bf16* __restrict__ bias, uint32_t rows, uint32_t n,  \
                                       uint32_t k, bf16* __restrict__ out,                        \
                                       float* __restrict__ ws, uint32_t* __restrict__ counters) { \
        gemm_skinny_impl<NT, KW>(x, w, bias, rows, n, k, out, ws, counters);                      \
    }
#define SKINNY_ENTRIES(NT) \
    SKINNY_ENTRY(NT, 1) SKINNY_ENTRY(NT, 2) SKINNY_ENTRY(NT, 4) SKINNY_ENTRY(NT, 8)

SKINNY_ENTRIES(1)
SKINNY_ENTRIES(2)
SKINNY_ENTRIES(4)
SKINNY_ENTRIES(8)
