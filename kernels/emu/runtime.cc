// The CUDA kernel emulator's runtime (feature `kernel-emu`; see cuda_emu.h for what it models).
// The Rust side calls `tandem_emu_launch` (device/kernel_emu.rs), the emulated driver too
// (fake_cuda.cc).
//
// A launch keeps up to kSlots blocks resident at once, like SMs: each slot is an OS thread (so
// each has its own `__shared__` arrays, which are thread_local) that takes the next block of a
// seeded permutation of the grid whenever its block ends, and runs the block's threads as fibers.
// Only one fiber of the whole launch runs at a time: the slots pass a baton, and at every
// __threadfence (and at one atomic in four, chosen by the generator: the histograms' shared-
// memory atomics are many and gain nothing from it) the baton holder picks, from the seeded
// generator, which resident block goes on next. So everything is deterministic per seed, and
// blocks interleave at exactly the points where correct kernels talk to each other. The other
// slots' threads start at the launch's first such point: a kernel without fences or atomics
// runs its blocks one after another on the launching thread, at no extra cost.
//
// Weak memory (memory.h): the stores a kernel marks as read by other blocks
// (`store_for_other_blocks` in kernels/common.cuh) and reductions whose result it does not use
// (`red_min`) wait in their block's buffer until the block runs a __threadfence, or the kernel
// ends; plain stores and the other atomics reach memory at once.
//
// Torn mutants (kernels/emu/mutants.rs) are built with a hook before each plain load and store
// (torn_hooks.cc). A store to where the thread loaded from since its last switch (a plain
// read-modify-write; its own stack aside) is, with the seeded generator, a switch point where the
// block is then kept out for a random number of baton passes, so other blocks may read the old
// value meanwhile and one of the two updates is lost.
#include <stdio.h>
#include <stdlib.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cuda_emu.h"
#include "fiber_context.h"
#include "registry.h"

namespace tandem_emu {
namespace {

// Torn: switched out between a plain load and a store to the same place (torn mutants only).
enum class State { Ready, Yielded, Fenced, Torn, AtBlockBarrier, AtWarpBarrier, Done };

struct Fiber {
    Context ctx;
    dim3 tid;
    State state = State::Ready;
    unsigned warp_mask = 0;  // while AtWarpBarrier: the lanes it waits for
    bool waited = false;     // called grid_dependency_sync
    // Torn mutants: where its last plain loads since its last switch read (a small ring).
    const void* loaded[4] = {};
    unsigned loads = 0;
};

// A fiber's stack: deep enough for the kernels' per-thread arrays and the host's libm.
constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxThreads = 1024;
// Blocks resident at once (a small GPU's SMs; more would only add OS threads).
constexpr unsigned kSlots = 4;
constexpr unsigned kNoSlot = ~0u;

// A store or reduction not yet visible outside its block.
struct Pending {
    void* p;
    unsigned char bytes[16];
    size_t n;
    void (*red)(void* p, uint64_t v);  // null: a store of `bytes`
};

uint64_t mix(uint64_t x) {  // splitmix64's finalizer
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

struct Xorshift {
    uint64_t s;
    size_t below(size_t bound) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return (size_t)(s % bound);
    }
};

struct Slot;

// What the slots of one launch share. Touched only by the baton holder (or under `m`).
struct Launch {
    const Entry* entry = nullptr;
    void** args = nullptr;
    dim3 grid{1, 1, 1}, block{1, 1, 1};
    // Launched as a programmatic dependent: every thread must call grid_dependency_sync.
    bool dependent = false;
    uint64_t seed = 0;
    Xorshift rng{1};
    std::vector<unsigned> order;  // block linear indices, in the order slots take them
    size_t next_block = 0;
    std::vector<std::vector<Pending>> buffers;  // per block: its writes not yet visible
    std::string error;

