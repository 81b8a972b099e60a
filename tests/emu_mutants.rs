//! The kernel emulator's claims (README, "The CUDA kernels without a GPU"), each shown on a
//! mutant (kernels/emu/mutants.rs: one exact edit of a kernel or a header it includes, built
//! beside the originals as `<mutant>/<kernel>`): the unmutated kernel passes a check under every
//! seed, and the mutant fails the same check (a wrong result, a launch error, a write outside
//! its buffer) under at least one. A mutant the emulator lets through fails its test.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::rngs::StdRng;
use rand::SeedableRng;

use common::emu::*;
use common::kernel_cases::SamplingBatch;
use tandem::device::cpu;
use tandem::device::kernel_emu::set_thread_seed;

/// The emulator seeds each mutant is tried under (they pick block and warp orders and where
/// blocks interleave).
const SEEDS: [u64; 4] = [1, 2, 3, 4];

fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap()
}

/// Runs `check` (which panics on any failure) on the kernels under `prefix` ("" for the
/// originals) with `seed`; the panic's message, if it failed.
fn failure(check: &dyn Fn(&str), prefix: &str, seed: u64) -> Option<String> {
    set_thread_seed(Some(seed));
    let r = catch_unwind(AssertUnwindSafe(|| check(prefix)));
    set_thread_seed(None);
    r.err().map(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// The originals pass `check` under every seed; `mutant`'s kernels fail it under at least one,
/// with a message containing `expect` (what catches it).
fn assert_caught(mutant: &str, expect: &str, check: &dyn Fn(&str)) {
    assert_caught_against("", mutant, expect, check);
}

/// As [`assert_caught`], the originals being the kernels under `original` ("" for the ordinary
/// build; a torn mutant is judged against the unedited kernel built torn).
fn assert_caught_against(original: &str, mutant: &str, expect: &str, check: &dyn Fn(&str)) {
    for seed in SEEDS {
        if let Some(e) = failure(check, original, seed) {
            assert!(!e.contains("no such kernel"), "{original}: {e}");
            panic!("the unmutated kernel ({original:?}) fails under seed {seed}: {e}");
        }
    }
    let prefix = format!("{mutant}/");
    let mut messages = Vec::new();
    for seed in SEEDS {
        if let Some(e) = failure(check, &prefix, seed) {
            assert!(!e.contains("no such kernel"), "{mutant}: {e}");
            println!("{mutant}: caught under seed {seed}: {e}");
            messages.push(e);
        }
    }
    assert!(
        !messages.is_empty(),
        "the emulator did not catch mutant {mutant} under seeds {SEEDS:?}"
    );
    assert!(
        messages.iter().any(|e| e.contains(expect)),
        "{mutant} caught, but never by {expect:?}: {messages:?}"
    );
}

/// rms_norm over 8 rows of 512: block_sum's barrier and warp_sum's shuffles.
fn rms_norm(prefix: &str) {
    let (rows, dim) = (8, 512);
    let mut rng = StdRng::seed_from_u64(5);
    let x = random_as(Dt::F32, &mut rng, rows * dim);
    let w = random_as(Dt::F32, &mut rng, dim);
    let mut want = vec![0.0; rows * dim];
    cpu::rms_norm(&x, &w, 1e-6, &mut want);
    let (xd, wd) = (Buf::new(Dt::F32, &x), Buf::new(Dt::F32, &w));
    let mut out = Buf::poisoned(Dt::F32, rows * dim);
    let args = [
        xd.arg(),
        wd.arg(),
        1e-6f32.into(),
        u(dim).into(),
        out.arg_mut(),
    ];
    run(
        &format!("{prefix}rms_norm_f32"),
        (u(rows), 1, 1),
        256,
        &args,
    );
    check(Dt::F32, "rms_norm", &out.read(), &want, 1e-5, 1e-5);
}

#[test]
fn missing_syncthreads() {
    assert_caught("no_syncthreads", "rms_norm", &rms_norm);
}

#[test]
fn wrong_shuffle_partner() {
    assert_caught("shuffle_partner", "rms_norm", &rms_norm);
}

/// Greedy rows split over 8 blocks each: the split sampler's min, fence and count.
fn greedy_split(prefix: &str) {
    use tandem::device::sampling::device_words::{pack_entries, unpack, OUT_WORDS, PARAM_WORDS};
    let (rows, vocab, splits) = (2, 4096, 8);
    let make = || {
        let mut rng = StdRng::seed_from_u64(17);
        SamplingBatch::greedy(&mut rng, rows, vocab, "f32", &|v| v.to_vec())
    };
    let batch = make();
    let params = batch.device_params();
    let mut words = vec![0u32; rows * PARAM_WORDS];
    pack_entries(&params, &mut words);
    let logits = Buf::new(Dt::F32, &batch.logits);
    let mut out = vec![u32::MAX; rows * OUT_WORDS];
    let mut best = vec![u64::MAX; rows];
    let mut done = vec![0u32; rows];
    let args = [
        logits.arg(),
        u(vocab).into(),
        Arg::ptr(&words),
        Arg::U64(0), // no constrained rows
        Arg::ptr_mut(&mut out),
        Arg::ptr_mut(&mut best),
        Arg::ptr_mut(&mut done),
    ];
    run(
        &format!("{prefix}sample_rows_f32"),
        (u(rows), splits, 1),
        512,
        &args,
    );
    let got: Vec<_> = params
        .iter()
        .zip(out.chunks_exact(OUT_WORDS))
        .map(|(p, w)| unpack(p, w, vocab))
        .collect();
    make().check(&got, 0.0, 0.0);
}

#[test]
fn split_sampler_without_fence() {
    assert_caught("sampler_no_fence", "token", &greedy_split);
}

/// A 3 x 40 x 512 product with k split over 3 blocks: the split-k partials, fence and count.
fn split_k(prefix: &str) {
    let (rows, n, k, splits) = (3, 40, 512, 3u32);
    let dt = Dt::Bf16;
    let mut rng = StdRng::seed_from_u64(12);
    let x = random_as(dt, &mut rng, rows * k);
    let w = random_as(dt, &mut rng, n * k);
    let mut want = vec![0.0; rows * n];
    cpu::matmul_transposed(&x, &w, None, rows, k, n, &mut want).unwrap();
    let (xd, wd) = (Buf::new(dt, &x), Buf::new(dt, &w));
    // Tiles of 16 * 8 features with one k warp (kernel t1_k1).
    let tiles = u(n).div_ceil(128);
    let mut out = Buf::poisoned(dt, rows * n);
    let mut ws = Buf::poisoned(Dt::F32, splits as usize * rows * n);
    let mut counters = vec![0u32; tiles as usize];
    let args = [
        xd.arg(),
        wd.arg(),
        Arg::U64(0),
        u(rows).into(),
        u(n).into(),
        u(k).into(),
        out.arg_mut(),
        ws.arg_mut(),
        Arg::ptr_mut(&mut counters),
    ];
    run(
        &format!("{prefix}gemm_skinny_bf16_t1_k1"),
        (tiles, splits, 1),
        256,
        &args,
    );
    common::assert_close("split-k", &out.read(), &want, 1e-5, 4e-3);
}

#[test]
fn split_k_without_fence() {
    assert_caught("split_k_no_fence", "split-k", &split_k);
}

/// The split-k count as a plain `++`: built torn, a block may be switched out between reading
/// the count and writing it back, so two blocks count as one and no block merges the tile.
#[test]
fn atomic_add_as_plain_increment() {
    assert_caught_against("torn_original/", "atomic_add_plain", "split-k", &split_k);
}

/// add_bias on 2 rows of 40 (one block of 256 threads per row, as the backend launches it).
fn add_bias(prefix: &str) {
    let (rows, n) = (2, 40);
    let mut rng = StdRng::seed_from_u64(11);
    let x = random_as(Dt::F32, &mut rng, rows * n);
    let bias = random_as(Dt::F32, &mut rng, n);
    let want: Vec<f32> = x.iter().enumerate().map(|(i, v)| v + bias[i % n]).collect();
    let mut xd = Buf::new(Dt::F32, &x);
    let bd = Buf::new(Dt::F32, &bias);
    let args = [xd.arg_mut(), bd.arg(), u(n).into()];
    let grid = (u(rows), u(n).div_ceil(256), 1);
    run(&format!("{prefix}add_bias_f32"), grid, 256, &args);
    check(Dt::F32, "add_bias", &xd.read(), &want, 0.0, 0.0);
}

#[test]
fn one_past_write() {
    assert_caught("one_past", "past the buffer's end", &add_bias);
}

#[test]
fn no_dependency_wait() {
    assert_caught(
        "no_dependency_wait",
        "never called grid_dependency_sync",
        &add_bias,
    );
}
