// A CUDA driver for machines without a GPU (features `cuda` + `kernel-emu`): the part of the
// driver API that cudarc calls for tandem's CUDA backend, over host memory, with kernels run by
// the emulator (runtime.cc). build.rs links it into `libcuda.so` (soname `libcuda.so`); loaded
// before cudarc looks for the driver (device/cuda/emulated.rs), it is the driver cudarc finds,
// so the backend's own launch code, metadata staging, streams, events and CUDA graphs run in CI.
//
// The model: one device with plenty of memory. Each stream is a queue; nothing runs when it is
// enqueued. Work runs when the host must wait for it (a stream, event or context synchronize, a
// synchronous copy) and a little at each query, one operation at a time, taken from the heads of
// the streams in a seeded random order (TANDEM_EMU_SEED) that respects only what orders them on
// the hardware: a stream's own order and cuStreamWaitEvent. So a missing wait between the copy
// and compute streams, or the host rewriting page-locked memory a queued copy has not read yet,
// or reading samples before their copy ran, shows up as wrong data. Every allocation sits between
// guard bytes, checked after each operation, and starts as NaN bytes. A captured kernel keeps its
// arguments' values at capture and a captured copy reads its source at replay, as on the
// hardware; calls a capture forbids (synchronizing, synchronous copies, allocating) fail and
// invalidate it; a stream joined to a capture must rejoin it before the capture ends. Within a
// kernel, what the kernel emulator models (cuda_emu.h). What it cannot catch: timing.
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <deque>
#include <string>
#include <vector>

#include "registry.h"

extern "C" int tandem_emu_launch(const char* name, const uint32_t grid[3], const uint32_t block[3],
                                 void** args, const size_t* sizes, size_t nargs, int dependent,
                                 char* err, size_t err_len);

#define API extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef int CUdevice;

constexpr CUresult kSuccess = 0;
constexpr CUresult kInvalidValue = 1;
constexpr CUresult kOutOfMemory = 2;
constexpr CUresult kInvalidImage = 200;
constexpr CUresult kInvalidHandle = 400;
constexpr CUresult kNotFound = 500;
constexpr CUresult kNotReady = 600;
constexpr CUresult kIllegalAddress = 700;
constexpr CUresult kLaunchFailed = 719;
constexpr CUresult kNotSupported = 801;
constexpr CUresult kCaptureUnsupported = 900;
constexpr CUresult kCaptureInvalidated = 901;
constexpr CUresult kCaptureUnjoined = 904;
constexpr CUresult kCaptureWrongThread = 908;

