// Storage types: tensors are stored as f32 or bf16 (the backend's --dtype) and every kernel
// computes in f32. These helpers convert at the load/store boundary, so a kernel body is written
// once as a template over the storage type T and exported once per dtype (`name_f32`,
// `name_bf16`) through `extern "C"` wrappers.
#pragma once

#include <stdint.h>
#ifndef TANDEM_EMU  // the emulator (kernels/emu/cuda_emu.h) has its own bf16
#include <cuda_bf16.h>
#endif

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
// Round to nearest even, as the host's `half::bf16::from_f32` does.
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) {
    return __float2bfloat16_rn(x);
}

// The two bf16 halves of a 32-bit word, widened exactly (a bf16 is the top 16 bits of an f32).
__device__ __forceinline__ float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// Loads 4 consecutive elements as f32. `p` must be aligned to 4 elements (16 bytes for f32,
// 8 bytes for bf16): callers use it only on rows whose width is a multiple of 4.
__device__ __forceinline__ void load4(const float* __restrict__ p, float* o) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
}
__device__ __forceinline__ void load4(const bf16* __restrict__ p, float* o) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    o[0] = bf16_lo(v.x); o[1] = bf16_hi(v.x); o[2] = bf16_lo(v.y); o[3] = bf16_hi(v.y);
}

// Loads 8 consecutive elements as f32; `p` aligned to 8 elements (32 bytes f32, 16 bytes bf16).
__device__ __forceinline__ void load8(const float* __restrict__ p, float* o) {
    load4(p, o);
    load4(p + 4, o + 4);
}
__device__ __forceinline__ void load8(const bf16* __restrict__ p, float* o) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    o[0] = bf16_lo(v.x); o[1] = bf16_hi(v.x); o[2] = bf16_lo(v.y); o[3] = bf16_hi(v.y);
    o[4] = bf16_lo(v.z); o[5] = bf16_hi(v.z); o[6] = bf16_lo(v.w); o[7] = bf16_hi(v.w);
}

// Loads PER (4 or 8) consecutive elements as f32.
template <int PER, typename T>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, float* o) {
    static_assert(PER == 4 || PER == 8, "load_vec: PER is 4 or 8");
    if constexpr (PER == 4) load4(p, o); else load8(p, o);
}

// Stores 4 f32 values as 4 consecutive elements (aligned as for load4), rounding for bf16.
__device__ __forceinline__ void store4(float* __restrict__ p, const float* v) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}
__device__ __forceinline__ void store4(bf16* __restrict__ p, const float* v) {
    *reinterpret_cast<uint2*>(p) = make_uint2(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]));
}

// Stores 8 f32 values as 8 consecutive elements (aligned as for load8).
__device__ __forceinline__ void store8(float* __restrict__ p, const float* v) {
    store4(p, v);
    store4(p + 4, v + 4);
}
__device__ __forceinline__ void store8(bf16* __restrict__ p, const float* v) {
    *reinterpret_cast<uint4*>(p) = make_uint4(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]),
                                              pack_bf16x2(v[4], v[5]), pack_bf16x2(v[6], v[7]));
}

// Stores PER (4 or 8) f32 values as consecutive elements.
template <int PER, typename T>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const float* v) {
    static_assert(PER == 4 || PER == 8, "store_vec: PER is 4 or 8");
    if constexpr (PER == 4) store4(p, v); else store8(p, v);
}

// Elements per 16-byte vector: 4 f32 or 8 bf16. The element-wise kernels move one such vector
// per load where the row widths allow (a 2-byte load per thread leaves bf16 kernels latency-bound,
// well short of copy bandwidth: too few bytes in flight per thread).
template <typename T> struct Vec16 {
    static constexpr int N = 16 / sizeof(T);
};
