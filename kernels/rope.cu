// rope_<dtype>: rotary position embedding in place on the q and k heads of the fused qkv rows, HF
// "rotate half" pairing: for i < half = head_dim / 2, (x[i], x[i + half]) turns by the angle of
// the row's position:  x[i] <- x[i]*cos - x[i+half]*sin,  x[i+half] <- x[i+half]*cos + x[i]*sin.
// v heads are untouched. Any scaling (default, llama3, ...) is already baked into the table.
// f32 arithmetic, one rounding on store.
//
// CPU reference: device/cpu/ops.rs (rope).
// Layout: qkv [rows, row_width] row-major, each row [q heads | k heads | v heads];
// cos_sin [max_positions, head_dim] row-major, each row [cos(pos*f_0..f_half) | sin(...)], in the
// storage type too; positions [rows] u32. A position outside the table writes NaN into the row's
// q and k heads (the Rust side rejects it before launching, as the CPU op does).
// Launch: grid (rows), block 256; threads stride over (head, i) pairs of the row, PER = 16 /
// sizeof(T) consecutive i at a time (one 16-byte load each of x, x + half, cos and sin) when half
// is a multiple of PER, else one.
//
// rope_write_kv_<dtype>: the same, then kv_cache.cu's write_kv (each row's rotated k heads and
// its v heads into the paged cache at the row's slot; slot -1 or at/after num_slots: no write),
// in one launch: the threads that rotate a k chunk also store it to the cache, and the (head, i)
// range extends over the v heads, which are copied. Why: a decode step runs this pair once per
// layer on a few KB per row, so each kernel costs about its launch; fused, the layer loses one
// launch (16 in a Llama-3.2-1B step) and the k heads' re-read. The cache receives exactly what
// write_kv after rope would copy (the rotated k rounded to T once).
// Extra layout: k_cache, v_cache [num_slots, num_kv_heads * head_dim]; slot_mapping [rows] i64.
#include "common.cuh"
#include "dtype.cuh"

// Where rope_write_kv stores a row's k and v heads; unused (KV = false) by plain rope.
template <typename T> struct KvDest {
    T* __restrict__ k_cache;
    T* __restrict__ v_cache;
    const int64_t* __restrict__ slot_mapping;
    uint64_t num_slots;
};