namespace {

// Guard bytes on both sides of every allocation; 256 also keeps the user pointer 256-aligned, as
// cudaMalloc's are (the tensor-core kernels need 32-byte alignment).
constexpr size_t kGuard = 256;
constexpr unsigned char kGuardByte = 0xA5;
constexpr size_t kTotalMemory = size_t(16) << 30;

using Op = std::function<CUresult()>;

struct Graph {
    std::vector<Op> ops;
};

struct Stream;

struct Capture {
    uint64_t id;
    Graph* graph;
    Stream* origin;
    int mode;  // 0 global, 1 thread-local, 2 relaxed (CUstreamCaptureMode)
    pthread_t thread;
    bool invalidated = false;
    // Streams that joined by waiting on an event recorded in the capture, and whether each has
    // work the capture has not waited for yet.
    std::map<Stream*, bool> joined;
};

struct Event;

// A queued operation, or (no `op`) a wait until `event` has completed its record number `gen`.
struct Item {
    Op op;
    Event* event = nullptr;
    uint64_t gen = 0;
};

struct Stream {
    std::deque<Item> queue;  // enqueued, not run yet
    Capture* capture = nullptr;
    // Operations recorded on this stream while it is in a capture (to tell whether an event
    // recorded on it covers all of them).
    size_t captured_ops = 0;
    // Kernels launched on it as programmatic dependents (tandem_fake_cuda_dependent_launches).
    uint64_t dependent_launches = 0;
};

struct Event {
    uint64_t recorded = 0;   // cuEventRecord calls outside captures
    uint64_t completed = 0;  // the latest of them that has run
    double time_ms = 0;
    uint64_t capture = 0;    // the capture it was last recorded in (0: none)
    Stream* stream = nullptr;
    size_t seq = 0;
};

struct Module {
    std::set<std::string> entries;
};

struct Function {
    const tandem_emu::Entry* entry;
};

struct Allocation {
    unsigned char* raw;
    size_t bytes;
};

std::recursive_mutex g_mutex;  // ops run under it (they never call back in)
std::vector<Stream*> g_streams;  // live streams, in creation order, for the scheduler
std::map<uint64_t, Capture*> g_captures;  // active captures by id
std::map<uintptr_t, size_t> g_pinned;     // page-locked host ranges (cuMemHostAlloc), by start
uint64_t g_next_capture = 1;
std::map<uintptr_t, Allocation> g_allocs;  // by user pointer
size_t g_allocated = 0;
CUresult g_sticky = kSuccess;  // a failed kernel poisons the context, as on the hardware
Stream g_default_stream;
thread_local int t_capturing = 0;  // captures this thread began in thread-local or global mode
int g_global_captures = 0;

double now_ms() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

Stream* stream_of(void* s) { return s ? static_cast<Stream*>(s) : &g_default_stream; }

void report(const std::string& m) { fprintf(stderr, "emulated CUDA: %s\n", m.c_str()); }

// Whether [p, p + n) lies in page-locked memory: only there are copies asynchronous for the host.
bool pinned(const void* p, size_t n) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    auto it = g_pinned.upper_bound(uintptr_t(p));
    if (it == g_pinned.begin()) return false;
    --it;
    return uintptr_t(p) + n <= it->first + it->second;
}

// A call a capture forbids: fails and invalidates the captures it would have broken.
bool forbidden_while_capturing(const char* what) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    if (t_capturing == 0 && g_global_captures == 0) return false;
    report(std::string(what) + " while a stream is being captured");
    for (auto& [id, c] : g_captures)
        if (c->mode == 0 || (c->mode == 1 && pthread_equal(c->thread, pthread_self())))
            c->invalidated = true;
    return true;
}

// Checks every live allocation's guard bytes; names the first one written outside its bounds.
CUresult check_guards(const char* after) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    for (auto& [user, a] : g_allocs) {
        for (size_t i = 0; i < kGuard; ++i) {
            bool before = a.raw[i] != kGuardByte;
            bool past = a.raw[kGuard + a.bytes + i] != kGuardByte;
            if (before || past) {
                char m[256];
                snprintf(m, sizeof m,
                         "%s wrote %s an allocation of %zu bytes at 0x%lx (byte %zd)", after,
                         before ? "before" : "past", a.bytes, (unsigned long)user,
                         before ? ssize_t(i) - ssize_t(kGuard) : ssize_t(a.bytes + i));
                report(m);
                memset(a.raw, kGuardByte, kGuard);
                memset(a.raw + kGuard + a.bytes, kGuardByte, kGuard);
                g_sticky = kIllegalAddress;
                return kIllegalAddress;
            }
        }
    }
    return kSuccess;
}

std::mt19937_64& rng() {
    static std::mt19937_64 r([] {
        const char* seed = getenv("TANDEM_EMU_SEED");
        return seed ? strtoull(seed, nullptr, 10) : 1;
    }());
    return r;
}

bool runnable(const Stream* s) {
    if (s->queue.empty()) return false;
    const Item& head = s->queue.front();
    return !head.event || head.event->completed >= head.gen;
}

// Runs the head of one stream that can go on, chosen at random; false when none can. After a
// failure (the context's sticky error) what follows is dropped unrun, as on the hardware.
bool run_one() {
    std::vector<Stream*> ready;
    for (Stream* s : g_streams)
        if (runnable(s)) ready.push_back(s);
    if (ready.empty()) return false;
    Stream* s = ready[rng()() % ready.size()];
    Item item = std::move(s->queue.front());
    s->queue.pop_front();
    if (item.op && g_sticky == kSuccess) {
        CUresult r = item.op();
        if (r != kSuccess) g_sticky = r;
    }
    return true;
}