    std::mutex m;
    std::condition_variable cv;
    unsigned turn = kNoSlot;      // the slot holding the baton
    // Torn mutants: a slot switched out mid read-modify-write stays out for this many more
    // passes (while another slot can run), so the others may read what it is about to overwrite.
    unsigned stalled = kNoSlot;
    unsigned stall_passes = 0;
    std::vector<unsigned> active;  // slots not yet out of blocks
    // Slots 1.. and their threads, started at the first baton pass (start_slots).
    size_t slots = 1;
    std::vector<Slot>* slot_list = nullptr;
    std::vector<std::thread> threads;
};

// One resident block's place: its fibers and their stacks, reused block after block.
struct Slot {
    Launch* l = nullptr;
    unsigned id = 0;
    std::vector<Fiber> fibers;
    std::vector<std::unique_ptr<char[]>> stacks;
    std::vector<uint64_t> exchange;  // one slot per thread, for the warp collectives
    Context scheduler;
    Fiber* current = nullptr;
    dim3 block_idx{0, 0, 0};
    unsigned block_linear = 0;
};

thread_local Slot* g_slot = nullptr;

void run_slot(Slot& sl);

// Gives a slot its fibers' stacks (kept block after block).
void equip(Slot& sl, unsigned threads) {
    sl.fibers.resize(threads);
    sl.exchange.assign(((threads + 31) / 32) * 32, 0);
    for (unsigned t = 0; t < threads; ++t) sl.stacks.emplace_back(new char[kStackBytes]);
}

// Starts slots 1.. (each waits for the baton), once per launch; the baton holder calls it.
void start_slots(Launch& l) {
    if (!l.threads.empty() || l.slots < 2) return;
    std::vector<Slot>& s = *l.slot_list;
    const unsigned threads = l.block.x * l.block.y * l.block.z;
    for (unsigned i = 1; i < l.slots; ++i) {
        equip(s[i], threads);
        l.active.push_back(i);
        l.threads.emplace_back(run_slot, std::ref(s[i]));
    }
}

Slot& slot() { return *g_slot; }
unsigned linear(const Launch& l, const dim3& t) {
    return t.x + l.block.x * (t.y + l.block.y * t.z);
}

void park(State s) {
    Slot& sl = slot();
    Fiber* f = sl.current;
    f->state = s;
    f->loads = 0;
    switch_context(f->ctx, sl.scheduler);
}

// A fiber's first frame: runs the kernel, then hands back to the scheduler for good.
void fiber_main() {
    Slot& sl = slot();
    sl.l->entry->call(sl.l->args);
    sl.current->state = State::Done;
    switch_context(sl.current->ctx, sl.scheduler);
    __builtin_unreachable();
}

// Hands the baton to a slot the generator picks among the active ones (maybe this one again) and
// waits until it comes back; `leaving`: this slot has no blocks left, so it only hands on.
void pass_baton(Slot& sl, bool leaving) {
    Launch& l = *sl.l;
    if (!leaving) start_slots(l);
    std::unique_lock<std::mutex> lk(l.m);
    if (leaving) {
        for (size_t i = 0; i < l.active.size(); ++i)
            if (l.active[i] == sl.id) {
                l.active.erase(l.active.begin() + i);
                break;
            }
    }
    if (l.active.empty()) {
        l.turn = kNoSlot;
        l.cv.notify_all();
        return;
    }
    unsigned next = l.active[l.rng.below(l.active.size())];
    if (l.stall_passes > 0) {
        --l.stall_passes;
        if (next == l.stalled && l.active.size() > 1) {
            while (next == l.stalled) next = l.active[l.rng.below(l.active.size())];
        }
    }
    if (next != sl.id) {
        l.turn = next;
        l.cv.notify_all();
    }
    if (!leaving) l.cv.wait(lk, [&] { return l.turn == sl.id; });
}

// Set while the runtime itself runs code from a torn unit (a reduction's `red` in flush), where
// a switch would interleave with the runtime's own bookkeeping.
thread_local bool g_whole = false;

void flush(std::vector<Pending>& buffer) {
    g_whole = true;
    for (const Pending& w : buffer) {
        if (w.red) {
            uint64_t v = 0;
            memcpy(&v, w.bytes, w.n);
            w.red(w.p, v);
        } else {
            memcpy(w.p, w.bytes, w.n);
        }
    }
    buffer.clear();
    g_whole = false;
}

// The lanes `mask` names in warp `w` have all reached the warp barrier (or exited).
bool warp_arrived(const Slot& sl, unsigned w, unsigned mask) {
    const unsigned n = (unsigned)sl.fibers.size();
    for (unsigned lane = 0; lane < 32 && w * 32 + lane < n; ++lane) {
        const State s = sl.fibers[w * 32 + lane].state;
        if ((mask >> lane & 1u) && s != State::AtWarpBarrier && s != State::Done) return false;
    }
    return true;
}

std::string block_name(const dim3& b) {
    return "block (" + std::to_string(b.x) + "," + std::to_string(b.y) + "," +
           std::to_string(b.z) + ")";
}

// On a dependent launch, whether every thread of the block called grid_dependency_sync: one
// that did not could read its predecessor's output before it is written (or write what the
// predecessor still reads) on a GPU, where the two overlap.
bool dependency_waited(Slot& sl) {
    Launch& l = *sl.l;
    if (!l.dependent) return true;
    for (const Fiber& f : sl.fibers) {
        if (f.waited) continue;
        l.error = "thread (" + std::to_string(f.tid.x) + "," + std::to_string(f.tid.y) + "," +
                  std::to_string(f.tid.z) + ") of " + block_name(sl.block_idx) +
                  " of a programmatic dependent launch never called grid_dependency_sync() " +
                  "(kernels/common.cuh): every kernel must, before it touches memory";
        return false;
    }
    return true;
}

// Runs one block. Between two block barriers the warps run one at a time, in a pseudo-random
// order (seeded by the launch and the block, so a failure reproduces), each as far as it can go
// (to the next __syncthreads, or its end), its lanes in a pseudo-random order between warp
// collectives and atomics. So a kernel that reads what another warp writes in the same barrier
// interval (a missing __syncthreads) sees the other warp's write either wholly done or not
// begun, depending on the order, and one that relies on lanes running in step without
// __syncwarp sees them out of step. At a fence or an atomic the baton may pass to another
// resident block. Returns false (with the launch's error set) on a deadlock or a failure.
bool run_block(Slot& sl) {
    Launch& l = *sl.l;
    const unsigned n = (unsigned)sl.fibers.size();
    const unsigned warps = (n + 31) / 32;
    std::vector<std::vector<unsigned>> ready(warps);
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = sl.fibers[i];
        f.tid = {i % l.block.x, i / l.block.x % l.block.y, i / (l.block.x * l.block.y)};
        f.state = State::Ready;
        f.waited = false;
        make_context(f.ctx, sl.stacks[i].get(), kStackBytes, fiber_main);
        ready[i / 32].push_back(i);
    }
    Xorshift rng{mix(l.seed ^ ((uint64_t)sl.block_linear << 32)) | 1};
    const bool shared_baton = l.order.size() > 1;
    unsigned live = n, at_block = 0;
    std::vector<unsigned> runnable;
    for (;;) {
        runnable.clear();
        for (unsigned w = 0; w < warps; ++w)
            if (!ready[w].empty()) runnable.push_back(w);
        if (runnable.empty()) {
            if (live == 0) return dependency_waited(sl);
            if (at_block != live) break;  // deadlock
            for (unsigned j = 0; j < n; ++j) {
                if (sl.fibers[j].state == State::AtBlockBarrier) {
                    sl.fibers[j].state = State::Ready;
                    ready[j / 32].push_back(j);
                }
            }
            at_block = 0;
            continue;
        }
        // One warp, as far as it goes.
        const unsigned w = runnable[rng.below(runnable.size())];
        std::vector<unsigned>& lanes = ready[w];
        const unsigned width = n - w * 32 < 32 ? n - w * 32 : 32;
        unsigned waiting = 0, exited = 0;  // this warp's lanes at a warp barrier / exited
        for (unsigned o = 0; o < width; ++o) {
            waiting += sl.fibers[w * 32 + o].state == State::AtWarpBarrier;
            exited += sl.fibers[w * 32 + o].state == State::Done;
        }
        while (!lanes.empty()) {
            const size_t pick = rng.below(lanes.size());
            const unsigned i = lanes[pick];
            lanes[pick] = lanes.back();
            lanes.pop_back();
            Fiber& f = sl.fibers[i];
            sl.current = &f;
            switch_context(sl.scheduler, f.ctx);
            if (!l.error.empty()) return false;
            if (f.state == State::Yielded || f.state == State::Fenced || f.state == State::Torn) {
                // At a fence or an atomic: the lane goes on later; another block may go first
                // (mid read-modify-write, another block goes first).
                const bool pass = f.state != State::Yielded || rng.below(4) == 0;
                f.state = State::Ready;
                lanes.push_back(i);
                if (shared_baton && pass) pass_baton(sl, false);
                if (!l.error.empty()) return false;
                continue;
            }
            live -= f.state == State::Done;
            at_block += f.state == State::AtBlockBarrier;
            waiting += f.state == State::AtWarpBarrier;
            exited += f.state == State::Done;
            // An arrival or an exit can complete a warp barrier (exited lanes count as arrived):
            // every lane there (the usual full mask), or, for a partial mask, the lanes it names.
            unsigned mask = 0;
            if (waiting > 0 && waiting + exited == width) {
                mask = 0xffffffffu;
            } else if (f.state == State::AtWarpBarrier && warp_arrived(sl, w, f.warp_mask)) {
                mask = f.warp_mask;
            }
            for (unsigned o = 0; mask && o < width; ++o) {
                Fiber& h = sl.fibers[w * 32 + o];
                if ((mask >> o & 1u) && h.state == State::AtWarpBarrier) {
                    h.state = State::Ready;
                    lanes.push_back(w * 32 + o);
                    --waiting;
                }
            }
        }
    }
    l.error = "deadlock in " + block_name(sl.block_idx) + ": " + std::to_string(at_block) +
              " of " + std::to_string(live) +
              " live threads wait at __syncthreads, the rest at a warp collective whose lanes " +
              "never all arrive";
    return false;
}

// A slot's life: waits for the baton, then runs blocks from the launch's order until none is
// left (or the launch failed).
void run_slot(Slot& sl) {
    Launch& l = *sl.l;
    g_slot = &sl;
    {
        std::unique_lock<std::mutex> lk(l.m);
        l.cv.wait(lk, [&] { return l.turn == sl.id; });
    }
    while (l.error.empty() && l.next_block < l.order.size()) {
        const unsigned b = l.order[l.next_block++];
        sl.block_linear = b;
        sl.block_idx = {b % l.grid.x, b / l.grid.x % l.grid.y, b / (l.grid.x * l.grid.y)};
        if (!run_block(sl)) break;
    }
    g_slot = nullptr;
    if (!l.threads.empty()) pass_baton(sl, true);
}

thread_local bool g_seed_set = false;
thread_local uint64_t g_seed = 0;

// The launch's seed: the calling thread's (tandem_emu_set_seed), else TANDEM_EMU_SEED, else 1,
// mixed with the kernel's name and shape so that different launches get different orders.
uint64_t launch_seed(const char* name, const uint32_t grid[3], const uint32_t block[3]) {
    static const uint64_t from_env = [] {
        const char* s = getenv("TANDEM_EMU_SEED");
        return s ? strtoull(s, nullptr, 10) : 1ull;
    }();
    uint64_t h = mix(g_seed_set ? g_seed : from_env);
    for (const char* c = name; *c; ++c) h = mix(h ^ (unsigned char)*c);
    for (int i = 0; i < 3; ++i) h = mix(h ^ grid[i] ^ (uint64_t)block[i] << 32);
    return h;
}

}  // namespace

