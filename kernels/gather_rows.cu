// gather_rows_<dtype>: out[i, :] = table[index[i], :] for rows of width `dim`.
//
// Serves two ops of the Backend trait: the embedding lookup (table = [vocab, dim] embeddings,
// index = the step's input_ids) and the gather of logit rows (table = the final hidden states
// [rows, dim], index = logits_indices). An index outside the table writes NaN into its row, so a
// bad id can never read out of bounds and never passes a parity check; the Rust side also
// rejects such ids before launching, as the CPU op does.
//
// Layout: table [num_table_rows, dim] row-major, index [n] u32, out [n, dim] row-major.
// Launch: grid (n), block 256; each block copies one row, 16 bytes at a time when the row's
// bytes are a multiple of 16 (a plain copy: the storage type does not matter).
#include "common.cuh"
#include "dtype.cuh"

template <typename T>
__device__ __forceinline__ void gather_rows_impl(const T* __restrict__ table,
                                                 const uint32_t* __restrict__ index,
                                                 uint32_t num_table_rows, uint32_t dim,
                                                 T* __restrict__ out) {
    const uint32_t row = blockIdx.x;
    const uint32_t id = index[row];
    T* dst = out + (size_t)row * dim;
    if (id >= num_table_rows) {
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = from_f32<T>(tandem_nan());
        return;
    }
    const T* src = table + (size_t)id * dim;
    const size_t bytes = (size_t)dim * sizeof(T);
    if (bytes % 16 == 0) {
        const uint4* s4 = reinterpret_cast<const uint4*>(src);
        uint4* d4 = reinterpret_cast<uint4*>(dst);
        for (uint32_t c = threadIdx.x; c < bytes / 16; c += blockDim.x) d4[c] = s4[c];
    } else {
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
    }
}

#define GATHER_ENTRY(SUFFIX, T)                                                                   \
    extern "C" __global__ void gather_rows_##SUFFIX(                                              \
        const T* __restrict__ table, const uint32_t* __restrict__ index,                          \
        uint32_t num_table_rows, uint32_t dim, T* __restrict__ out) {                             \
        grid_dependency_sync();                                                                   \
        gather_rows_impl<T>(table, index, num_table_rows, dim, out);                              \
    }
GATHER_ENTRY(f32, float)
GATHER_ENTRY(bf16, bf16)
