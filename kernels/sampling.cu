// sample_rows_*: the CPU sampler (device/sampling: mod.rs `sample`, minus the penalties) on the
// device, one block per logits row, so that only token ids (and requested logprobs) come back.
//
// tests/cuda_parity.rs (sample_rows_*) checks its parity with `sample()` on a GPU, and
// tests/kernel_emu.rs on the CPU.
//
// Per row, exactly as `sample` does it:
//   greedy (flag set by the host from `SamplerState::is_greedy`): the first maximum of the raw
//     row (NaN never wins unless the row is all NaN: then token 0; -0.0 ties with 0.0);
//   otherwise v = clean(logit * inv_temperature) (NaN -> -inf, +inf -> FLT_MAX; the host computes
//     inv_temperature = 1 / temperature in f32 as `apply_temperature` does), weights
//     w = exp_nonpos(v - max) (a bit-exact port of device/sampling/math.rs, every operation
//     rounded explicitly so nvcc cannot contract it into an FMA; all -inf = uniform 1.0), then
//     top-k, top-p over the top-k mass, min-p (w >= min(min_p, 1)), and the draw.
//   Keys order candidates as the CPU's `processors::key` does: (~ordered(v) << 32) | id, ascending
//   = most likely first, ties to the lower id. Every truncation keeps a prefix of that order
//   ("key <= B" for a boundary key B), min-p a predicate on w.
//   The draw walks the kept tokens in id order (as the CPU's draw does since this kernel was
//   written; see processors.rs): the first token whose cumulative weight (f64) exceeds
//   u * total, u = uniform(seed, position) (SplitMix64, a port of rng.rs in 64-bit integer
//   arithmetic); rounding fallback: the last kept token of positive weight.
//   Logprobs: log_softmax of the raw (sanitized) row; the chosen token's and the top-n's (n <= 20,
//   most likely first, ties to the lower id).
//
// Top-k / top-p without a sort: a radix select over the 32-bit value part of the key, MSB first,
// 8 bits per pass: each pass histograms (count, and for top-p the f64 mass) the next digit of the
// candidates that share the prefix chosen so far, and one warp scans the 256 bins for the bin
// where the running count (mass) reaches the goal (k, or top_p x total). After at most 4 passes
// the boundary value is exact; the ties at it (equal values have equal weights) are cut in id
// order by one more pass (per-thread contiguous chunks, a block scan of their tie counts), so the
// kept set is exactly the CPU's. A pass stops early once its bucket holds one token (or, for a
// count, exactly the tokens still needed). The top-n logprobs use the same count select.
// Cost per sampled row, in passes over the vocab (each reading the row, L2-resident for most
// rows): greedy 1; temperature only: max + draw = 2; top-k: +<=5; top-p: +1 (the total)
// +<=5; logprobs: +2 (max, sum) +<=5 for the top-n (+0 when n = 0). Exact up to f64 summation
// order: the CPU sums weights sequentially, the device in a tree (and the top-p histogram with
// f64 atomics, whose order varies between runs), so a top-p cut or a draw can differ only when
// the target lands within ~1e-15 (relative) of a cumulative weight.
//
// Constrained rows (structured outputs, logit_bias): the pick reads the row's adjusted copy,
// adjusted[params.adjusted] (f32), which constrain_rows wrote before the launch: the raw value
// plus its bias, -inf where the grammar's mask disallows the token, as `sample` applies them
// before picking. Logprobs still come from the raw row (as `sample` computes them).
//
// Launch: grid (rows, greedy splits), block SAMPLE_THREADS. params [rows] SampleParams (48 bytes,
// matching device/sampling/device_words.rs); logits [rows, vocab] storage dtype; adjusted
// [constrained rows, vocab] f32 (unread when no row is constrained); out [rows, SAMPLE_OUT_WORDS]
// u32: token, chosen logprob (f32 bits), top ids [20], top logprobs [20] (f32 bits). With more
// than one split, greedy rows without logprobs are shared by the row's blocks (greedy_split),
// through best [rows] u64 (all ones between launches) and counters [rows] u32 (zero between
// launches); every other row runs on its first block alone.
//
// constrain_rows_<dtype>: adjusted[j, i] = mask bit i of row j set ? raw + bias : -inf, for the
// j-th constrained row (logits row info[j].row). Launch: grid (constrained rows), block
// SAMPLE_THREADS. info [rows] ConstrainInfo; masks: words per row ceil(vocab / 32), row j's at
// info[j].mask (NO_MASK: every token allowed); bias: (token, f32 bits) pairs, row j's
// info[j].bias_len of them from pair info[j].bias_at, added one after another in order (a token
// past the vocabulary is skipped) as the host does.
#include "common.cuh"
#include "dtype.cuh"

