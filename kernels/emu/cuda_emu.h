// The CUDA kernel emulator's device-side shim (feature `kernel-emu`): lets the host C++ compiler
// build the kernels in kernels/*.cu unchanged, so every CI machine (no GPU) can run them on the
// CPU against the Rust reference ops. build.rs includes this header before each kernel file.
//
// What it models (runtime.cc): up to four blocks of a launch are resident at once, taken in a
// seeded order; each block's threads are fibers that switch at __syncthreads, __syncwarp, the
// warp collectives, atomics and __threadfence, and only one fiber of the launch runs at a time,
// the blocks interleaving at atomics and fences. So every thread of a block sees the block's
// `__shared__` arrays and the warp collectives exchange values the way the hardware does. Calls
// that need threads the hardware would not have waiting (a __syncthreads some threads never
// reach, a shuffle some lanes of its mask never reach) are reported as a deadlock instead of
// hanging. The stores and reductions a kernel marks as read by other blocks of the launch
// (`store_for_other_blocks`, `red_min` in kernels/common.cuh) stay in their block's buffer until
// it runs a __threadfence or the kernel ends, so a missing fence before a "last block" step
// shows.
//
// What it does not model: timing, bank conflicts, the ordering of plain stores (they reach
// memory at once) and, in the ordinary build, a plain read-modify-write torn by another thread
// (fibers switch only at the calls above, so `x += v` is never interrupted; a torn mutant's
// build, kernels/emu/mutants.rs, also switches before plain stores); f32 math is the host's
// (expf may differ from the device's by an ulp or two). It checks logic, not speed.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#define TANDEM_EMU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// One copy per kernel and OS thread, shared by the block's fibers (each resident block of a
// launch runs on its own OS thread, runtime.cc), so neither two resident blocks nor launches from
// different threads (parallel tests) share one.
#define __shared__ static thread_local

struct dim3 {
    unsigned x, y, z;
};
typedef dim3 uint3;

struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

namespace tandem_emu {
// The running fiber's coordinates (thread-local to the OS thread running the launch).
const dim3& thread_idx();
const dim3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
// Parks the calling fiber until every thread of the block that has not exited arrives.
void sync_threads();
// Publishes `bits` for the calling lane, parks until every live lane of `mask` has published,
// and returns the 32 lanes' values (lanes outside the mask or exited: 0).
const uint64_t* warp_exchange(unsigned mask, uint64_t bits);
// The calling lane within its warp (threads numbered x fastest, as on the device).
unsigned lane_id();
// Ends the launch with an error (the device's __trap).
[[noreturn]] void trap(const char* why);
// A point where another fiber, or another resident block, may run (the atomics call it first).
void switch_point();
// In a torn mutant's unit only (torn_hooks.cc calls them before each plain load and store): a
// store to where the thread just loaded from (off its own stack) is a switch point, taken at
// random, after which its block stays out a while.
void before_plain_load(const void* p);
void before_plain_store(const void* p);
// The device's __threadfence: this block's buffered writes become visible to the other blocks;
// then a switch point.
void fence();
// A store other blocks of the launch may read: buffered until the block's next fence (or the
// kernel's end). At most 16 bytes.
void buffered_store(void* p, const void* v, size_t n);
// A reduction whose result the kernel does not use (the device's `red`): `red(p, v)` runs at the
// block's next fence (or the kernel's end); then a switch point.
void buffered_red(void* p, uint64_t v, size_t n, void (*red)(void* p, uint64_t v));
// The device's griddepcontrol.wait + launch_dependents: blocks run one launch after another
// here, so it only records that the calling thread waited (a dependent launch checks it).
void grid_dependency_sync();

template <typename T> uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp collectives move at most 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T> T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}
// Lane `src` within the caller's segment of `width` lanes, or the caller's own value when the
// source falls outside the segment (the device's rule for the up/down/xor shuffles).
template <typename T> T shuffle(unsigned mask, T v, int src, bool clamp_to_own, int width) {
    const uint64_t* all = warp_exchange(mask, to_bits(v));
    const int lane = (int)lane_id();
    const int base = lane / width * width;
    if (clamp_to_own && (src < base || src >= base + width)) return v;
    return from_bits<T>(all[base + (src - base) % width]);
}
}  // namespace tandem_emu

#define threadIdx (::tandem_emu::thread_idx())
#define blockIdx (::tandem_emu::block_idx())
#define blockDim (::tandem_emu::block_dim())
#define gridDim (::tandem_emu::grid_dim())
#define warpSize 32