const dim3& thread_idx() { return slot().current->tid; }
const dim3& block_idx() { return slot().block_idx; }
const dim3& block_dim() { return slot().l->block; }
const dim3& grid_dim() { return slot().l->grid; }
unsigned lane_id() { return linear(*slot().l, slot().current->tid) % 32; }

void sync_threads() { park(State::AtBlockBarrier); }

void grid_dependency_sync() { slot().current->waited = true; }

void switch_point() { park(State::Yielded); }

void before_plain_load(const void* p) {
    Slot* sl = g_slot;
    if (!sl || !sl->current || g_whole) return;
    Fiber& f = *sl->current;
    f.loaded[f.loads++ % 4] = p;
}

void before_plain_store(const void* p) {
    Slot* sl = g_slot;
    if (!sl || !sl->current || g_whole) return;
    Fiber& f = *sl->current;
    bool rmw = false;
    for (unsigned i = 0; i < 4 && i < f.loads; ++i) rmw |= f.loaded[i] == p;
    if (!rmw) return;
    // The thread's own locals are its alone: switching inside their updates shows nothing.
    const char* stack = sl->stacks[&f - sl->fibers.data()].get();
    const char* at = static_cast<const char*>(p);
    if (at >= stack && at < stack + kStackBytes) return;
    Launch& l = *sl->l;
    if (l.rng.below(2) == 0) return;
    l.stalled = sl->id;
    l.stall_passes = 1 + (unsigned)l.rng.below(1024);
    park(State::Torn);
}

