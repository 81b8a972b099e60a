// rope_f32: rotary position embedding in place on the q and k heads of the fused qkv rows, HF
// "rotate half" pairing: for i < half = head_dim / 2, (x[i], x[i + half]) turns by the angle of
// the row's position:  x[i] <- x[i]*cos - x[i+half]*sin,  x[i+half] <- x[i+half]*cos + x[i]*sin.
// v heads are untouched. Any scaling (default, llama3, ...) is already baked into the table.
//
// CPU reference: runtime/cpu/ops.rs (rope).
// Layout: qkv [rows, row_width] row-major, each row [q heads | k heads | v heads];
// cos_sin [max_positions, head_dim] row-major, each row [cos(pos*f_0..f_half) | sin(...)];
// positions [rows] u32. A position outside the table writes NaN into the row's q and k heads
// (the Rust side rejects it before launching, as the CPU op does).
// Launch: grid (rows), block 256; threads stride over (head, i) pairs of the row.
#include "common.cuh"

extern "C" __global__ void rope_f32(float* __restrict__ qkv, const float* __restrict__ cos_sin,
                                    const uint32_t* __restrict__ positions,
                                    uint32_t max_positions, uint32_t num_heads,
                                    uint32_t num_kv_heads, uint32_t head_dim) {
    const uint32_t half = head_dim / 2;
    const uint32_t rotated_heads = num_heads + num_kv_heads;
    const size_t row_width = (size_t)(num_heads + 2 * num_kv_heads) * head_dim;
    float* row = qkv + blockIdx.x * row_width;
    const uint32_t pos = positions[blockIdx.x];
    const bool bad = pos >= max_positions;
    const float* cs = cos_sin + (size_t)(bad ? 0 : pos) * head_dim;
    for (uint32_t p = threadIdx.x; p < rotated_heads * half; p += blockDim.x) {
        const uint32_t head = p / half, i = p % half;
        float* a = row + (size_t)head * head_dim + i;
        if (bad) {
            a[0] = tandem_nan();
            a[half] = tandem_nan();
            continue;
        }
        const float c = cs[i], s = cs[half + i];
        const float x = a[0], y = a[half];
        a[0] = x * c - y * s;
        a[half] = y * c + x * s;
    }
}
