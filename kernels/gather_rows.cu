// gather_rows_f32: out[i, :] = table[index[i], :] for rows of width `dim` (f32 storage).
//
// Serves two ops of the Backend trait: the embedding lookup (table = [vocab, dim] embeddings,
// index = the step's input_ids) and the gather of logit rows (table = the final hidden states
// [rows, dim], index = logits_indices). An index outside the table writes NaN into its row, so a
// bad id can never read out of bounds and never passes a parity check; the Rust side also
// rejects such ids before launching, as the CPU op does.
//
// Layout: table [num_table_rows, dim] row-major, index [n] u32, out [n, dim] row-major.
// Launch: grid (n), block 256; each block copies one row, 16 bytes at a time when dim % 4 == 0.
#include "common.cuh"

extern "C" __global__ void gather_rows_f32(const float* __restrict__ table,
                                           const uint32_t* __restrict__ index,
                                           uint32_t num_table_rows, uint32_t dim,
                                           float* __restrict__ out) {
    const uint32_t row = blockIdx.x;
    const uint32_t id = index[row];
    float* dst = out + (size_t)row * dim;
    if (id >= num_table_rows) {
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = tandem_nan();
        return;
    }
    const float* src = table + (size_t)id * dim;
    if (dim % 4 == 0) {
        const float4* s4 = reinterpret_cast<const float4*>(src);
        float4* d4 = reinterpret_cast<float4*>(dst);
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) d4[c] = s4[c];
    } else {
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
    }
}
