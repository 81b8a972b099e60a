// carry_tokens: fills a step's placeholder rows with the samples of the step launched before it,
// on the device, so the step can be launched before those samples reach the host.
//
//   input_ids[carry[2i]] = samples[carry[2i + 1] * sample_words]   for i < n
//
// Layout: input_ids [rows] u32 (the step's metadata), carry [n, 2] u32 (row, sample index),
// samples [sampled rows, sample_words] u32 with the token first (sampling.cu's output rows).
// Launch: grid ceil(n / 128), block 128. Storage-type independent (ids only).
#include "common.cuh"

extern "C" __global__ void carry_tokens(uint32_t* __restrict__ input_ids,
                                        const uint32_t* __restrict__ carry,
                                        const uint32_t* __restrict__ samples, uint32_t n,
                                        uint32_t sample_words) {
    grid_dependency_sync();
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) input_ids[carry[2 * i]] = samples[(size_t)carry[2 * i + 1] * sample_words];
}
