// RMSNorm, plain and fused with the residual add (f32 storage, f32 accumulation).
//
//   rms_norm_f32:     out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w
//   add_rms_norm_f32: residual[r] += delta[r]; out[r] = rms_norm(residual[r]) * w
//
// CPU reference: runtime/cpu/ops.rs (rms_norm, add_rms_norm).
// Layout: x, residual, delta, out are [rows, dim] row-major; w is [dim].
// Launch: grid (rows), block 256 (a multiple of 32, at most 1024); one block per row. The row is
// read once to reduce (and, fused, written back), then re-read from L2/L1 to scale. Rows whose
// width is a multiple of 4 move 16 bytes per access.
#include "common.cuh"

extern "C" __global__ void rms_norm_f32(const float* __restrict__ x, const float* __restrict__ w,
                                        float eps, uint32_t dim, float* __restrict__ out) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * dim;
    float* o = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    if (dim % 4 == 0) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) {
            float4 v = x4[c];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)dim + eps);
        const float4* w4 = reinterpret_cast<const float4*>(w);
        float4* o4 = reinterpret_cast<float4*>(o);
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) {
            float4 v = x4[c], g = w4[c];
            o4[c] = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
        }
    } else {
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) ss += xr[c] * xr[c];
        const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)dim + eps);
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) o[c] = xr[c] * inv * w[c];
    }
}

extern "C" __global__ void add_rms_norm_f32(float* __restrict__ residual,
                                            const float* __restrict__ delta,
                                            const float* __restrict__ w, float eps, uint32_t dim,
                                            float* __restrict__ out) {
    __shared__ float scratch[32];
    float* r = residual + (size_t)blockIdx.x * dim;
    const float* d = delta + (size_t)blockIdx.x * dim;
    float* o = out + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    if (dim % 4 == 0) {
        float4* r4 = reinterpret_cast<float4*>(r);
        const float4* d4 = reinterpret_cast<const float4*>(d);
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) {
            float4 a = r4[c], b = d4[c];
            a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
            r4[c] = a;
            ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
        }
        // Each thread re-reads only the elements it wrote itself: no barrier needed for them.
        const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)dim + eps);
        const float4* w4 = reinterpret_cast<const float4*>(w);
        float4* o4 = reinterpret_cast<float4*>(o);
        for (uint32_t c = threadIdx.x; c < dim / 4; c += blockDim.x) {
            float4 v = r4[c], g = w4[c];
            o4[c] = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
        }
    } else {
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
            const float a = r[c] + d[c];
            r[c] = a;
            ss += a * a;
        }
        const float inv = 1.0f / sqrtf(block_sum(ss, scratch) / (float)dim + eps);
        for (uint32_t c = threadIdx.x; c < dim; c += blockDim.x) o[c] = r[c] * inv * w[c];
    }
}