template <typename T, bool KV>
__device__ __forceinline__ void rope_impl(T* __restrict__ qkv, const T* __restrict__ cos_sin,
                                          const uint32_t* __restrict__ positions,
                                          uint32_t max_positions, uint32_t num_heads,
                                          uint32_t num_kv_heads, uint32_t head_dim,
                                          const KvDest<T>& kv) {
    const uint32_t half = head_dim / 2;
    const uint32_t rotated_heads = num_heads + num_kv_heads;
    // With KV the v heads join the range, to be copied.
    const uint32_t heads = KV ? rotated_heads + num_kv_heads : rotated_heads;
    const size_t row_width = (size_t)(num_heads + 2 * num_kv_heads) * head_dim;
    const size_t kv_width = (size_t)num_kv_heads * head_dim;
    T* row = qkv + blockIdx.x * row_width;
    const uint32_t pos = positions[blockIdx.x];
    const bool bad = pos >= max_positions;
    const T* cs = cos_sin + (size_t)(bad ? 0 : pos) * head_dim;
    // The row's cache slot (k at kd, v at vd, head h of the kv heads at + h * head_dim), if any.
    T* kd = nullptr;
    T* vd = nullptr;
    if (KV) {
        const int64_t slot = kv.slot_mapping[blockIdx.x];
        if (slot >= 0 && (uint64_t)slot < kv.num_slots) {
            kd = kv.k_cache + (size_t)slot * kv_width;
            vd = kv.v_cache + (size_t)slot * kv_width;
        }
    }
    constexpr int PER = Vec16<T>::N;
    if (!bad && half % PER == 0) {
        // Row, head and half offsets are multiples of PER elements: every vector is aligned.
        const uint32_t chunks = half / PER;
        for (uint32_t p = threadIdx.x; p < heads * chunks; p += blockDim.x) {
            const uint32_t head = p / chunks, i = p % chunks * PER;
            T* a = row + (size_t)head * head_dim + i;
            if (KV && head >= rotated_heads) {
                if (vd) {
                    T* d = vd + (size_t)(head - rotated_heads) * head_dim + i;
                    *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(a);
                    *reinterpret_cast<uint4*>(d + half) = *reinterpret_cast<const uint4*>(a + half);
                }
                continue;
            }
            float x[PER], y[PER], c[PER], s[PER];
            load_vec<PER>(a, x);
            load_vec<PER>(a + half, y);
            load_vec<PER>(cs + i, c);
            load_vec<PER>(cs + half + i, s);
            float nx[PER], ny[PER];
#pragma unroll
            for (int k = 0; k < PER; k++) {
                nx[k] = x[k] * c[k] - y[k] * s[k];
                ny[k] = y[k] * c[k] + x[k] * s[k];
            }
            store_vec<PER>(a, nx);
            store_vec<PER>(a + half, ny);
            if (KV && kd && head >= num_heads) {
                T* d = kd + (size_t)(head - num_heads) * head_dim + i;
                store_vec<PER>(d, nx);
                store_vec<PER>(d + half, ny);
            }
        }
        return;
    }
    for (uint32_t p = threadIdx.x; p < heads * half; p += blockDim.x) {
        const uint32_t head = p / half, i = p % half;
        T* a = row + (size_t)head * head_dim + i;
        if (KV && head >= rotated_heads) {
            if (vd) {
                T* d = vd + (size_t)(head - rotated_heads) * head_dim + i;
                d[0] = a[0];
                d[half] = a[half];
            }
            continue;
        }
        T nx, ny;
        if (bad) {
            nx = ny = from_f32<T>(tandem_nan());
        } else {
            const float c = to_f32(cs[i]), s = to_f32(cs[half + i]);
            const float x = to_f32(a[0]), y = to_f32(a[half]);
            nx = from_f32<T>(x * c - y * s);
            ny = from_f32<T>(y * c + x * s);
        }
        a[0] = nx;
        a[half] = ny;
        if (KV && kd && head >= num_heads) {
            T* d = kd + (size_t)(head - num_heads) * head_dim + i;
            d[0] = nx;
            d[half] = ny;
        }
    }
}

#define ROPE_ENTRY(SUFFIX, T)                                                                     \
    extern "C" __global__ void rope_##SUFFIX(T* __restrict__ qkv, const T* __restrict__ cos_sin,  \
                                             const uint32_t* __restrict__ positions,              \
                                             uint32_t max_positions, uint32_t num_heads,          \
                                             uint32_t num_kv_heads, uint32_t head_dim) {          \
        grid_dependency_sync();                                                                   \
        rope_impl<T, false>(qkv, cos_sin, positions, max_positions, num_heads, num_kv_heads,      \
                            head_dim, KvDest<T>{nullptr, nullptr, nullptr, 0});                   \
    }                                                                                             \
    extern "C" __global__ void rope_write_kv_##SUFFIX(                                            \
        T* __restrict__ qkv, const T* __restrict__ cos_sin, const uint32_t* __restrict__ positions, \
        uint32_t max_positions, uint32_t num_heads, uint32_t num_kv_heads, uint32_t head_dim,     \
        T* __restrict__ k_cache, T* __restrict__ v_cache,                                         \
        const int64_t* __restrict__ slot_mapping, uint64_t num_slots) {                           \
        grid_dependency_sync();                                                                   \
        rope_impl<T, true>(qkv, cos_sin, positions, max_positions, num_heads, num_kv_heads,       \
                           head_dim, KvDest<T>{k_cache, v_cache, slot_mapping, num_slots});       \
    }
ROPE_ENTRY(f32, float)
ROPE_ENTRY(bf16, bf16)
