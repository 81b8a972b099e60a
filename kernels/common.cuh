// Shared helpers for tandem's kernels: warp and block reductions, and the launch-shape constants
// the Rust launchers (runtime/cuda/mod.rs) rely on. Header-only; every .cu includes it.
#pragma once

#include <stdint.h>

#define TANDEM_WARP 32

// Sum over the 32 lanes of a warp; every lane gets the total.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = TANDEM_WARP / 2; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// `scratch` must hold 32 floats of shared memory; it is free again when this returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % TANDEM_WARP;
    const int warp = threadIdx.x / TANDEM_WARP;
    const int warps = blockDim.x / TANDEM_WARP;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();  // scratch may be reused by the caller's next reduction
    return v;
}

__device__ __forceinline__ float tandem_nan() { return __int_as_float(0x7fc00000); }