bool all_idle() {
    for (Stream* s : g_streams)
        if (!s->queue.empty()) return false;
    return true;
}

// Runs queued operations until `done()`: what the host waits for.
CUresult run_until(const std::function<bool()>& done) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    while (!done()) {
        if (!run_one()) {
            report("deadlock: the host waits for work that waits on an event nothing will record");
            g_sticky = kLaunchFailed;
            break;
        }
    }
    return g_sticky;
}

// A query: the device gets on with a few operations, then the answer.
bool progress_then(const std::function<bool()>& done) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    for (int n = int(rng()() % 4); n > 0 && !done() && run_one(); --n) {
    }
    return done();
}

// Queues `op` on `stream`, or records it when the stream is being captured. The legacy default
// stream (0) waits for every other stream first and runs at once.
CUresult enqueue(void* stream, Op op) {
    Stream* s = stream_of(stream);
    {
        std::lock_guard<std::recursive_mutex> l(g_mutex);
        if (g_sticky != kSuccess) return g_sticky;
        if (s->capture) {
            if (s->capture->invalidated) return kCaptureInvalidated;
            s->capture->graph->ops.push_back(std::move(op));
            s->captured_ops++;
            auto j = s->capture->joined.find(s);
            if (j != s->capture->joined.end()) j->second = true;
            return kSuccess;
        }
        if (stream) {
            s->queue.push_back(Item{std::move(op)});
            return kSuccess;
        }
    }
    if (CUresult r = run_until(all_idle); r != kSuccess) return r;
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    return g_sticky = op();
}

// A host call that waits for all work (synchronous copies, cuCtxSynchronize, cuMemFree).
CUresult sync_point(const char* what) {
    if (forbidden_while_capturing(what)) return kCaptureUnsupported;
    return run_until(all_idle);
}

CUresult allocate(CUdeviceptr* dptr, size_t bytes) {
    if (!dptr) return kInvalidValue;
    size_t n = bytes ? bytes : 1;
    auto* raw = static_cast<unsigned char*>(aligned_alloc(256, (n + 2 * kGuard + 255) / 256 * 256));
    if (!raw) return kOutOfMemory;
    memset(raw, kGuardByte, kGuard);
    memset(raw + kGuard, 0xFF, n);  // NaN in f32 and bf16: reading what nobody wrote shows
    memset(raw + kGuard + n, kGuardByte, kGuard);
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    g_allocs[uintptr_t(raw + kGuard)] = Allocation{raw, n};
    g_allocated += n;
    *dptr = CUdeviceptr(raw + kGuard);
    return kSuccess;
}

CUresult release(CUdeviceptr p) {
    if (!p) return kSuccess;
    if (CUresult r = check_guards("a kernel or copy"); r != kSuccess) return r;
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    auto it = g_allocs.find(uintptr_t(p));
    if (it == g_allocs.end()) {
        report("freeing an address that was never allocated");
        return kInvalidValue;
    }
    g_allocated -= it->second.bytes;
    free(it->second.raw);
    g_allocs.erase(it);
    return kSuccess;
}

CUresult copy(void* dst, const void* src, size_t n) {
    memcpy(dst, src, n);
    return check_guards("a copy");
}

template <typename T> CUresult fill(CUdeviceptr dst, T value, size_t n, void* stream) {
    return enqueue(stream, [=]() {
        T* p = reinterpret_cast<T*>(dst);
        for (size_t i = 0; i < n; ++i) p[i] = value;
        return check_guards("a memset");
    });
}

// The kernel names a PTX module defines: `.entry NAME(`.
std::set<std::string> ptx_entries(const char* ptx) {
    std::set<std::string> names;
    const char* p = ptx;
    while ((p = strstr(p, ".entry")) != nullptr) {
        p += 6;
        while (*p == ' ' || *p == '\t') ++p;
        const char* start = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
               *p == '_' || *p == '$')
            ++p;
        if (p > start) names.emplace(start, p);
    }
    return names;
}

}  // namespace

// ---- device and context ----