#define SAMPLE_THREADS 512
#define SAMPLE_WARPS (SAMPLE_THREADS / TANDEM_WARP)
#define SAMPLE_MAX_TOP 20
#define SAMPLE_OUT_WORDS (2 + 2 * SAMPLE_MAX_TOP)
#define SAMPLE_GREEDY 1u
#define SAMPLE_LOGPROBS 2u
#define SAMPLE_ALL 0xffffffffffffffffull

struct SampleParams {
    float inv_temperature;
    float top_p;      // >= 1 or NaN: off
    float min_p;      // <= 0 or NaN: off
    uint32_t top_k;   // 0 or >= vocab: off
    unsigned long long seed;
    unsigned long long position;
    uint32_t flags;   // SAMPLE_GREEDY | SAMPLE_LOGPROBS
    uint32_t top_n;   // <= SAMPLE_MAX_TOP
    uint32_t adjusted;  // the row's index in `adjusted`, or SAMPLE_NOT_ADJUSTED
    uint32_t pad;
};

#define SAMPLE_NOT_ADJUSTED 0xffffffffu

struct ConstrainInfo {
    uint32_t row;       // the logits row
    uint32_t mask;      // first word of its mask, or CONSTRAIN_NO_MASK
    uint32_t bias_at;   // first (token, bias) pair
    uint32_t bias_len;
};

#define CONSTRAIN_NO_MASK 0xffffffffu

struct SampleShared {
    double mass[256];
    unsigned int cnt[256];
    unsigned long long red[SAMPLE_WARPS];
    unsigned long long top[SAMPLE_MAX_TOP];
    unsigned int ntop;
    unsigned int digit;
    unsigned int bucket;
    double below;
    unsigned int pick;
};

// ---- rng.rs ----
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ double uniform01(unsigned long long seed, unsigned long long pos) {
    const unsigned long long key = mix64(seed ^ 0x6A09E667F3BCC909ull);
    const unsigned long long b = mix64(key + (pos + 1ull) * 0x9E3779B97F4A7C15ull);
    return (double)(b >> 11) * (1.0 / 9007199254740992.0);  // exact: 53 bits times 2^-53
}

// ---- math.rs exp_nonpos, operation for operation (no contraction) ----
__device__ __forceinline__ float exp_nonpos(float x) {
    const float MAGIC = 12582912.0f;
    float xc = x;
    if (xc < -87.0f) xc = -87.0f;
    if (xc > 0.0f) xc = 0.0f;
    const float t = __fadd_rn(__fmul_rn(xc, 1.44269504088896341f), MAGIC);
    const uint32_t n_bits = __float_as_uint(t) - __float_as_uint(MAGIC);
    const float n = __fsub_rn(t, MAGIC);
    const float r = __fadd_rn(__fsub_rn(xc, __fmul_rn(n, 0.6933594f)), __fmul_rn(n, 2.1219444e-4f));
    float p = 1.9875691e-4f;
    p = __fadd_rn(__fmul_rn(p, r), 1.3981999e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 8.333452e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 4.1665796e-2f);
    p = __fadd_rn(__fmul_rn(p, r), 1.6666665e-1f);
    p = __fadd_rn(__fmul_rn(p, r), 0.5f);
    const float er = __fadd_rn(__fadd_rn(__fmul_rn(__fmul_rn(p, r), r), r), 1.0f);
    const float scale = __uint_as_float((n_bits + 127u) << 23);
    return x >= -87.0f ? __fmul_rn(er, scale) : 0.0f;
}