void fence() {
    Slot& sl = slot();
    flush(sl.l->buffers[sl.block_linear]);
    park(State::Fenced);
}

void buffered_store(void* p, const void* v, size_t n) {
    Slot& sl = slot();
    if (n > sizeof(Pending::bytes)) trap("store_for_other_blocks: more than 16 bytes");
    Pending w{p, {}, n, nullptr};
    memcpy(w.bytes, v, n);
    sl.l->buffers[sl.block_linear].push_back(w);
}

void buffered_red(void* p, uint64_t v, size_t n, void (*red)(void*, uint64_t)) {
    Slot& sl = slot();
    Pending w{p, {}, n, red};
    memcpy(w.bytes, &v, n);
    sl.l->buffers[sl.block_linear].push_back(w);
    park(State::Yielded);
}

const uint64_t* warp_exchange(unsigned mask, uint64_t bits) {
    Slot& sl = slot();
    const unsigned me = linear(*sl.l, sl.current->tid);
    if (!(mask >> (me % 32) & 1u)) trap("a warp collective called by a lane outside its mask");
    // Wait until every lane has finished reading the previous exchange before overwriting it.
    sl.current->warp_mask = mask;
    park(State::AtWarpBarrier);
    sl.exchange[me] = bits;
    sl.current->warp_mask = mask;
    park(State::AtWarpBarrier);
    return &sl.exchange[me / 32 * 32];
}