API CUresult cuInit(unsigned) { return kSuccess; }
API CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return kSuccess;
}
API CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return kSuccess;
}
API CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return 101;  // CUDA_ERROR_INVALID_DEVICE
    *d = 0;
    return kSuccess;
}
API CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    snprintf(name, len, "tandem emulated CUDA device (CPU)");
    return kSuccess;
}
API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = kTotalMemory;
    return kSuccess;
}
API CUresult cuDeviceGetAttribute(int* v, int attribute, CUdevice) {
    switch (attribute) {
        case 16: *v = 4; break;      // multiprocessors: a few, so split heuristics split
        case 75: *v = 9; break;      // compute capability 9.0
        case 76: *v = 0; break;
        case 115: *v = 0; break;     // no memory pools: cudarc allocates synchronously
        case 1: *v = 1024; break;    // max threads per block
        case 10: *v = 32; break;     // warp size
        case 8: *v = 48 << 10; break;  // shared memory per block
        case 38: *v = 1 << 20; break;  // L2 cache bytes (the GEMM tuner flushes twice that)
        default: *v = 0;
    }
    return kSuccess;
}
// Resident blocks per SM: 2048 threads' worth, at most 16 (no register or shared memory
// accounting: the emulated device has no such limits).
API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* n, void*, int block,
                                                                  size_t, unsigned) {
    if (!n || block < 1) return kInvalidValue;
    *n = 2048 / block < 16 ? 2048 / block : 16;
    if (*n < 1) *n = 1;
    return kSuccess;
}
API CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice) {
    static int the_context;
    *ctx = &the_context;
    return kSuccess;
}
API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return kSuccess; }
API CUresult cuCtxSetCurrent(void*) { return kSuccess; }
API CUresult cuCtxGetCurrent(void** ctx) { return cuDevicePrimaryCtxRetain(ctx, 0); }
API CUresult cuCtxGetDevice(CUdevice* d) {
    *d = 0;
    return kSuccess;
}
API CUresult cuCtxSynchronize() { return sync_point("cuCtxSynchronize"); }
API CUresult cuGetErrorString(CUresult e, const char** s) {
    static thread_local char buf[64];
    snprintf(buf, sizeof buf, "emulated CUDA error %d", e);
    *s = buf;
    return kSuccess;
}
API CUresult cuGetErrorName(CUresult e, const char** s) { return cuGetErrorString(e, s); }

// ---- memory ----