// ---- processors.rs ----
__device__ __forceinline__ float clean(float v) {
    return isnan(v) ? -INFINITY : fminf(v, 3.40282347e+38f);
}
// The high word of `key`: ascending = larger value first.
__device__ __forceinline__ uint32_t key_hi(float v) {
    const uint32_t b = __float_as_uint(v);
    const uint32_t ordered = (b >> 31) ? ~b : (b | 0x80000000u);
    return ~ordered;
}
__device__ __forceinline__ float value_of_hi(uint32_t hi) {
    const uint32_t ordered = ~hi;
    return __uint_as_float((ordered >> 31) ? (ordered & 0x7fffffffu) : ~ordered);
}
__device__ __forceinline__ unsigned long long make_key(uint32_t hi, uint32_t id) {
    return ((unsigned long long)hi << 32) | id;
}

// ---- block reductions (SAMPLE_THREADS threads; results broadcast; `red` free on return) ----
__device__ __forceinline__ float block_max_f(float v, SampleShared& sh) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    float* red = reinterpret_cast<float*>(sh.red);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    v = red[0];
    for (int w = 1; w < SAMPLE_WARPS; w++) v = fmaxf(v, red[w]);
    __syncthreads();
    return v;
}
__device__ __forceinline__ double block_sum_d(double v, SampleShared& sh) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    double* red = reinterpret_cast<double*>(sh.red);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    v = red[0];
    for (int w = 1; w < SAMPLE_WARPS; w++) v += red[w];  // fixed order: deterministic
    __syncthreads();
    return v;
}
__device__ __forceinline__ unsigned long long block_min_u64(unsigned long long v, SampleShared& sh) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
        const unsigned long long u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u < v ? u : v;
    }
    if (threadIdx.x % 32 == 0) sh.red[threadIdx.x / 32] = v;
    __syncthreads();
    v = sh.red[0];
    for (int w = 1; w < SAMPLE_WARPS; w++) v = sh.red[w] < v ? sh.red[w] : v;
    __syncthreads();
    return v;
}
// Exclusive prefix sum over the block's threads in thread order; `*total` gets the whole sum.
// Deterministic: the warps' partial sums are always added in the same order (which, for double,
// fixes the rounding).
template <typename T>
__device__ __forceinline__ T block_excl_scan(T v, T* total, SampleShared& sh) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    T incl = v;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
        const T u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += u;
    }
    T* red = reinterpret_cast<T*>(sh.red);
    if (lane == 31) red[warp] = incl;
    __syncthreads();
    T before = 0, all = 0;
    for (int w = 0; w < SAMPLE_WARPS; w++) {
        if (w == warp) before = all;
        all += red[w];
    }
    __syncthreads();
    *total = all;
    return before + (incl - v);
}

// The sum of `v` over the lanes in `peers` (which holds the calling lane), on the lowest of them
// (the others get the sum over themselves and the peers above them). Pointer jumping: each lane
// adds the value of the peer 1, 2, 4, 8, 16 places on along the peers' list, so five rounds of
// shuffles, in a fixed order (deterministic for a given row).
__device__ __forceinline__ double peer_sum(double v, unsigned peers, int lane) {
    const unsigned above = peers & (0xfffffffeu << lane);
    int next = above ? __ffs(above) - 1 : -1;
#pragma unroll
    for (int k = 0; k < 5; k++) {
        const int src = next < 0 ? lane : next;
        const double u = __shfl_sync(0xffffffffu, v, src);
        const int after = __shfl_sync(0xffffffffu, next, src);
        if (next >= 0) {
            v += u;
            next = after;
        }
    }
    return v;
}

