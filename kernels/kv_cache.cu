// write_kv_f32: copies each row's k and v heads into the paged cache at the row's slot; rows with
// slot -1 (padding) write nothing, so padded batches leave the cache untouched.
//
// CPU reference: runtime/cpu/attention.rs (write_kv).
// Layout: qkv [rows, row_width] row-major, each row [q (q_width) | k (kv_width) | v (kv_width)];
// slot_mapping [rows] i64; k_cache and v_cache [num_blocks * block_size, kv_width] (that is
// [num_blocks, block_size, num_kv_heads, head_dim]), slot = block * block_size + offset.
// A slot at or beyond num_slots is skipped (the Rust side rejects it first, as the CPU op does).
// Launch: grid (rows), block 128; threads stride over kv_width.
#include "common.cuh"

extern "C" __global__ void write_kv_f32(const float* __restrict__ qkv,
                                        float* __restrict__ k_cache, float* __restrict__ v_cache,
                                        const int64_t* __restrict__ slot_mapping,
                                        uint32_t q_width, uint32_t kv_width, uint64_t num_slots) {
    const int64_t slot = slot_mapping[blockIdx.x];
    if (slot < 0 || (uint64_t)slot >= num_slots) return;
    const float* k = qkv + (size_t)blockIdx.x * (q_width + 2 * kv_width) + q_width;
    const float* v = k + kv_width;
    float* kd = k_cache + (size_t)slot * kv_width;
    float* vd = v_cache + (size_t)slot * kv_width;
    for (uint32_t c = threadIdx.x; c < kv_width; c += blockDim.x) {
        kd[c] = k[c];
        vd[c] = v[c];
    }
}
