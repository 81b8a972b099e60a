//! The kernel mutants the emulator must catch (tests/emu_mutants.rs): each is one kernel file
//! with one exact edit, in that file or in a header it includes. build_emu.rs compiles each into
//! the emulator's table under `<name>/<kernel>`, beside the unmutated kernels.

pub struct Mutant {
    /// The registry prefix: kernels are `<name>/<kernel>`.
    pub name: &'static str,
    /// The kernel file (under kernels/) whose kernels the mutant exports.
    pub kernels: &'static str,
    /// The file (under kernels/) edited: `kernels` itself or a header it includes.
    pub edited: &'static str,
    /// Text that occurs exactly once in `edited` (the build fails otherwise, so a mutant never
    /// silently stops mutating anything).
    pub find: &'static str,
    pub replace: &'static str,
    /// Built with every plain store a switch point (GCC's thread-sanitizer instrumentation, its
    /// hooks defined by the emulator's runtime), so another thread or block may run between a
    /// plain read and the write after it: how a lost update shows.
    pub torn: bool,
}

pub const MUTANTS: &[Mutant] = &[
    // block_sum's first barrier: warps read the per-warp sums before the others wrote them.
    Mutant {
        name: "no_syncthreads",
        kernels: "rms_norm.cu",
        edited: "common.cuh",
        find: "    if (lane == 0) scratch[warp] = v;\n    __syncthreads();\n",
        replace: "    if (lane == 0) scratch[warp] = v;\n",
        torn: false,
    },
    // warp_sum's butterfly with the wrong partner: lane + offset instead of lane ^ offset, so
    // only lane 0 ends with the total. (A partner lane ^ m for other masks m that span the 32
    // lanes, offset + 1 for one, still sums everything: not a mutant.)
    Mutant {
        name: "shuffle_partner",
        kernels: "rms_norm.cu",
        edited: "common.cuh",
        find: "v += __shfl_xor_sync(0xffffffffu, v, offset);",
        replace: "v += __shfl_down_sync(0xffffffffu, v, offset);",
        torn: false,
    },
    // The split greedy sampler without the fence between its min and its count.
    Mutant {
        name: "sampler_no_fence",
        kernels: "sampling.cu",
        edited: "sampling.cu",
        find: "        red_min(best, k);\n        __threadfence();\n",
        replace: "        red_min(best, k);\n",
        torn: false,
    },
    // The skinny GEMM's split-k without the fence between its partial sums and its count.
    Mutant {
        name: "split_k_no_fence",
        kernels: "gemm_skinny.cu",
        edited: "gemm_skinny.cu",
        find: "    __threadfence();\n    __syncthreads();\n    __shared__ bool last;\n",
        replace: "    __syncthreads();\n    __shared__ bool last;\n",
        torn: false,
    },
    // The bias add's bound off by one: thread `n` of a row writes one past it.
    Mutant {
        name: "one_past",
        kernels: "bias.cu",
        edited: "bias.cu",
        find: "if (c >= n) return;",
        replace: "if (c > n) return;",
        torn: false,
    },
    // The bias add touching memory without waiting for the kernel before it.
    Mutant {
        name: "no_dependency_wait",
        kernels: "bias.cu",
        edited: "bias.cu",
        find: "grid_dependency_sync();",
        replace: "",
        torn: false,
    },
    // The skinny GEMM unedited but built torn: the baseline the next mutant is judged against
    // (the originals must pass the same interleavings). The edit replaces a line with itself.
    Mutant {
        name: "torn_original",
        kernels: "gemm_skinny.cu",
        edited: "gemm_skinny.cu",
        find: "last = atomicAdd(&counters[blockIdx.x], 1u) == splits - 1;",
        replace: "last = atomicAdd(&counters[blockIdx.x], 1u) == splits - 1;",
        torn: true,
    },
    // The skinny GEMM's split-k counting its blocks with a plain increment: two blocks that read
    // the count before either writes it lose one, and no block merges the tile.
    Mutant {
        name: "atomic_add_plain",
        kernels: "gemm_skinny.cu",
        edited: "gemm_skinny.cu",
        find: "last = atomicAdd(&counters[blockIdx.x], 1u) == splits - 1;",
        replace: "last = counters[blockIdx.x]++ == splits - 1;",
        torn: true,
    },
];
