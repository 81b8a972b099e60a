// rope_<dtype>: rotary position embedding in place on the q and k heads of the fused qkv rows, HF
// "rotate half" pairing: for i < half = head_dim / 2, (x[i], x[i + half]) turns by the angle of
// the row's position:  x[i] <- x[i]*cos - x[i+half]*sin,  x[i+half] <- x[i+half]*cos + x[i]*sin.
// v heads are untouched. Any scaling (default, llama3, ...) is already baked into the table.
// f32 arithmetic, one rounding on store.
//
// CPU reference: runtime/cpu/ops.rs (rope).
// Layout: qkv [rows, row_width] row-major, each row [q heads | k heads | v heads];
// cos_sin [max_positions, head_dim] row-major, each row [cos(pos*f_0..f_half) | sin(...)], in the
// storage type too; positions [rows] u32. A position outside the table writes NaN into the row's
// q and k heads (the Rust side rejects it before launching, as the CPU op does).
// Launch: grid (rows), block 256; threads stride over (head, i) pairs of the row, PER = 16 /
// sizeof(T) consecutive i at a time (one 16-byte load each of x, x + half, cos and sin) when half
// is a multiple of PER, else one.
#include "common.cuh"
#include "dtype.cuh"

template <typename T>
__device__ __forceinline__ void rope_impl(T* __restrict__ qkv, const T* __restrict__ cos_sin,
                                          const uint32_t* __restrict__ positions,
                                          uint32_t max_positions, uint32_t num_heads,
                                          uint32_t num_kv_heads, uint32_t head_dim) {
    const uint32_t half = head_dim / 2;
    const uint32_t rotated_heads = num_heads + num_kv_heads;
    const size_t row_width = (size_t)(num_heads + 2 * num_kv_heads) * head_dim;
    T* row = qkv + blockIdx.x * row_width;
    const uint32_t pos = positions[blockIdx.x];
    const bool bad = pos >= max_positions;
    const T* cs = cos_sin + (size_t)(bad ? 0 : pos) * head_dim;
    constexpr int PER = Vec16<T>::N;
    if (!bad && half % PER == 0) {
        // Row, head and half offsets are multiples of PER elements: every vector is aligned.
        const uint32_t chunks = half / PER;
        for (uint32_t p = threadIdx.x; p < rotated_heads * chunks; p += blockDim.x) {
            const uint32_t head = p / chunks, i = p % chunks * PER;
            T* a = row + (size_t)head * head_dim + i;
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
        }
        return;
    }
    for (uint32_t p = threadIdx.x; p < rotated_heads * half; p += blockDim.x) {
        const uint32_t head = p / half, i = p % half;
        T* a = row + (size_t)head * head_dim + i;
        if (bad) {
            a[0] = from_f32<T>(tandem_nan());
            a[half] = from_f32<T>(tandem_nan());
            continue;
        }
        const float c = to_f32(cs[i]), s = to_f32(cs[half + i]);
        const float x = to_f32(a[0]), y = to_f32(a[half]);
        a[0] = from_f32<T>(x * c - y * s);
        a[half] = from_f32<T>(y * c + x * s);
    }
}

#define ROPE_ENTRY(SUFFIX, T)                                                                     \
    extern "C" __global__ void rope_##SUFFIX(T* __restrict__ qkv, const T* __restrict__ cos_sin,  \
                                             const uint32_t* __restrict__ positions,              \
                                             uint32_t max_positions, uint32_t num_heads,          \
                                             uint32_t num_kv_heads, uint32_t head_dim) {          \
        rope_impl<T>(qkv, cos_sin, positions, max_positions, num_heads, num_kv_heads, head_dim);  \
    }
ROPE_ENTRY(f32, float)
ROPE_ENTRY(bf16, bf16)