API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    *total = kTotalMemory;
    *free_bytes = kTotalMemory > g_allocated ? kTotalMemory - g_allocated : 0;
    return kSuccess;
}
API CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
    if (forbidden_while_capturing("cuMemAlloc")) return kCaptureUnsupported;
    return allocate(p, n);
}
API CUresult cuMemAllocAsync(CUdeviceptr* p, size_t n, void* stream) {
    // The forward pass allocates nothing (its workspace is sized up front), so a graph never
    // holds an allocation: one inside a capture is a bug.
    if (stream_of(stream)->capture) {
        report("allocating inside a captured stream");
        return kCaptureUnsupported;
    }
    return allocate(p, n);
}
API CUresult cuMemFree_v2(CUdeviceptr p) {
    if (CUresult r = sync_point("cuMemFree"); r != kSuccess) return r;
    return release(p);
}
API CUresult cuMemFreeAsync(CUdeviceptr p, void* stream) {
    if (stream_of(stream)->capture) {
        report("freeing inside a captured stream");
        return kCaptureUnsupported;
    }
    return enqueue(stream, [p]() { return release(p); });
}
API CUresult cuMemHostAlloc(void** p, size_t n, unsigned) {
    *p = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    if (!*p) return kOutOfMemory;
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    g_pinned[uintptr_t(*p)] = n;
    return kSuccess;
}
API CUresult cuMemAllocHost_v2(void** p, size_t n) { return cuMemHostAlloc(p, n, 0); }
API CUresult cuMemFreeHost(void* p) {
    {
        std::lock_guard<std::recursive_mutex> l(g_mutex);
        g_pinned.erase(uintptr_t(p));
    }
    free(p);
    return kSuccess;
}
API CUresult cuMemHostRegister_v2(void* p, size_t n, unsigned) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    g_pinned[uintptr_t(p)] = n;
    return kSuccess;
}
API CUresult cuMemHostUnregister(void* p) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    g_pinned.erase(uintptr_t(p));
    return kSuccess;
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    if (CUresult r = sync_point("cuMemcpyHtoD"); r != kSuccess) return r;
    return copy(reinterpret_cast<void*>(dst), src, n);
}
API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    if (CUresult r = sync_point("cuMemcpyDtoH"); r != kSuccess) return r;
    return copy(dst, reinterpret_cast<const void*>(src), n);
}
API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    if (CUresult r = sync_point("cuMemcpyDtoD"); r != kSuccess) return r;
    return copy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
}
// From page-locked memory a copy reads its source when it runs (at replay, for a captured one),
// so the host must not rewrite it before then; from pageable memory the call takes the bytes at
// once, as the driver stages them.
API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* stream) {
    if (pinned(src, n))
        return enqueue(stream, [=]() { return copy(reinterpret_cast<void*>(dst), src, n); });
    auto bytes = std::make_shared<std::vector<unsigned char>>(
        static_cast<const unsigned char*>(src), static_cast<const unsigned char*>(src) + n);
    return enqueue(stream,
                   [=]() { return copy(reinterpret_cast<void*>(dst), bytes->data(), n); });
}
// Into page-locked memory a copy lands when it runs; the host must wait for it. Into pageable
// memory the call returns once it is done, as the driver's does.
API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* stream) {
    CUresult r =
        enqueue(stream, [=]() { return copy(dst, reinterpret_cast<const void*>(src), n); });
    if (r != kSuccess || pinned(dst, n) || !stream || stream_of(stream)->capture) return r;
    Stream* s = stream_of(stream);
    return run_until([s] { return s->queue.empty(); });
}
API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void* stream) {
    return enqueue(stream, [=]() {
        return copy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
    });
}
API CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, void* stream) {
    return fill<unsigned char>(p, v, n, stream);
}
API CUresult cuMemsetD16Async(CUdeviceptr p, unsigned short v, size_t n, void* stream) {
    return fill<unsigned short>(p, v, n, stream);
}
API CUresult cuMemsetD32Async(CUdeviceptr p, unsigned v, size_t n, void* stream) {
    return fill<unsigned>(p, v, n, stream);
}
API CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) {
    if (CUresult r = sync_point("cuMemsetD8"); r != kSuccess) return r;
    return fill<unsigned char>(p, v, n, nullptr);
}

// ---- streams and events ----

API CUresult cuStreamCreate(void** s, unsigned) {
    auto* stream = new Stream();
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    g_streams.push_back(stream);
    *s = stream;
    return kSuccess;
}
API CUresult cuStreamCreateWithPriority(void** s, unsigned, int) { return cuStreamCreate(s, 0); }
API CUresult cuStreamDestroy_v2(void* stream) {
    // The stream's queued work still runs (as on the hardware), then it goes.
    Stream* s = static_cast<Stream*>(stream);
    run_until([s] { return s->queue.empty(); });
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    g_streams.erase(std::find(g_streams.begin(), g_streams.end(), s));
    delete s;
    return kSuccess;
}
API CUresult cuStreamSynchronize(void* stream) {
    if (forbidden_while_capturing("cuStreamSynchronize")) return kCaptureUnsupported;
    if (!stream) return run_until(all_idle);
    Stream* s = static_cast<Stream*>(stream);
    return run_until([s] { return s->queue.empty(); });
}
API CUresult cuStreamQuery(void* stream) {
    if (forbidden_while_capturing("cuStreamQuery")) return kCaptureUnsupported;
    Stream* s = stream_of(stream);
    bool done = progress_then([s] { return s->queue.empty(); });
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    if (g_sticky != kSuccess) return g_sticky;
    return done ? kSuccess : kNotReady;
}

