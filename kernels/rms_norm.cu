// RMSNorm, plain and fused with the residual add (f32 or bf16 storage, f32 accumulation).
//
//   rms_norm_<dtype>:     out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w
//   add_rms_norm_<dtype>: residual[r] += delta[r]; out[r] = rms_norm(residual[r]) * w
//
// The fused kernel rounds the new residual to the storage type before squaring it, so the norm
// sees exactly the residual it stores (as a bf16 model in transformers does).
//
// CPU reference: device/cpu/ops.rs (rms_norm, add_rms_norm).
// Layout: x, residual, delta, out are [rows, dim] row-major; w is [dim].
// Launch: grid (rows), block 256 (a multiple of 32, at most 1024); one block per row. The row is
// read once to reduce (and, fused, written back), then re-read from L2/L1 to scale. Rows whose
// width is a multiple of 4 move 4 elements per access.
#include "common.cuh"
#include "dtype.cuh"

template <typename T>
__device__ __forceinline__ void rms_norm_impl(const T* __restrict__ x, const T* __restrict__ w,
                                              float eps, uint32_t dim, T* __restrict__ out) {
    __shared__ float scratch[32];
    const T* xr = x + (size_t)blockIdx.x * dim;
    T* o = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    if (dim % 4 == 0) {
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) {
            float v[4];
            load4(xr + 4 * c, v);
            ss += v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
        }
        const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)dim + eps);
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) {
            float v[4], g[4];
            load4(xr + 4 * c, v);
            load4(w + 4 * c, g);
#pragma unroll
            for (int k = 0; k < 4; k++) v[k] = v[k] * inv * g[k];
            store4(o + 4 * c, v);
        }
    } else {
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
            const float v = to_f32(xr[c]);
            ss += v * v;
        }
        const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)dim + eps);
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
            o[c] = from_f32<T>(to_f32(xr[c]) * inv * to_f32(w[c]));
        }
    }
}

template <typename T>
__device__ __forceinline__ void add_rms_norm_impl(T* __restrict__ residual,
                                                  const T* __restrict__ delta,
                                                  const T* __restrict__ w, float eps,
                                                  uint32_t dim, T* __restrict__ out) {
    __shared__ float scratch[32];
    T* r = residual + (size_t)blockIdx.x * dim;
    const T* d = delta + (size_t)blockIdx.x * dim;
    T* o = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    if (dim % 4 == 0) {
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) {
            float a[4], b[4];
            load4(r + 4 * c, a);
            load4(d + 4 * c, b);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                a[k] = to_f32(from_f32<T>(a[k] + b[k]));  // the stored (rounded) residual
                ss += a[k] * a[k];
            }
            store4(r + 4 * c, a);
        }
        // Each thread re-reads only the elements it wrote itself: no barrier needed for them.
        const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)dim + eps);
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) {
            float v[4], g[4];
            load4(r + 4 * c, v);
            load4(w + 4 * c, g);
#pragma unroll
            for (int k = 0; k < 4; k++) v[k] = v[k] * inv * g[k];
            store4(o + 4 * c, v);
        }
    } else {
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
            const T a = from_f32<T>(to_f32(r[c]) + to_f32(d[c]));
            r[c] = a;
            ss += to_f32(a) * to_f32(a);
        }
        const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)dim + eps);
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
            o[c] = from_f32<T>(to_f32(r[c]) * inv * to_f32(w[c]));
        }
    }
}

#define RMS_NORM_ENTRIES(SUFFIX, T)                                                               \
    extern "C" __global__ void rms_norm_##SUFFIX(const T* __restrict__ x,                         \
                                                 const T* __restrict__ w, float eps,              \
                                                 uint32_t dim, T* __restrict__ out) {             \
        grid_dependency_sync();                                                                   \
        rms_norm_impl<T>(x, w, eps, dim, out);                                                    \
    }                                                                                             \
    extern "C" __global__ void add_rms_norm_##SUFFIX(T* __restrict__ residual,                    \
                                                     const T* __restrict__ delta,                 \
                                                     const T* __restrict__ w, float eps,          \
                                                     uint32_t dim, T* __restrict__ out) {         \
        grid_dependency_sync();                                                                   \
        add_rms_norm_impl<T>(residual, delta, w, eps, dim, out);                                  \
    }
RMS_NORM_ENTRIES(f32, float)
RMS_NORM_ENTRIES(bf16, bf16)