inline void __syncthreads() { ::tandem_emu::sync_threads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::tandem_emu::warp_exchange(mask, 0); }
inline void __trap() { ::tandem_emu::trap("__trap"); }

template <typename T> T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = (int)::tandem_emu::lane_id();
    return ::tandem_emu::shuffle(mask, v, lane / width * width + ((src % width) + width) % width,
                                 false, width);
}
template <typename T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return ::tandem_emu::shuffle(mask, v, (int)::tandem_emu::lane_id() ^ lane_mask, true, width);
}
template <typename T> T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ::tandem_emu::shuffle(mask, v, (int)::tandem_emu::lane_id() - (int)delta, true, width);
}
template <typename T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ::tandem_emu::shuffle(mask, v, (int)::tandem_emu::lane_id() + (int)delta, true, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    const uint64_t* all = ::tandem_emu::warp_exchange(mask, pred ? 1 : 0);
    unsigned out = 0;
    for (int l = 0; l < 32; ++l)
        if ((mask >> l & 1u) && all[l]) out |= 1u << l;
    return out;
}
// The live lanes of `mask` whose `v` equals the caller's.
inline unsigned __match_any_sync(unsigned mask, unsigned v) {
    const unsigned live = __ballot_sync(mask, 1);
    const uint64_t* all = ::tandem_emu::warp_exchange(mask, v);
    unsigned out = 0;
    for (int l = 0; l < 32; ++l)
        if ((live >> l & 1u) && all[l] == v) out |= 1u << l;
    return out;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == __ballot_sync(mask, 1); }

// Atomics: a switch point, then a read-modify-write (only one fiber runs at a time, so it is
// atomic), straight to memory. A torn mutant's unit (kernels/emu/mutants.rs) is built with its
// plain stores instrumented as switch points; the atomics stay whole there (TANDEM_EMU_WHOLE).
#if defined(TANDEM_EMU_TORN)
#define TANDEM_EMU_WHOLE __attribute__((no_sanitize_thread, noinline))
#else
#define TANDEM_EMU_WHOLE
#endif
template <typename T> TANDEM_EMU_WHOLE T atomicAdd(T* p, T v) { ::tandem_emu::switch_point(); T old = *p; *p = old + v; return old; }
template <typename T> TANDEM_EMU_WHOLE T atomicMax(T* p, T v) { ::tandem_emu::switch_point(); T old = *p; *p = old < v ? v : old; return old; }
template <typename T> TANDEM_EMU_WHOLE T atomicMin(T* p, T v) { ::tandem_emu::switch_point(); T old = *p; *p = v < old ? v : old; return old; }
template <typename T> TANDEM_EMU_WHOLE T atomicExch(T* p, T v) { ::tandem_emu::switch_point(); T old = *p; *p = v; return old; }
template <typename T> TANDEM_EMU_WHOLE T atomicCAS(T* p, T cmp, T v) { ::tandem_emu::switch_point(); T old = *p; if (old == cmp) *p = v; return old; }

// Intrinsics. The _rn arithmetic is plain IEEE f32 (build.rs compiles with -ffp-contract=off, so
// nothing is fused that the device would round twice).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; memcpy(&x, &f, 4); return x; }
inline unsigned __float_as_uint(float f) { unsigned x; memcpy(&x, &f, 4); return x; }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= (x >> i & 1u) << (31 - i);
    return r;
}
template <typename T> T __ldg(const T* p) { return *p; }
// The streaming load (evict-first): a cache hint only, so a plain load here.
template <typename T> T __ldcs(const T* p) { return *p; }
// The L2-only load: a cache hint only, so a plain load here.
template <typename T> T __ldcg(const T* p) { return *p; }
inline void __threadfence() { ::tandem_emu::fence(); }
// The device's integer min/max overloads (mixed signedness compares as the common type, as there).
template <typename A, typename B> inline typename std::common_type<A, B>::type min(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)a : (C)b;
}
template <typename A, typename B> inline typename std::common_type<A, B>::type max(A a, B b) {
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)b : (C)a;
}