API CUresult cuEventCreate(void** e, unsigned) {
    *e = new Event();
    return kSuccess;
}
API CUresult cuEventDestroy_v2(void* e) {
    delete static_cast<Event*>(e);
    return kSuccess;
}
API CUresult cuEventRecord(void* event, void* stream) {
    Event* e = static_cast<Event*>(event);
    Stream* s = stream_of(stream);
    uint64_t gen = 0;
    {
        std::lock_guard<std::recursive_mutex> l(g_mutex);
        e->capture = s->capture ? s->capture->id : 0;
        e->stream = s;
        e->seq = s->captured_ops;
        if (!s->capture) gen = ++e->recorded;
    }
    return enqueue(stream, [e, gen]() {
        if (gen > e->completed) e->completed = gen;
        e->time_ms = now_ms();
        return kSuccess;
    });
}
API CUresult cuEventRecordWithFlags(void* e, void* s, unsigned) { return cuEventRecord(e, s); }
bool event_done(const Event* e) { return e->completed >= e->recorded; }
API CUresult cuEventSynchronize(void* event) {
    if (forbidden_while_capturing("cuEventSynchronize")) return kCaptureUnsupported;
    Event* e = static_cast<Event*>(event);
    return run_until([e] { return event_done(e); });
}
API CUresult cuEventQuery(void* event) {
    if (forbidden_while_capturing("cuEventQuery")) return kCaptureUnsupported;
    Event* e = static_cast<Event*>(event);
    bool done = progress_then([e] { return event_done(e); });
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    if (g_sticky != kSuccess) return g_sticky;
    return done ? kSuccess : kNotReady;
}
API CUresult cuEventElapsedTime(float* ms, void* start, void* end) {
    Event *a = static_cast<Event*>(start), *b = static_cast<Event*>(end);
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    if (!a->completed || !b->completed || !event_done(a) || !event_done(b)) return kNotReady;
    *ms = float(b->time_ms - a->time_ms);
    return kSuccess;
}
API CUresult cuEventElapsedTime_v2(float* ms, void* start, void* end) {
    return cuEventElapsedTime(ms, start, end);
}
// Outside captures: the stream's later work waits until the event's latest record has run.
// Waiting on an event recorded inside a capture joins the waiting stream to that capture (and,
// from a stream already in it, covers the recording stream's work up to the event).
API CUresult cuStreamWaitEvent(void* stream, void* event, unsigned) {
    Stream* s = stream_of(stream);
    Event* e = static_cast<Event*>(event);
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    auto active = g_captures.find(e->capture);
    if (e->capture == 0 || active == g_captures.end()) {
        if (s->capture) {
            report("a captured stream waits on an event recorded outside the capture");
            s->capture->invalidated = true;
            return 905;  // CUDA_ERROR_STREAM_CAPTURE_ISOLATION
        }
        if (e->recorded > e->completed && stream) s->queue.push_back(Item{Op(), e, e->recorded});
        return kSuccess;
    }
    Capture* c = active->second;
    if (s->capture && s->capture != c) return 902;  // CUDA_ERROR_STREAM_CAPTURE_MERGE
    if (!s->capture) {
        s->capture = c;
        s->captured_ops = 0;
        c->joined[s] = false;
    }
    auto j = c->joined.find(e->stream);
    if (j != c->joined.end() && e->seq == e->stream->captured_ops) j->second = false;
    return kSuccess;
}

// ---- graphs ----