// The boundary key B: the smallest key such that the candidates with key <= B reach `goal`
// (a count, or with MASS a total weight). `elem(i, hi, w)` says whether token i is a candidate
// and gives its key's high word and weight; `weight_of(hi)` is the weight of the value `hi` (used
// with MASS only). SAMPLE_ALL when the candidates never reach the goal.
template <bool MASS, typename Elem, typename WeightOf>
__device__ unsigned long long select_boundary(Elem elem, WeightOf weight_of, uint32_t n, double goal,
                                              SampleShared& sh) {
    const int lane = threadIdx.x % 32;
    uint32_t prefix = 0, mask = 0;
    double below = 0.0;
    uint32_t bucket = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int j = threadIdx.x; j < 256; j += blockDim.x) {
            sh.cnt[j] = 0;
            sh.mass[j] = 0.0;
        }
        __syncthreads();
        // One shared-memory atomic per distinct digit per warp and round, the lanes that share a
        // digit pooled first: the logits of a real (or random) row crowd into a few bins of the
        // high digits, and one atomic per token would serialize on them. Every lane runs every
        // round (the pooling is warp-wide).
        const uint32_t rounds = (n + blockDim.x - 1) / blockDim.x;
        for (uint32_t r = 0; r < rounds; r++) {
            const uint32_t i = r * blockDim.x + threadIdx.x;
            uint32_t hi = 0;
            float w = 0.0f;
            const bool in = i < n && elem(i, hi, w) && (hi & mask) == prefix;
            const uint32_t d = in ? (hi >> shift) & 0xffu : 256u;  // 256: not counted
            const unsigned peers = __match_any_sync(0xffffffffu, d);
            double m = 0.0;
            if (MASS) m = peer_sum((double)w, peers, lane);
            if (in && lane == __ffs(peers) - 1) {
                atomicAdd(&sh.cnt[d], (unsigned)__popc(peers));
                if (MASS) atomicAdd(&sh.mass[d], m);
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            // Lane l owns bins [8l, 8l + 8).
            double s = 0.0;
            bool any = false;
            for (int k = 0; k < 8; k++) {
                const int b = 8 * lane + k;
                s += MASS ? sh.mass[b] : (double)sh.cnt[b];
                any |= sh.cnt[b] != 0;
            }
            double incl = s;
#pragma unroll
            for (int o = 1; o < 32; o *= 2) {
                const double u = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += u;
            }
            double excl = __shfl_up_sync(0xffffffffu, incl, 1);
            if (lane == 0) excl = 0.0;
            const unsigned hit = __ballot_sync(0xffffffffu, below + incl >= goal);
            const unsigned nonempty = __ballot_sync(0xffffffffu, any);
            // The lane holding the crossing; when rounding (or an unreachable goal) leaves no
            // crossing, the last non-empty bin: everything up to it is kept.
            const int owner = hit ? __ffs(hit) - 1 : (nonempty ? 31 - __clz(nonempty) : 0);
            if (lane == owner) {
                double c = below + excl;
                int d = -1;
                double cd = c;
                for (int k = 0; k < 8; k++) {
                    const int b = 8 * lane + k;
                    const double v = MASS ? sh.mass[b] : (double)sh.cnt[b];
                    if (sh.cnt[b] != 0) {
                        d = b;
                        cd = c;
                        if (hit && c + v >= goal) break;
                    }
                    c += v;
                }
                sh.digit = d < 0 ? 0u : (uint32_t)d;
                sh.below = cd;
                sh.bucket = d < 0 ? 0u : sh.cnt[d];
                sh.pick = (hit == 0 && shift == 24) ? 1u : 0u;  // unreachable: keep all
            }
        }
        __syncthreads();
        if (sh.pick) {
            __syncthreads();
            return SAMPLE_ALL;
        }
        prefix |= sh.digit << shift;
        mask |= 0xffu << shift;
        below = sh.below;
        bucket = sh.bucket;
        __syncthreads();
        if (bucket <= 1 || (!MASS && below + (double)bucket <= goal)) {
            return make_key(prefix | ~mask, 0xffffffffu);
        }
    }
    // `bucket` tokens share the value `prefix` (and so one weight): keep the first r by id.
    uint32_t r;
    if (MASS) {
        // The smallest r with below + r w >= goal (w: the ties' weight). A float estimate,
        // corrected with f64 products (no f64 division: a subroutine call).
        const double w = (double)weight_of(prefix);
        if (w > 0.0) {
            const float est = ceilf(__fdiv_rn((float)(goal - below), (float)w));
            r = (uint32_t)fminf(fmaxf(est, 1.0f), (float)bucket);
            while (r < bucket && below + (double)r * w < goal) r++;
            while (r > 1 && below + (double)(r - 1) * w >= goal) r--;
        } else {
            r = bucket;
        }
    } else {
        r = (uint32_t)(goal - below);
    }
    if (r >= bucket) return make_key(prefix, 0xffffffffu);
    const uint32_t chunk = (n + blockDim.x - 1) / blockDim.x;
    const uint32_t lo = min(n, threadIdx.x * chunk), hi_end = min(n, lo + chunk);
    uint32_t c = 0;
    for (uint32_t i = lo; i < hi_end; i++) {
        uint32_t hi;
        float w;
        c += (elem(i, hi, w) && hi == prefix) ? 1u : 0u;
    }
    uint32_t all_count;
    const uint32_t before = block_excl_scan(c, &all_count, sh);
    if (before < r && r <= before + c) {
        uint32_t seen = before;
        for (uint32_t i = lo; i < hi_end; i++) {
            uint32_t hi;
            float w;
            if (elem(i, hi, w) && hi == prefix && ++seen == r) {
                sh.pick = i;
                break;
            }
        }
    }
    __syncthreads();
    const uint32_t id = sh.pick;
    __syncthreads();
    return make_key(prefix, id);
}

