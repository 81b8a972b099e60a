// The part of cuBLAS tandem's CUDA backend calls (GemmEx, handle settings), for the emulated
// device (fake_cuda.cc): build.rs links it into `libcublas.so` against the emulated driver.
// alpha and beta are read at the call (host pointer mode, as the backend uses it); the GEMM
// itself is fake_gemm.h's.
#include "fake_gemm.h"

using namespace fake_blas;

namespace {
struct Handle {
    void* stream = nullptr;
};
}  // namespace

API cublasStatus_t cublasCreate_v2(void** handle) {
    *handle = new Handle();
    return kOk;
}
API cublasStatus_t cublasDestroy_v2(void* handle) {
    delete static_cast<Handle*>(handle);
    return kOk;
}
API cublasStatus_t cublasSetStream_v2(void* handle, void* stream) {
    static_cast<Handle*>(handle)->stream = stream;
    return kOk;
}
API cublasStatus_t cublasGetStream_v2(void* handle, void** stream) {
    *stream = static_cast<Handle*>(handle)->stream;
    return kOk;
}
API cublasStatus_t cublasSetMathMode(void*, int) { return kOk; }
API cublasStatus_t cublasSetWorkspace_v2(void*, void*, size_t) { return kOk; }

API cublasStatus_t cublasGemmEx(void* handle, int ta, int tb, int m, int n, int k,
                                const void* alpha, const void* a, int at, int lda, const void* b,
                                int bt, int ldb, const void* beta, void* c, int ct, int ldc,
                                int compute, int /*algo*/) {
    if (compute != kCompute32F || !typed(at) || at != bt || at != ct) return kNotSupported;
    if (!shapes_valid(ta, tb, m, n, k, lda, ldb, ldc)) return kInvalidValue;
    return enqueue(static_cast<Handle*>(handle)->stream,
                   new Gemm{ta, tb, m, n, k, *static_cast<const float*>(alpha),
                            *static_cast<const float*>(beta), a, at, lda, b, bt, ldb, c, ct, ldc});
}
