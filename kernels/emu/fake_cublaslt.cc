// The part of cuBLASLt tandem's CUDA backend calls (device/cuda/gemm_lt.rs), for the emulated
// device: build.rs links it into `libcublasLt.so` against the emulated driver. Descriptors are
// checked as the documentation describes them (attribute sizes, layouts that match the
// operation, an algorithm that was handed out here), so a misuse fails here as it would on a
// GPU. The "algorithms" are three made-up ones, enough to exercise the tuner: a plain one, one
// that splits k and needs a workspace, and one that takes only as many columns (tokens) as the
// heuristic query had, as real tile configurations can be limited to some shapes. Every one
// computes fake_gemm.h's product.
#include <stdlib.h>

#include <initializer_list>

#include "fake_gemm.h"

using namespace fake_blas;

namespace {

// Attribute numbers, from cublasLt.h.
enum { kDescTransA = 3, kDescTransB = 4 };
enum { kPrefMaxWorkspace = 1, kPrefMinAlignA = 5, kPrefMinAlignD = 8 };
enum { kConfigId = 0, kConfigTile = 1, kConfigSplitK = 2, kConfigReduction = 3 };
enum { kReductionNone = 0, kReductionComputeType = 2 };

constexpr uint64_t kMagic = 0x74616e64656d4c74;  // marks an algorithm made here

struct Desc {
    int compute, scale;
    int32_t ta = kOpN, tb = kOpN;
};

struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};

struct Pref {
    uint64_t max_workspace = 0;
};

// cublasLtMatmulAlgo_t: 8 u64s. [0] magic, [1] id, [2] split-k, [3] reduction scheme,
// [4] the most columns it takes (0: any).
struct Algo {
    uint64_t data[8];
};

struct HeuristicResult {
    Algo algo;
    size_t workspace;
    cublasStatus_t state;
    float waves;
    int reserved[4];
};

// The product the descriptors describe, checked: m x n = op(A)[m, k] . op(B)[k, n].
struct Shape {
    int m, n, k, type;
};

bool shape_of(const Desc* d, const Layout* a, const Layout* b, const Layout* c,
              const Layout* dd, Shape* s) {
    if (!d || !a || !b || !c || !dd) return false;
    if (d->compute != kCompute32F || d->scale != kR32F) return false;
    if (!typed(a->type) || a->type != b->type || a->type != c->type || c->type != dd->type)
        return false;
    // A layout describes the matrix as stored: op(A) = Aᵀ is m x k when A is k x m.
    const uint64_t m = d->ta == kOpN ? a->rows : a->cols;
    const uint64_t k = d->ta == kOpN ? a->cols : a->rows;
    const uint64_t kb = d->tb == kOpN ? b->rows : b->cols;
    const uint64_t n = d->tb == kOpN ? b->cols : b->rows;
    if (k != kb || c->rows != m || c->cols != n || dd->rows != m || dd->cols != n ||
        c->ld != dd->ld)
        return false;
    if (m > 1u << 30 || n > 1u << 30 || k > 1u << 30) return false;
    if (!shapes_valid(d->ta, d->tb, int(m), int(n), int(k), a->ld, b->ld, c->ld)) return false;
    *s = Shape{int(m), int(n), int(k), a->type};
    return true;
}

// Whether `algo` can run `s`, and the workspace it needs.
cublasStatus_t check(const Algo* algo, const Shape& s, size_t* workspace) {
    if (!algo || algo->data[0] != kMagic || algo->data[1] > 2) return kInvalidValue;
    const uint64_t splits = algo->data[2];
    if (splits < 1 || (splits > 1 && algo->data[3] != kReductionComputeType)) return kInvalidValue;
    // Each split must keep 16 elements of k at least.
    if (splits > 1 && uint64_t(s.k) < 16 * splits) return kNotSupported;
    if (algo->data[4] != 0 && uint64_t(s.n) > algo->data[4]) return kNotSupported;
    *workspace = splits > 1 ? size_t(splits) * s.m * s.n * sizeof(float) : 0;
    return kOk;
}

template <typename T>
bool read_attr(const void* buf, size_t size, T* out) {
    if (!buf || size != sizeof(T)) return false;
    memcpy(out, buf, sizeof(T));
    return true;
}

}  // namespace

API cublasStatus_t cublasLtCreate(void** handle) {
    *handle = malloc(1);
    return kOk;
}
API cublasStatus_t cublasLtDestroy(void* handle) {
    free(handle);
    return kOk;
}

API cublasStatus_t cublasLtMatmulDescCreate(Desc** desc, int compute, int scale) {
    *desc = new Desc{compute, scale};
    return kOk;
}
API cublasStatus_t cublasLtMatmulDescDestroy(Desc* desc) {
    delete desc;
    return kOk;
}
API cublasStatus_t cublasLtMatmulDescSetAttribute(Desc* desc, int attr, const void* buf,
                                                  size_t size) {
    if (!desc) return kInvalidValue;
    int32_t* field = attr == kDescTransA ? &desc->ta : attr == kDescTransB ? &desc->tb : nullptr;
    if (!field) return kNotSupported;
    int32_t op;
    if (!read_attr(buf, size, &op) || (op != kOpN && op != kOpT)) return kInvalidValue;
    *field = op;
    return kOk;
}