// This thread's smallest key of elements [lo, hi) of a greedy row: argmax, NaN below
// everything (an all-NaN row gives 0), -0.0 == 0.0 (`l == max`); the minimum over the blocks
// and threads is the first maximum whatever the order they visit the row in. 16-byte loads,
// several in flight per thread: one 2-byte load per iteration, each waiting on the last, takes
// many times as long as reading the rows does.
template <typename T>
__device__ __forceinline__ unsigned long long greedy_key(const T* __restrict__ row, uint32_t lo,
                                                         uint32_t hi) {
    auto key = [lo](float v, uint32_t i) {
        const uint32_t h = isnan(v) ? 0xffffffffu : key_hi(__fadd_rn(v, 0.0f));
        return make_key(h, lo + i);
    };
    const T* x = row + lo;
    const uint32_t n = hi > lo ? hi - lo : 0;
    constexpr uint32_t V = Vec16<T>::N;
    // Elements before the row's first 16-byte boundary (rows of any length follow each other).
    const uint32_t skew = (uint32_t)(((16 - (uintptr_t)x % 16) % 16) / sizeof(T));
    const uint32_t head = skew < n ? skew : n;
    const uint32_t nvec = (n - head) / V;
    unsigned long long best = SAMPLE_ALL;
    for (uint32_t i = threadIdx.x; i < head; i += blockDim.x) {
        const unsigned long long k = key(to_f32(x[i]), i);
        best = k < best ? k : best;
    }
#pragma unroll 4
    for (uint32_t v = threadIdx.x; v < nvec; v += blockDim.x) {
        const uint32_t i0 = head + v * V;
        float f[V];
        load_vec<V>(x + i0, f);
#pragma unroll
        for (uint32_t e = 0; e < V; e++) {
            const unsigned long long k = key(f[e], i0 + e);
            best = k < best ? k : best;
        }
    }
    for (uint32_t i = head + nvec * V + threadIdx.x; i < n; i += blockDim.x) {
        const unsigned long long k = key(to_f32(x[i]), i);
        best = k < best ? k : best;
    }
    return best;
}

