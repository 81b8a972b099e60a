// The part of cuBLAS tandem's CUDA backend calls (GemmEx, handle settings), for the emulated
// device (fake_cuda.cc): build.rs links it into `libcublas.so` against the emulated driver. A
// GEMM runs in stream order through the driver, so it is captured into CUDA graphs like a kernel,
// with alpha and beta read at the call (host pointer mode, as the backend uses it). Plain loops in
// f32 (bf16 inputs widened, the result rounded once to the output type), as the tensor cores
// accumulate: tandem's test models are small.
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define API extern "C" __attribute__((visibility("default")))

typedef int cublasStatus_t;
typedef int CUresult;

extern "C" CUresult tandem_fake_cuda_enqueue(void* stream, CUresult (*op)(void*), void* data,
                                             void (*drop)(void*));

namespace {

enum : cublasStatus_t { kOk = 0, kInvalidValue = 7, kExecutionFailed = 13, kNotSupported = 15 };
enum { kR32F = 0, kR16BF = 14 };  // cudaDataType
enum { kOpN = 0, kOpT = 1 };      // cublasOperation_t
constexpr int kCompute32F = 68;   // cublasComputeType_t

struct Handle {
    void* stream = nullptr;
};

float load(const void* p, int type, int64_t i) {
    if (type == kR32F) return static_cast<const float*>(p)[i];
    uint32_t bits = uint32_t(static_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void store(void* p, int type, int64_t i, float v) {
    if (type == kR32F) {
        static_cast<float*>(p)[i] = v;
        return;
    }
    uint32_t bits;
    memcpy(&bits, &v, 4);
    if ((bits & 0x7fffffff) > 0x7f800000) {
        bits = 0x7fc00000;  // NaN stays NaN
    } else {
        bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest even
    }
    static_cast<uint16_t*>(p)[i] = uint16_t(bits >> 16);
}

struct Gemm {
    int ta, tb, m, n, k;
    float alpha, beta;
    const void* a;
    int at;
    int64_t lda;
    const void* b;
    int bt;
    int64_t ldb;
    void* c;
    int ct;
    int64_t ldc;
};

// Column-major C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C.
CUresult run(void* data) {
    const Gemm& g = *static_cast<Gemm*>(data);
    for (int j = 0; j < g.n; ++j) {
        for (int i = 0; i < g.m; ++i) {
            float acc = 0;
            for (int l = 0; l < g.k; ++l) {
                float x = load(g.a, g.at, g.ta == kOpN ? i + l * g.lda : l + i * g.lda);
                float y = load(g.b, g.bt, g.tb == kOpN ? l + j * g.ldb : j + l * g.ldb);
                acc += x * y;
            }
            const int64_t at = i + j * g.ldc;
            float out = g.alpha * acc;
            if (g.beta != 0) out += g.beta * load(g.c, g.ct, at);
            store(g.c, g.ct, at, out);
        }
    }
    return 0;
}

void drop(void* data) { delete static_cast<Gemm*>(data); }

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
    auto typed = [](int t) { return t == kR32F || t == kR16BF; };
    if (compute != kCompute32F || !typed(at) || at != bt || at != ct) return kNotSupported;
    if ((ta != kOpN && ta != kOpT) || (tb != kOpN && tb != kOpT) || m < 0 || n < 0 || k < 0 ||
        lda < (ta == kOpN ? m : k) || ldb < (tb == kOpN ? k : n) || ldc < m || lda < 1 ||
        ldb < 1 || ldc < 1)
        return kInvalidValue;
    auto* g = new Gemm{ta, tb, m, n, k, *static_cast<const float*>(alpha),
                       *static_cast<const float*>(beta), a, at, lda, b, bt, ldb, c, ct, ldc};
    CUresult r = tandem_fake_cuda_enqueue(static_cast<Handle*>(handle)->stream, run, g, drop);
    return r == 0 ? kOk : kExecutionFailed;
}