// bf16 storage: the top 16 bits of an f32, rounded to nearest even (NaN stays NaN).
struct __nv_bfloat16 {
    uint16_t bits;
};
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return {b}; }
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((uint32_t)h.bits << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {(uint16_t)((u >> 16) | 0x40)};
    return {(uint16_t)((u + 0x7fffu + (u >> 16 & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }

// __byte_perm(x, y, s): byte i of the result is byte (s >> 4i) & 7 of the 8-byte value y:x
// (the sign-replicating modes, selector bit 3, are not modelled: the kernels do not use them).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = x | (uint64_t)y << 32;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)(v >> 8 * (s >> 4 * i & 7u) & 0xffu) << 8 * i;
    return r;
}

// The PTX mma.sync m16n8k16 bf16 product of kernels/mma.cuh, with the register layout given
// there: the warp's fragments are gathered into whole A and B tiles and each lane computes its
// four outputs (products and sums in f32, k in order). A warp collective: every lane calls it.
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    uint32_t frag[3][32][2];
    const uint64_t words[3] = {a[0] | (uint64_t)a[1] << 32, a[2] | (uint64_t)a[3] << 32,
                               b[0] | (uint64_t)b[1] << 32};
    for (int w = 0; w < 3; ++w) {
        const uint64_t* all = ::tandem_emu::warp_exchange(0xffffffffu, words[w]);
        for (int l = 0; l < 32; ++l) {
            frag[w][l][0] = (uint32_t)all[l];
            frag[w][l][1] = (uint32_t)(all[l] >> 32);
        }
    }
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l / 4, t = l % 4;
        const uint32_t* ra = frag[0][l];  // a[0], a[1]
        const uint32_t* rc = frag[1][l];  // a[2], a[3]
        const uint32_t* rb = frag[2][l];  // b[0], b[1]
        for (int e = 0; e < 2; ++e) {
            const int sh = 16 * e;
            A[g][2 * t + e] = __uint_as_float((ra[0] >> sh & 0xffffu) << 16);
            A[g + 8][2 * t + e] = __uint_as_float((ra[1] >> sh & 0xffffu) << 16);
            A[g][2 * t + 8 + e] = __uint_as_float((rc[0] >> sh & 0xffffu) << 16);
            A[g + 8][2 * t + 8 + e] = __uint_as_float((rc[1] >> sh & 0xffffu) << 16);
            B[2 * t + e][g] = __uint_as_float((rb[0] >> sh & 0xffffu) << 16);
            B[2 * t + 8 + e][g] = __uint_as_float((rb[1] >> sh & 0xffffu) << 16);
        }
    }
    const int lane = (int)::tandem_emu::lane_id(), g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
        const int r = g + 8 * (i / 2), c = 2 * t + i % 2;
        float s = d[i];
        for (int k = 0; k < 16; ++k) s += A[r][k] * B[k][c];
        d[i] = s;
    }
}

// Warp matrix multiply-accumulate (mma.h's nvcuda::wmma), for the tensor-core kernels. The
// hardware spreads a fragment over the warp's lanes in an unspecified layout; here every lane
// holds the whole tile, row-major, in x[]. A kernel that keeps to the API (loads, stores, fills,
// mma, and element-wise operations that treat every element of x[] alike, such as scaling, or
// that pair x[i] of two fragments of the same shape loaded alike) computes the same on both.
// Every call is a warp collective (it syncs the warp, so a divergent call deadlocks and is
// reported) and checks the alignment the hardware requires (256-bit pointers; ldm a multiple of
// 16 bytes).
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static constexpr int num_elements = rows * cols;
    T x[num_elements];
};

namespace detail {
inline void check(const void* p, unsigned ldm, size_t elem) {
    if ((uintptr_t)p % 32 != 0) ::tandem_emu::trap("wmma: pointer not 256-bit aligned");
    if ((ldm * elem) % 16 != 0) ::tandem_emu::trap("wmma: ldm not a multiple of 16 bytes");
}
inline float widen(float v) { return v; }
inline float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> struct Narrow {
    static T from(float v) { return (T)v; }
};
template <> struct Narrow<__nv_bfloat16> {
    static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
    typedef fragment<Use, M, N, K, T, Layout> F;
    __syncwarp();
    detail::check(p, ldm, sizeof(T));
    const bool row = std::is_same<Layout, row_major>::value;
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = row ? p[r * ldm + c] : p[c * ldm + r];
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                      layout_t layout) {
    __syncwarp();
    detail::check(p, ldm, sizeof(float));
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            f.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
    __syncwarp();
    detail::check(p, ldm, sizeof(float));
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c)
            (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename V>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const V& v) {
    __syncwarp();
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = detail::Narrow<T>::from((float)v);
}

// d = a b + c, products and sums in f32.
template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
    __syncwarp();
    float out[M * N];
    for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
            float s = c.x[m * N + n];
            for (int k = 0; k < K; ++k) s += detail::widen(a.x[m * K + k]) * detail::widen(b.x[k * N + n]);
            out[m * N + n] = s;
        }
    for (int i = 0; i < M * N; ++i) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda
