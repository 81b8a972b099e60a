// The CUDA kernel emulator's runtime (feature `kernel-emu`; see cuda_emu.h for what it models):
// runs a launch's blocks in turn, each block's threads as fibers on this OS thread, switching at
// barriers and warp collectives. The Rust side calls `tandem_emu_launch` (device/kernel_emu.rs).
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "registry.h"

// Switching fibers: on x86-64, a few instructions that save the callee-saved registers and swap
// stacks (ucontext's swapcontext also saves the signal mask, a system call per switch, which made
// the attention tests ~3x slower); elsewhere, ucontext.
#if defined(__x86_64__)
extern "C" void tandem_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl tandem_emu_switch
    .type tandem_emu_switch, @function
tandem_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tandem_emu_switch, .-tandem_emu_switch
)");
struct Context {
    void* sp = nullptr;
};
// A fresh context on `stack` that starts in `entry` (which must never return).
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)(stack + bytes)) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;           // entry's return address slot: entry never returns
    *--sp = (void*)entry;      // popped by `ret`: rsp is then 8 mod 16, as after a call
    for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    c.sp = sp;
}
inline void switch_context(Context& from, Context& to) { tandem_emu_switch(&from.sp, to.sp); }
#else
#include <ucontext.h>
namespace tandem_emu_ctx {
struct Context {
    ucontext_t uc;
};
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
}  // namespace tandem_emu_ctx
using namespace tandem_emu_ctx;
#endif

namespace tandem_emu {
namespace {

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    Context ctx;
    dim3 tid;
    State state = State::Ready;
    unsigned warp_mask = 0;  // while AtWarpBarrier: the lanes it waits for
    bool waited = false;     // called grid_dependency_sync
};

// A fiber's stack: deep enough for the kernels' per-thread arrays and the host's libm.
constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxThreads = 1024;

struct Launch {
    const Entry* entry = nullptr;
    void** args = nullptr;
    dim3 grid{1, 1, 1}, block{1, 1, 1}, block_idx{0, 0, 0};
    // Launched as a programmatic dependent: every thread must call grid_dependency_sync.
    bool dependent = false;
    std::vector<Fiber> fibers;
    std::vector<std::unique_ptr<char[]>> stacks;
    std::vector<uint64_t> exchange;  // one slot per thread, for the warp collectives
    Context scheduler;
    Fiber* current = nullptr;
    std::string error;
};

thread_local Launch* g_launch = nullptr;

Launch& launch() { return *g_launch; }
unsigned linear(const Launch& l, const dim3& t) {
    return t.x + l.block.x * (t.y + l.block.y * t.z);
}

void park(State s) {
    Launch& l = launch();
    Fiber* f = l.current;
    f->state = s;
    switch_context(f->ctx, l.scheduler);
}

// A fiber's first frame: runs the kernel, then hands back to the scheduler for good.
void fiber_main() {
    Launch& l = launch();
    l.entry->call(l.args);
    l.current->state = State::Done;
    switch_context(l.current->ctx, l.scheduler);
    __builtin_unreachable();
}

// The lanes `mask` names in warp `w` have all reached the warp barrier (or exited).
bool warp_arrived(const Launch& l, unsigned w, unsigned mask) {
    const unsigned n = (unsigned)l.fibers.size();
    for (unsigned lane = 0; lane < 32 && w * 32 + lane < n; ++lane) {
        const State s = l.fibers[w * 32 + lane].state;
        if ((mask >> lane & 1u) && s != State::AtWarpBarrier && s != State::Done) return false;
    }
    return true;
}

// On a dependent launch, whether every thread of the block called grid_dependency_sync: one
// that did not could read its predecessor's output before it is written (or write what the
// predecessor still reads) on a GPU, where the two overlap.
bool dependency_waited(Launch& l) {
    if (!l.dependent) return true;
    for (const Fiber& f : l.fibers) {
        if (f.waited) continue;
        l.error = "thread (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," +
                  std::to_string(f.tid.z) + ") of block (" + std::to_string(l.block_idx.x) + "," +
                  std::to_string(l.block_idx.y) + "," + std::to_string(l.block_idx.z) +
                  ") of a programmatic dependent launch never called grid_dependency_sync() " +
                  "(kernels/common.cuh): every kernel must, before it touches memory";
        return false;
    }
    return true;
}

// Runs one block. Between two block barriers the warps run one at a time, in a pseudo-random
// order (seeded by the block, so a failure reproduces), each as far as it can go (to the next
// __syncthreads, or its end), its lanes in a pseudo-random order between warp collectives. So a
// kernel that reads what another warp writes in the same barrier interval (a missing
// __syncthreads) sees the other warp's write either wholly done or not begun, depending on the
// order, and one that relies on lanes running in step without __syncwarp sees them out of step.
// Returns false (with l.error set) on a deadlock.
bool run_block(Launch& l) {
    const unsigned n = (unsigned)l.fibers.size();
    const unsigned warps = (n + 31) / 32;
    std::vector<std::vector<unsigned>> ready(warps);
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = l.fibers[i];
        f.tid = {i % l.block.x, i / l.block.x % l.block.y, i / (l.block.x * l.block.y)};
        f.state = State::Ready;
        f.waited = false;
        make_context(f.ctx, l.stacks[i].get(), kStackBytes, fiber_main);
        ready[i / 32].push_back(i);
    }
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)l.block_idx.x << 40) ^
                   ((uint64_t)l.block_idx.y << 20) ^ l.block_idx.z;
    auto next = [&rng](size_t bound) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return (size_t)(rng % bound);
    };
    unsigned live = n, at_block = 0;
    std::vector<unsigned> runnable;
    for (;;) {
        runnable.clear();
        for (unsigned w = 0; w < warps; ++w)
            if (!ready[w].empty()) runnable.push_back(w);
        if (runnable.empty()) {
            if (live == 0) return dependency_waited(l);
            if (at_block != live) break;  // deadlock
            for (unsigned j = 0; j < n; ++j) {
                if (l.fibers[j].state == State::AtBlockBarrier) {
                    l.fibers[j].state = State::Ready;
                    ready[j / 32].push_back(j);
                }
            }
            at_block = 0;
            continue;
        }
        // One warp, as far as it goes.
        const unsigned w = runnable[next(runnable.size())];
        std::vector<unsigned>& lanes = ready[w];
        const unsigned width = n - w * 32 < 32 ? n - w * 32 : 32;
        unsigned waiting = 0, exited = 0;  // this warp's lanes at a warp barrier / exited
        for (unsigned o = 0; o < width; ++o) {
            waiting += l.fibers[w * 32 + o].state == State::AtWarpBarrier;
            exited += l.fibers[w * 32 + o].state == State::Done;
        }
        while (!lanes.empty()) {
            const size_t pick = next(lanes.size());
            const unsigned i = lanes[pick];
            lanes[pick] = lanes.back();
            lanes.pop_back();
            Fiber& f = l.fibers[i];
            l.current = &f;
            switch_context(l.scheduler, f.ctx);
            if (!l.error.empty()) return false;
            live -= f.state == State::Done;
            at_block += f.state == State::AtBlockBarrier;
            waiting += f.state == State::AtWarpBarrier;
            exited += f.state == State::Done;
            // An arrival or an exit can complete a warp barrier (exited lanes count as arrived):
            // every lane there (the usual full mask), or, for a partial mask, the lanes it names.
            unsigned mask = 0;
            if (waiting > 0 && waiting + exited == width) {
                mask = 0xffffffffu;
            } else if (f.state == State::AtWarpBarrier && warp_arrived(l, w, f.warp_mask)) {
                mask = f.warp_mask;
            }
            for (unsigned o = 0; mask && o < width; ++o) {
                Fiber& h = l.fibers[w * 32 + o];
                if ((mask >> o & 1u) && h.state == State::AtWarpBarrier) {
                    h.state = State::Ready;
                    lanes.push_back(w * 32 + o);
                    --waiting;
                }
            }
        }
    }
    l.error = "deadlock in block (" + std::to_string(l.block_idx.x) + "," +
              std::to_string(l.block_idx.y) + "," + std::to_string(l.block_idx.z) + "): " +
              std::to_string(at_block) + " of " + std::to_string(live) +
              " live threads wait at __syncthreads, the rest at a warp collective whose lanes " +
              "never all arrive";
    return false;
}


}  // namespace

const dim3& thread_idx() { return launch().current->tid; }
const dim3& block_idx() { return launch().block_idx; }
const dim3& block_dim() { return launch().block; }
const dim3& grid_dim() { return launch().grid; }
unsigned lane_id() { return linear(launch(), launch().current->tid) % 32; }

void sync_threads() { park(State::AtBlockBarrier); }

void grid_dependency_sync() { launch().current->waited = true; }

const uint64_t* warp_exchange(unsigned mask, uint64_t bits) {
    Launch& l = launch();
    const unsigned me = linear(l, l.current->tid);
    if (!(mask >> (me % 32) & 1u)) trap("a warp collective called by a lane outside its mask");
    // Wait until every lane has finished reading the previous exchange before overwriting it.
    l.current->warp_mask = mask;
    park(State::AtWarpBarrier);
    l.exchange[me] = bits;
    l.current->warp_mask = mask;
    park(State::AtWarpBarrier);
    return &l.exchange[me / 32 * 32];
}

void trap(const char* why) {
    Launch& l = launch();
    if (l.error.empty()) l.error = why;
    l.current->state = State::Done;
    switch_context(l.current->ctx, l.scheduler);
    __builtin_unreachable();
}

}  // namespace tandem_emu

using namespace tandem_emu;

// Runs `name` over `grid` x `block` threads with the given arguments (each `args[i]` points at
// a value of `sizes[i]` bytes, as for cuLaunchKernel); `dependent`: launched as a programmatic
// dependent, so every thread must call grid_dependency_sync. Returns 0, or -1 with a message in
// `err`.
extern "C" int tandem_emu_launch(const char* name, const uint32_t grid[3], const uint32_t block[3],
                                 void** args, const size_t* sizes, size_t nargs, int dependent,
                                 char* err, size_t err_len) {
    auto fail = [&](const std::string& m) {
        snprintf(err, err_len, "%s: %s", name, m.c_str());
        return -1;
    };
    const Entry* entry = find_entry(name);
    if (!entry) return fail("no such kernel");
    if (nargs != entry->nargs) {
        return fail("takes " + std::to_string(entry->nargs) + " arguments, given " +
                    std::to_string(nargs));
    }
    for (size_t i = 0; i < nargs; ++i) {
        if (sizes[i] != entry->sizes[i]) {
            return fail("argument " + std::to_string(i) + " is " + std::to_string(entry->sizes[i]) +
                        " bytes, given " + std::to_string(sizes[i]));
        }
    }
    const unsigned threads = block[0] * block[1] * block[2];
    if (threads == 0 || threads > kMaxThreads) return fail("block of " + std::to_string(threads) + " threads");

    Launch l;
    l.entry = entry;
    l.args = args;
    l.grid = {grid[0], grid[1], grid[2]};
    l.block = {block[0], block[1], block[2]};
    l.dependent = dependent != 0;
    l.fibers.resize(threads);
    l.exchange.assign(((threads + 31) / 32) * 32, 0);
    for (unsigned i = 0; i < threads; ++i) l.stacks.emplace_back(new char[kStackBytes]);
    g_launch = &l;
    bool ok = true;
    for (unsigned z = 0; z < grid[2] && ok; ++z)
        for (unsigned y = 0; y < grid[1] && ok; ++y)
            for (unsigned x = 0; x < grid[0] && ok; ++x) {
                l.block_idx = {x, y, z};
                ok = run_block(l);
            }
    g_launch = nullptr;
    if (!ok) return fail(l.error);
    return 0;
}