// A greedy row without logprobs over gridDim.y blocks (one block streams a row at a fraction of
// the bandwidth; a batch-1 step's one row would keep one SM busy): block y takes the y-th run of
// `chunk` elements, folds its first maximum into best[row] (atomicMin on the key), and the last
// block to finish (the counter, after a fence) writes the token and resets best and the counter
// for the next launch or graph replay. Runs of none are fine (a short row, many blocks).
template <typename T>
__device__ __forceinline__ void greedy_split(const T* __restrict__ x, uint32_t n, uint32_t* o,
                                             unsigned long long* best, uint32_t* counter,
                                             SampleShared& sh) {
    const uint32_t splits = gridDim.y;
    const uint32_t chunk = ((n + splits - 1) / splits + 63u) & ~63u;  // 128-byte aligned runs
    const uint32_t lo = min(blockIdx.y * chunk, n);
    const uint32_t hi = min(lo + chunk, n);
    const unsigned long long k = block_min_u64(greedy_key(x, lo, hi), sh);
    if (threadIdx.x == 0) {
        red_min(best, k);
        __threadfence();
        if (atomicAdd(counter, 1u) == splits - 1) {
            __threadfence();
            const unsigned long long all = atomicExch(best, SAMPLE_ALL);
            *counter = 0;
            o[0] = (uint32_t)all;
            o[1] = __float_as_uint(0.0f);
        }
    }
}

// The token a row's pick chooses from its values `x`: the raw row, or a constrained row's
// adjusted copy.
template <typename U>
__device__ __forceinline__ uint32_t pick_token(const U* __restrict__ x, uint32_t n,
                                               const SampleParams& p, SampleShared& sh) {
    auto no_weight = [](uint32_t) { return 0.0f; };
    if (p.flags & SAMPLE_GREEDY) {
        return (uint32_t)block_min_u64(greedy_key(x, 0, n), sh);
    } else {
        const float inv = p.inv_temperature;
        auto val = [&](uint32_t i) { return clean(__fmul_rn(to_f32(x[i]), inv)); };
        float m = -INFINITY;
        for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, val(i));
        m = block_max_f(m, sh);
        auto weight = [&](float v) { return m == -INFINITY ? 1.0f : exp_nonpos(__fsub_rn(v, m)); };
        auto weight_of = [&](uint32_t hi) { return weight(value_of_hi(hi)); };

        unsigned long long bound = SAMPLE_ALL;
        if (p.top_k > 0 && p.top_k < n) {
            auto all = [&](uint32_t i, uint32_t& hi, float& w) {
                hi = key_hi(val(i));
                w = 0.0f;
                return true;
            };
            bound = select_boundary<false>(all, no_weight, n, (double)p.top_k, sh);
        }
        if (p.top_p < 1.0f) {
            double s = 0.0;
            unsigned long long best = SAMPLE_ALL;
            for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
                const float v = val(i);
                const unsigned long long k = make_key(key_hi(v), i);
                best = k < best ? k : best;
                if (k <= bound) s += (double)weight(v);
            }
            const double total = block_sum_d(s, sh);
            best = block_min_u64(best, sh);
            const double target = (double)fmaxf(p.top_p, 0.0f) * total;
            if (target <= 0.0) {
                bound = best;
            } else {
                const unsigned long long kb = bound;
                auto within = [&](uint32_t i, uint32_t& hi, float& w) {
                    const float v = val(i);
                    hi = key_hi(v);
                    w = weight(v);
                    return make_key(hi, i) <= kb;
                };
                const unsigned long long bp = select_boundary<true>(within, weight_of, n, target, sh);
                bound = bp < bound ? bp : bound;
            }
        }
        const bool min_p_on = p.min_p > 0.0f;
        const float min_w = fminf(p.min_p, 1.0f);

        // The draw: kept tokens in id order, per-thread contiguous chunks.
        const uint32_t chunk = (n + blockDim.x - 1) / blockDim.x;
        const uint32_t lo = min(n, threadIdx.x * chunk), hi_end = min(n, lo + chunk);
        double s = 0.0;
        int last = -1;
        for (uint32_t i = lo; i < hi_end; i++) {
            const float v = val(i);
            const float w = weight(v);
            if (make_key(key_hi(v), i) <= bound && (!min_p_on || w >= min_w)) {
                s += (double)w;
                if (w > 0.0f) last = (int)i;
            }
        }
        double total;
        const double before = block_excl_scan(s, &total, sh);
        const double target = uniform01(p.seed, p.position) * total;
        const bool crosses = s > 0.0 && before + s > target;
        const unsigned long long first =
            block_min_u64(crosses ? (unsigned long long)threadIdx.x : SAMPLE_ALL, sh);
        const unsigned long long fallback =
            block_min_u64(last >= 0 ? ~(unsigned long long)last : SAMPLE_ALL, sh);
        if (first == SAMPLE_ALL) {
            if (threadIdx.x == 0) sh.pick = fallback == SAMPLE_ALL ? 0u : (uint32_t)~fallback;
        } else if (threadIdx.x == first) {
            double cum = before;
            uint32_t pick = (uint32_t)last;
            for (uint32_t i = lo; i < hi_end; i++) {
                const float v = val(i);
                const float w = weight(v);
                if (make_key(key_hi(v), i) <= bound && (!min_p_on || w >= min_w)) {
                    cum += (double)w;
                    if (cum > target) {
                        pick = i;
                        break;
                    }
                }
            }
            sh.pick = pick;
        }
        __syncthreads();
        const uint32_t token = sh.pick;
        __syncthreads();
        return token;
    }

}