void trap(const char* why) {
    Slot& sl = slot();
    if (sl.l->error.empty()) sl.l->error = why;
    sl.current->state = State::Done;
    switch_context(sl.current->ctx, sl.scheduler);
    __builtin_unreachable();
}

}  // namespace tandem_emu

using namespace tandem_emu;

// Sets (or, `set` 0, clears) the calling thread's seed for its launches, over TANDEM_EMU_SEED.
extern "C" void tandem_emu_set_seed(int set, uint64_t seed) {
    g_seed_set = set != 0;
    g_seed = seed;
}

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
    l.seed = launch_seed(name, grid, block);
    l.rng = Xorshift{mix(l.seed) | 1};
    const size_t blocks = (size_t)grid[0] * grid[1] * grid[2];
    l.order.resize(blocks);
    for (size_t i = 0; i < blocks; ++i) l.order[i] = (unsigned)i;
    for (size_t i = blocks; i > 1; --i) std::swap(l.order[i - 1], l.order[l.rng.below(i)]);
    l.buffers.resize(blocks);

    // The calling thread is slot 0; the others start at the first baton pass (start_slots).
    l.slots = blocks < kSlots ? blocks : kSlots;
    std::vector<Slot> s(l.slots);
    for (unsigned i = 0; i < l.slots; ++i) {
        s[i].l = &l;
        s[i].id = i;
    }
    l.slot_list = &s;
    equip(s[0], threads);
    l.active.push_back(0);
    l.turn = 0;
    run_slot(s[0]);
    for (std::thread& t : l.threads) t.join();
    if (!l.error.empty()) return fail(l.error);
    // The kernel's end: every block's writes become visible.
    for (std::vector<Pending>& b : l.buffers) flush(b);
    return 0;
}
