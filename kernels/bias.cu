// add_bias_<dtype>: out[r, c] += bias[c] — the bias of a linear layer, added after the cuBLAS
// GEMM (Qwen2's q/k/v projections). The sum is formed in f32 and rounded once to the storage type.
//
// CPU reference: device/cpu/gemm.rs (matmul_transposed with a bias).
// Layout: out [rows, n] row-major; bias [n].
// Launch: grid (rows, ceil(n / 256)), block 256 (rows on x: y is limited to 65535); one element
// per thread.
#include "common.cuh"
#include "dtype.cuh"

template <typename T>
__device__ __forceinline__ void add_bias_impl(T* __restrict__ out, const T* __restrict__ bias,
                                              uint32_t n) {
    const uint32_t c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= n) return;
    T* o = out + (size_t)blockIdx.x * n + c;
    *o = from_f32<T>(to_f32(*o) + to_f32(bias[c]));
}

#define ADD_BIAS_ENTRY(SUFFIX, T)                                                                 \
    extern "C" __global__ void add_bias_##SUFFIX(T* __restrict__ out,                             \
                                                 const T* __restrict__ bias, uint32_t n) {        \
        grid_dependency_sync();                                                                   \
        add_bias_impl<T>(out, bias, n);                                                           \
    }
ADD_BIAS_ENTRY(f32, float)
ADD_BIAS_ENTRY(bf16, bf16)