template <typename T>
__device__ __forceinline__ void sample_row_impl(const T* __restrict__ logits, uint32_t n,
                                                const SampleParams* __restrict__ params,
                                                const float* __restrict__ adjusted,
                                                uint32_t* __restrict__ out,
                                                unsigned long long* __restrict__ best,
                                                uint32_t* __restrict__ counters) {
    __shared__ SampleShared sh;
    const T* x = logits + (size_t)blockIdx.x * n;
    const SampleParams p = params[blockIdx.x];
    const float* xa =
        p.adjusted == SAMPLE_NOT_ADJUSTED ? nullptr : adjusted + (size_t)p.adjusted * n;
    uint32_t* o = out + (size_t)blockIdx.x * SAMPLE_OUT_WORDS;
    auto no_weight = [](uint32_t) { return 0.0f; };

    if (gridDim.y > 1) {
        if ((p.flags & SAMPLE_GREEDY) && !(p.flags & SAMPLE_LOGPROBS)) {
            if (xa) {
                greedy_split(xa, n, o, best + blockIdx.x, counters + blockIdx.x, sh);
            } else {
                greedy_split(x, n, o, best + blockIdx.x, counters + blockIdx.x, sh);
            }
            return;
        }
        // Any other row is one block's: the rest of its blocks have nothing to do.
        if (blockIdx.y > 0) return;
    }
    const uint32_t token = xa ? pick_token(xa, n, p, sh) : pick_token(x, n, p, sh);

    float chosen_lp = 0.0f;
    if (p.flags & SAMPLE_LOGPROBS) {
        auto raw = [&](uint32_t i) { return clean(to_f32(x[i])); };
        float mr = -INFINITY;
        for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) mr = fmaxf(mr, raw(i));
        mr = block_max_f(mr, sh);
        const bool uniform = mr == -INFINITY;
        float lse = 0.0f;
        if (!uniform) {
            double s = 0.0;
            for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
                s += (double)exp_nonpos(__fsub_rn(raw(i), mr));
            }
            lse = __fadd_rn(mr, (float)log(block_sum_d(s, sh)));
        }
        const float uni = -logf((float)n);
        auto lp = [&](float v) { return uniform ? uni : __fsub_rn(v, lse); };
        chosen_lp = lp(raw(token));
        const uint32_t nt = min(p.top_n, min(n, (uint32_t)SAMPLE_MAX_TOP));
        if (nt > 0) {
            auto all = [&](uint32_t i, uint32_t& hi, float& w) {
                hi = key_hi(raw(i));
                w = 0.0f;
                return true;
            };
            const unsigned long long bn =
                nt < n ? select_boundary<false>(all, no_weight, n, (double)nt, sh) : SAMPLE_ALL;
            if (threadIdx.x == 0) sh.ntop = 0;
            __syncthreads();
            for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
                const unsigned long long k = make_key(key_hi(raw(i)), i);
                if (k <= bn) {
                    const unsigned at = atomicAdd(&sh.ntop, 1u);
                    if (at < SAMPLE_MAX_TOP) sh.top[at] = k;
                }
            }
            __syncthreads();
            if (threadIdx.x == 0) {
                const uint32_t got = min(sh.ntop, (uint32_t)SAMPLE_MAX_TOP);
                for (uint32_t a = 1; a < got; a++) {  // insertion sort: most likely first
                    const unsigned long long k = sh.top[a];
                    uint32_t b = a;
                    for (; b > 0 && sh.top[b - 1] > k; b--) sh.top[b] = sh.top[b - 1];
                    sh.top[b] = k;
                }
                for (uint32_t a = 0; a < got; a++) {
                    const unsigned long long k = sh.top[a];
                    o[2 + a] = (uint32_t)k;
                    o[2 + SAMPLE_MAX_TOP + a] = __float_as_uint(lp(value_of_hi((uint32_t)(k >> 32))));
                }
            }
        }
    }
    if (threadIdx.x == 0) {
        o[0] = token;
        o[1] = __float_as_uint(chosen_lp);
    }
}

