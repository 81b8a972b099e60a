// The GEMM both emulated BLAS libraries run (fake_cublas.cc: GemmEx; fake_cublaslt.cc:
// cublasLtMatmul): column-major, queued in stream order through the emulated driver
// (fake_cuda.cc), so it is captured into CUDA graphs like a kernel. Plain loops in f32 (bf16
// inputs widened, the result rounded once to the output type), as the tensor cores accumulate:
// tandem's test models are small.
#pragma once
#include <stdint.h>
#include <string.h>

#define API extern "C" __attribute__((visibility("default")))

typedef int cublasStatus_t;
typedef int CUresult;

extern "C" CUresult tandem_fake_cuda_enqueue(void* stream, CUresult (*op)(void*), void* data,
                                             void (*drop)(void*));

namespace fake_blas {

enum : cublasStatus_t { kOk = 0, kInvalidValue = 7, kExecutionFailed = 13, kNotSupported = 15 };
enum { kR32F = 0, kR16BF = 14 };  // cudaDataType
enum { kOpN = 0, kOpT = 1 };      // cublasOperation_t
constexpr int kCompute32F = 68;   // cublasComputeType_t

inline float load(const void* p, int type, int64_t i) {
    if (type == kR32F) return static_cast<const float*>(p)[i];
    uint32_t bits = uint32_t(static_cast<const uint16_t*>(p)[i]) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

inline void store(void* p, int type, int64_t i, float v) {
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
inline CUresult run(void* data) {
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

inline void drop(void* data) { delete static_cast<Gemm*>(data); }

inline bool typed(int t) { return t == kR32F || t == kR16BF; }

// Whether op(A) is m x k with leading dimension lda, and so on: the checks cuBLAS makes.
inline bool shapes_valid(int ta, int tb, int m, int n, int k, int64_t lda, int64_t ldb, int64_t ldc) {
    return (ta == kOpN || ta == kOpT) && (tb == kOpN || tb == kOpT) && m >= 0 && n >= 0 &&
           k >= 0 && lda >= (ta == kOpN ? m : k) && ldb >= (tb == kOpN ? k : n) && ldc >= m &&
           lda >= 1 && ldb >= 1 && ldc >= 1;
}

// Queues `g` (owned from here on) on `stream`.
inline cublasStatus_t enqueue(void* stream, Gemm* g) {
    CUresult r = tandem_fake_cuda_enqueue(stream, run, g, drop);
    return r == 0 ? kOk : kExecutionFailed;
}

}  // namespace fake_blas
