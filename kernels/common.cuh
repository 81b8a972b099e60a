// Shared helpers for tandem's kernels: warp and block reductions, and the launch-shape constants
// the Rust launchers (device/cuda/mod.rs) rely on. Header-only; every .cu includes it.
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

// Programmatic dependent launch (compute capability 9.0+). On such GPUs the host launches every
// kernel with programmatic stream serialization allowed (device/cuda/launch.rs), so a kernel's
// blocks may be scheduled while the kernel before it in the stream is still running: each
// kernel's launch latency then overlaps its predecessor's tail instead of following it (a decode
// step is ~100 kernels of a few microseconds each). So every kernel calls this before it touches
// memory a kernel before it may have written (gemm_skinny.cu and paged_attention_decode_tc.cu
// first issue loads of what none can still be writing, so those are in flight meanwhile):
// griddepcontrol.wait returns once the previous grid has completed and its writes are visible
// (at once when the launch was an ordinary one); then griddepcontrol.launch_dependents lets the
// next kernel's blocks be scheduled. Triggering after the wait, not before, keeps at
// most one kernel's blocks waiting on the one running.
// The emulator checks that every thread of a dependent launch called it (kernels/emu/runtime.cc).
__device__ __forceinline__ void grid_dependency_sync() {
#if defined(TANDEM_EMU)
    ::tandem_emu::grid_dependency_sync();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// A store that other blocks of the same launch read (after this block's __threadfence and an
// atomic tell them it is there). A plain store on the device; the emulator keeps it in the
// block's buffer until the block's next __threadfence, so a missing fence shows there.
template <typename T> __device__ __forceinline__ void store_for_other_blocks(T* p, T v) {
#if defined(TANDEM_EMU)
    ::tandem_emu::buffered_store(p, &v, sizeof(T));
#else
    *p = v;
#endif
}

// atomicMin whose result is not used (the device compiles it to a `red`): in the emulator it
// takes effect only at the block's next __threadfence, as another block may see it that late.
template <typename T> __device__ __forceinline__ void red_min(T* p, T v) {
#if defined(TANDEM_EMU)
    ::tandem_emu::buffered_red(p, ::tandem_emu::to_bits(v), sizeof(T), [](void* q, uint64_t b) {
        T* t = static_cast<T*>(q);
        const T w = ::tandem_emu::from_bits<T>(b);
        if (w < *t) *t = w;
    });
#else
    atomicMin(p, v);
#endif
}