// One constrained row's adjusted copy (see the header): the masked raw values, then its bias.
template <typename T>
__device__ __forceinline__ void constrain_row_impl(const T* __restrict__ logits, uint32_t n,
                                                   const ConstrainInfo* __restrict__ info,
                                                   const uint32_t* __restrict__ masks,
                                                   const uint32_t* __restrict__ bias,
                                                   float* __restrict__ adjusted) {
    const ConstrainInfo c = info[blockIdx.x];
    const T* x = logits + (size_t)c.row * n;
    float* a = adjusted + (size_t)blockIdx.x * n;
    const uint32_t* m = c.mask == CONSTRAIN_NO_MASK ? nullptr : masks + c.mask;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
        const bool allowed = m == nullptr || ((m[i / 32] >> (i % 32)) & 1u);
        a[i] = allowed ? to_f32(x[i]) : -INFINITY;
    }
    __syncthreads();
    // In order, by one thread: a token listed twice gets both biases, summed as the host sums
    // them. -inf plus a bias stays -inf, so masking first gives what the host's bias-then-mask
    // gives.
    if (threadIdx.x == 0) {
        for (uint32_t e = 0; e < c.bias_len; e++) {
            const uint32_t id = bias[2 * (c.bias_at + e)];
            if (id < n) a[id] = __fadd_rn(a[id], __uint_as_float(bias[2 * (c.bias_at + e) + 1]));
        }
    }
}

#define SAMPLE_ENTRIES(SUFFIX, T)                                                                 \
    extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS, 1)                                  \
        sample_rows_##SUFFIX(const T* __restrict__ logits, uint32_t vocab,                        \
                             const SampleParams* __restrict__ params,                             \
                             const float* __restrict__ adjusted, uint32_t* __restrict__ out,      \
                             unsigned long long* __restrict__ best,                               \
                             uint32_t* __restrict__ counters) {                                   \
        grid_dependency_sync();                                                                   \
        sample_row_impl<T>(logits, vocab, params, adjusted, out, best, counters);                 \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS, 1)                                  \
        constrain_rows_##SUFFIX(const T* __restrict__ logits, uint32_t vocab,                     \
                                const ConstrainInfo* __restrict__ info,                           \
                                const uint32_t* __restrict__ masks,                               \
                                const uint32_t* __restrict__ bias, float* __restrict__ adjusted) { \
        grid_dependency_sync();                                                                   \
        constrain_row_impl<T>(logits, vocab, info, masks, bias, adjusted);                        \
    }
SAMPLE_ENTRIES(f32, float)
SAMPLE_ENTRIES(bf16, bf16)