API CUresult cuStreamBeginCapture_v2(void* stream, int mode) {
    Stream* s = stream_of(stream);
    if (!stream) return kCaptureUnsupported;  // the legacy default stream cannot be captured
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    if (s->capture || mode < 0 || mode > 2) return kInvalidValue;
    s->capture = new Capture{g_next_capture++, new Graph(), s, mode, pthread_self(), false, {}};
    g_captures[s->capture->id] = s->capture;
    s->captured_ops = 0;
    if (mode == 0) g_global_captures++;
    if (mode != 2) t_capturing++;
    return kSuccess;
}
API CUresult cuStreamBeginCapture(void* stream, int mode) {
    return cuStreamBeginCapture_v2(stream, mode);
}
API CUresult cuStreamIsCapturing(void* stream, int* status) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    Capture* c = stream_of(stream)->capture;
    *status = !c ? 0 : c->invalidated ? 2 : 1;
    return kSuccess;
}
API CUresult cuStreamEndCapture(void* stream, void** graph) {
    Stream* s = stream_of(stream);
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    Capture* c = s->capture;
    if (!c || c->origin != s) return 903;  // CUDA_ERROR_STREAM_CAPTURE_UNMATCHED
    if (c->mode != 2 && !pthread_equal(c->thread, pthread_self())) return kCaptureWrongThread;
    bool unjoined = false;
    for (auto& [joined, pending] : c->joined) {
        unjoined |= pending;
        joined->capture = nullptr;
    }
    s->capture = nullptr;
    g_captures.erase(c->id);
    if (c->mode == 0) g_global_captures--;
    if (c->mode != 2) t_capturing--;
    std::unique_ptr<Capture> done(c);
    if (c->invalidated) {
        delete c->graph;
        *graph = nullptr;
        return kCaptureInvalidated;
    }
    if (unjoined) {
        report("a stream joined to the capture has work the capture never waited for");
        delete c->graph;
        *graph = nullptr;
        return kCaptureUnjoined;
    }
    *graph = c->graph;
    return kSuccess;
}
API CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
    *exec = new Graph(*static_cast<Graph*>(graph));
    return kSuccess;
}
API CUresult cuGraphDestroy(void* graph) {
    delete static_cast<Graph*>(graph);
    return kSuccess;
}
API CUresult cuGraphExecDestroy(void* exec) {
    delete static_cast<Graph*>(exec);
    return kSuccess;
}
API CUresult cuGraphUpload(void*, void*) { return kSuccess; }
API CUresult cuGraphLaunch(void* exec, void* stream) {
    Graph* g = static_cast<Graph*>(exec);
    return enqueue(stream, [g]() {
        for (auto& op : g->ops)
            if (CUresult r = op(); r != kSuccess) return r;
        return kSuccess;
    });
}

// ---- modules and kernels ----

API CUresult cuModuleLoadData(void** module, const void* image) {
    auto* m = new Module{ptx_entries(static_cast<const char*>(image))};
    if (m->entries.empty()) {
        delete m;
        return kInvalidImage;
    }
    *module = m;
    return kSuccess;
}
API CUresult cuModuleUnload(void* module) {
    delete static_cast<Module*>(module);
    return kSuccess;
}
API CUresult cuModuleGetFunction(void** f, void* module, const char* name) {
    if (!static_cast<Module*>(module)->entries.count(name)) return kNotFound;
    const tandem_emu::Entry* entry = tandem_emu::find_entry(name);
    if (!entry) {
        report(std::string("the PTX defines ") + name + ", which the emulator did not build");
        return kNotFound;
    }
    *f = new Function{entry};
    return kSuccess;
}
API CUresult cuFuncGetAttribute(int* v, int, void*) {
    *v = 0;
    return kSuccess;
}
API CUresult cuFuncSetAttribute(void*, int, int) { return kSuccess; }

// The arguments are copied now: a captured launch replays with the values it was captured with.
// `dependent`: launched with programmatic stream serialization allowed (cuLaunchKernelEx), which
// the emulator honours by checking that every thread waits on its predecessor (runtime.cc).
CUresult launch_kernel(void* f, const unsigned grid_dims[3], const unsigned block_dims[3],
                       unsigned shared_bytes, void* stream, void** params, bool dependent) {
    const tandem_emu::Entry* entry = static_cast<Function*>(f)->entry;
    const unsigned gx = grid_dims[0], gy = grid_dims[1], gz = grid_dims[2];
    const unsigned bx = block_dims[0], by = block_dims[1], bz = block_dims[2];
    const uint64_t threads = uint64_t(bx) * by * bz;
    if (shared_bytes > 0 || !gx || !gy || !gz || gy > 65535 || gz > 65535 || !threads ||
        threads > 1024 || bz > 64) {
        report(std::string(entry->name) + ": invalid launch: grid " + std::to_string(gx) + "x" +
               std::to_string(gy) + "x" + std::to_string(gz) + ", block " + std::to_string(bx) +
               "x" + std::to_string(by) + "x" + std::to_string(bz));
        return kInvalidValue;
    }
    if (entry->nargs > 0 && !params) return kInvalidValue;
    std::vector<size_t> offsets;
    size_t total = 0;
    for (size_t i = 0; i < entry->nargs; ++i) {
        offsets.push_back(total);
        total += (entry->sizes[i] + 7) / 8 * 8;
    }
    auto values = std::make_shared<std::vector<uint64_t>>(total / 8 + 1);
    auto* bytes = reinterpret_cast<unsigned char*>(values->data());
    for (size_t i = 0; i < entry->nargs; ++i) memcpy(bytes + offsets[i], params[i], entry->sizes[i]);
    if (dependent) {
        std::lock_guard<std::recursive_mutex> l(g_mutex);
        stream_of(stream)->dependent_launches++;
    }
    return enqueue(stream, [=]() {
        std::vector<void*> args;
        auto* b = reinterpret_cast<unsigned char*>(values->data());
        for (size_t off : offsets) args.push_back(b + off);
        const uint32_t grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
        char err[512];
        if (tandem_emu_launch(entry->name, grid, block, args.data(), entry->sizes, entry->nargs,
                              dependent, err, sizeof err) != 0) {
            report(err);
            std::lock_guard<std::recursive_mutex> l(g_mutex);
            g_sticky = kLaunchFailed;
            return kLaunchFailed;
        }
        return check_guards(entry->name);
    });
}

API CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                            unsigned by, unsigned bz, unsigned shared_bytes, void* stream,
                            void** params, void** extra) {
    if (extra) return kInvalidValue;
    const unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    return launch_kernel(f, grid, block, shared_bytes, stream, params, false);
}

// CUlaunchAttribute and CUlaunchConfig (cuda.h, CUDA 12-13), as far as the fake reads them.
struct LaunchAttribute {
    int id;
    char pad[4];
    union {
        char bytes[64];
        int value;
    };
};
struct LaunchConfig {
    unsigned grid[3], block[3], shared_bytes;
    void* stream;
    LaunchAttribute* attrs;
    unsigned num_attrs;
};
static_assert(sizeof(LaunchAttribute) == 72, "CUlaunchAttribute is 72 bytes");
static_assert(sizeof(LaunchConfig) == 56, "CUlaunchConfig is 56 bytes");
constexpr int kAttrProgrammaticStreamSerialization = 6;

// Only the attribute tandem sets is accepted, so a new one is noticed here first.
API CUresult cuLaunchKernelEx(const LaunchConfig* config, void* f, void** params, void** extra) {
    if (!config || extra || (config->num_attrs > 0 && !config->attrs)) return kInvalidValue;
    bool dependent = false;
    for (unsigned i = 0; i < config->num_attrs; ++i) {
        const LaunchAttribute& a = config->attrs[i];
        if (a.id != kAttrProgrammaticStreamSerialization || (a.value != 0 && a.value != 1)) {
            report("cuLaunchKernelEx: unsupported launch attribute " + std::to_string(a.id) +
                   " = " + std::to_string(a.value));
            return kInvalidValue;
        }
        dependent = a.value == 1;
    }
    // A driver without programmatic dependent launch, for the backend's fallback test.
    static const bool refuse = getenv("TANDEM_EMU_REFUSE_PDL") != nullptr;
    if (dependent && refuse) return kNotSupported;
    return launch_kernel(f, config->grid, config->block, config->shared_bytes, config->stream,
                         params, dependent);
}

// Kernels launched on `stream` as programmatic dependents so far, eagerly or into a capture
// (tests check that the backend asks for it, and only when it should).
API uint64_t tandem_fake_cuda_dependent_launches(void* stream) {
    std::lock_guard<std::recursive_mutex> l(g_mutex);
    return stream_of(stream)->dependent_launches;
}

// ---- for the emulated cuBLAS (fake_cublas.cc) ----

// Runs `op(data)` in stream order (recorded into a capture like any other operation); `data` is
// the callee's to free (`drop(data)`) once the operation can no longer run.
API CUresult tandem_fake_cuda_enqueue(void* stream, CUresult (*op)(void*), void* data,
                                      void (*drop)(void*)) {
    std::shared_ptr<void> owned(data, drop);
    return enqueue(stream, [op, owned]() {
        CUresult r = op(owned.get());
        if (r != kSuccess) return r;
        return check_guards("a cuBLAS GEMM");
    });
}
