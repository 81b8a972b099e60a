// write_kv_<dtype>: copies each row's k and v heads into the paged cache at the row's slot; rows
// with slot -1 (padding) write nothing, so padded batches leave the cache untouched. The cache
// has the storage type of the activations: a plain copy.
//
// CPU reference: device/cpu/attention.rs (write_kv).
// Layout: qkv [rows, row_width] row-major, each row [q (q_width) | k (kv_width) | v (kv_width)];
// slot_mapping [rows] i64; k_cache and v_cache [num_blocks * block_size, kv_width] (that is
// [num_blocks, block_size, num_kv_heads, head_dim]), slot = block * block_size + offset.
// A slot at or beyond num_slots is skipped (the Rust side rejects it first, as the CPU op does).
// Launch: grid (rows), block 128; threads stride over kv_width, 16 bytes at a time when q_width
// and kv_width are multiples of 16 bytes (2-byte bf16 copies left it at 42% of copy bandwidth).
#include "common.cuh"
#include "dtype.cuh"

template <typename T>
__device__ __forceinline__ void write_kv_impl(const T* __restrict__ qkv, T* __restrict__ k_cache,
                                              T* __restrict__ v_cache,
                                              const int64_t* __restrict__ slot_mapping,
                                              uint32_t q_width, uint32_t kv_width,
                                              uint64_t num_slots) {
    const int64_t slot = slot_mapping[blockIdx.x];
    if (slot < 0 || (uint64_t)slot >= num_slots) return;
    const T* k = qkv + (size_t)blockIdx.x * (q_width + 2 * kv_width) + q_width;
    const T* v = k + kv_width;
    T* kd = k_cache + (size_t)slot * kv_width;
    T* vd = v_cache + (size_t)slot * kv_width;
    if ((q_width * sizeof(T)) % 16 == 0 && (kv_width * sizeof(T)) % 16 == 0) {
        // Every row, head block and slot starts 16-byte aligned: copy 16 bytes at a time.
        const uint4* k4 = reinterpret_cast<const uint4*>(k);
        const uint4* v4 = reinterpret_cast<const uint4*>(v);
        uint4* kd4 = reinterpret_cast<uint4*>(kd);
        uint4* vd4 = reinterpret_cast<uint4*>(vd);
        for (uint32_t c = threadIdx.x; c < kv_width * sizeof(T) / 16; c += blockDim.x) {
            kd4[c] = k4[c];
            vd4[c] = v4[c];
        }
        return;
    }
    for (uint32_t c = threadIdx.x; c < kv_width; c += blockDim.x) {
        kd[c] = k[c];
        vd[c] = v[c];
    }
}

#define WRITE_KV_ENTRY(SUFFIX, T)                                                                 \
    extern "C" __global__ void write_kv_##SUFFIX(                                                 \
        const T* __restrict__ qkv, T* __restrict__ k_cache, T* __restrict__ v_cache,              \
        const int64_t* __restrict__ slot_mapping, uint32_t q_width, uint32_t kv_width,            \
        uint64_t num_slots) {                                                                     \
        grid_dependency_sync();                                                                   \
        write_kv_impl<T>(qkv, k_cache, v_cache, slot_mapping, q_width, kv_width, num_slots);      \
    }
WRITE_KV_ENTRY(f32, float)
WRITE_KV_ENTRY(bf16, bf16)