API cublasStatus_t cublasLtMatrixLayoutCreate(Layout** layout, int type, uint64_t rows,
                                              uint64_t cols, int64_t ld) {
    if (!typed(type) || ld < 1 || ld < int64_t(rows)) return kInvalidValue;
    *layout = new Layout{type, rows, cols, ld};
    return kOk;
}
API cublasStatus_t cublasLtMatrixLayoutDestroy(Layout* layout) {
    delete layout;
    return kOk;
}

API cublasStatus_t cublasLtMatmulPreferenceCreate(Pref** pref) {
    *pref = new Pref();
    return kOk;
}
API cublasStatus_t cublasLtMatmulPreferenceDestroy(Pref* pref) {
    delete pref;
    return kOk;
}
API cublasStatus_t cublasLtMatmulPreferenceSetAttribute(Pref* pref, int attr, const void* buf,
                                                        size_t size) {
    if (!pref) return kInvalidValue;
    if (attr == kPrefMaxWorkspace)
        return read_attr(buf, size, &pref->max_workspace) ? kOk : kInvalidValue;
    if (attr >= kPrefMinAlignA && attr <= kPrefMinAlignD) {
        uint32_t align;
        return read_attr(buf, size, &align) && align > 0 && (align & (align - 1)) == 0
                   ? kOk
                   : kInvalidValue;
    }
    return kNotSupported;
}

API cublasStatus_t cublasLtMatmulAlgoGetHeuristic(void* handle, Desc* desc, Layout* a, Layout* b,
                                                  Layout* c, Layout* d, Pref* pref,
                                                  int requested, HeuristicResult* results,
                                                  int* returned) {
    Shape s;
    if (!handle || !pref || !results || !returned || requested < 1 ||
        !shape_of(desc, a, b, c, d, &s))
        return kInvalidValue;
    const Algo made[3] = {
        {{kMagic, 0, 1, kReductionNone, 0}},
        {{kMagic, 1, 2, kReductionComputeType, 0}},
        {{kMagic, 2, 1, kReductionNone, uint64_t(s.n)}},
    };
    int count = 0;
    for (const Algo& algo : made) {
        size_t workspace;
        if (count == requested || check(&algo, s, &workspace) != kOk ||
            workspace > pref->max_workspace)
            continue;
        results[count] = HeuristicResult{algo, workspace, kOk, 1.0f, {0, 0, 0, 0}};
        ++count;
    }
    *returned = count;
    return count > 0 ? kOk : kNotSupported;
}

API cublasStatus_t cublasLtMatmulAlgoCheck(void* handle, Desc* desc, Layout* a, Layout* b,
                                           Layout* c, Layout* d, const Algo* algo,
                                           HeuristicResult* result) {
    Shape s;
    if (!handle || !result || !shape_of(desc, a, b, c, d, &s)) return kInvalidValue;
    size_t workspace;
    cublasStatus_t st = check(algo, s, &workspace);
    if (st != kOk) return st;
    *result = HeuristicResult{*algo, workspace, kOk, 1.0f, {0, 0, 0, 0}};
    return kOk;
}

API cublasStatus_t cublasLtMatmulAlgoConfigSetAttribute(Algo* algo, int attr, const void* buf,
                                                        size_t size) {
    if (!algo || algo->data[0] != kMagic) return kInvalidValue;
    uint32_t v;
    if (!read_attr(buf, size, &v)) return kInvalidValue;
    if (attr == kConfigSplitK) {
        algo->data[2] = v;
    } else if (attr == kConfigReduction) {
        algo->data[3] = v;
    } else {
        return kNotSupported;
    }
    return kOk;
}

API cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const Algo* algo, int attr, void* buf,
                                                        size_t size, size_t* written) {
    if (!algo || algo->data[0] != kMagic || !buf) return kInvalidValue;
    uint64_t v;
    switch (attr) {
        case kConfigId: v = algo->data[1]; break;
        case kConfigTile: v = 0; break;
        case kConfigSplitK: v = algo->data[2]; break;
        case kConfigReduction: v = algo->data[3]; break;
        default: return kNotSupported;
    }
    // Every attribute asked here is 4 bytes (int32 or uint32).
    if (size != 4) return kInvalidValue;
    const uint32_t v32 = uint32_t(v);
    memcpy(buf, &v32, 4);
    if (written) *written = 4;
    return kOk;
}

API cublasStatus_t cublasLtMatmul(void* handle, Desc* desc, const void* alpha, const void* a,
                                  Layout* adesc, const void* b, Layout* bdesc, const void* beta,
                                  const void* c, Layout* cdesc, void* d, Layout* ddesc,
                                  const Algo* algo, void* workspace, size_t workspace_size,
                                  void* stream) {
    Shape s;
    if (!handle || !alpha || !beta || !a || !b || !d || !shape_of(desc, adesc, bdesc, cdesc, ddesc, &s))
        return kInvalidValue;
    // The backend computes in place (C = D) with beta 0.
    if (c != d) return kNotSupported;
    size_t needed;
    cublasStatus_t st = check(algo, s, &needed);
    if (st != kOk) return st;
    if (needed > 0 && (!workspace || workspace_size < needed)) return kInvalidValue;
    // The alignment a preference may promise (16 bytes) is what every algorithm here assumes.
    for (const void* p : {a, b, static_cast<const void*>(d)})
        if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return kInvalidValue;
    return enqueue(stream,
                   new Gemm{desc->ta, desc->tb, s.m, s.n, s.k, *static_cast<const float*>(alpha),
                            *static_cast<const float*>(beta), a, s.type, adesc->ld, b, s.type,
                            bdesc->ld, d, s.type, ddesc->ld});
}
