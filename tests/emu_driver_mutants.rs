//! The emulated CUDA driver's stream model (README, "The emulated device"), shown on mutants:
//! kernels/emu/fake_cuda.cc runs each stream's queue lazily, in a seeded random order that keeps
//! only a stream's own order and `cuStreamWaitEvent`, so a missing wait between two streams must
//! show as stale data, and so must the host rewriting page-locked memory a queued copy has not
//! read yet. Each program below reads the right data under every seed with its wait, and wrong
//! data under at least one without it; a mutant the driver lets through fails the test.
//!
//! The driver draws its scheduling order from one process-wide generator, seeded once from
//! `TANDEM_EMU_SEED` (the kernel emulator's per-thread seed does not reach it), so each seed and
//! variant runs in a child process of this test binary with its own environment.

use std::process::Command;
use std::sync::Arc;

use cudarc::driver::{result, CudaContext, DevicePtrMut};
use tandem::device::cuda::emulated;

/// The driver seeds the program and its mutant run under.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=8;

/// Words uploaded and read back.
const WORDS: usize = 4096;

/// Set in a child's environment: which variant [`stream_wait_child`] runs ("wait" or "no-wait").
const VARIANT_ENV: &str = "TANDEM_STREAM_WAIT_VARIANT";

/// Starts the child's answer on its stdout: the number of words it read back wrong.
const ANSWER: &str = "stale words: ";

/// The emulated device's context with cudarc's per-buffer events off: they would order streams
/// on their own and hide a missing wait; the backend turns them off too (device/cuda/mod.rs),
/// ordering its streams by hand. The programs below order theirs explicitly (unmutated) and drain
/// them before freeing anything.
fn emulated_context() -> Arc<CudaContext> {
    assert!(
        emulated::install().expect("loading the emulated driver"),
        "a real CUDA driver is present; this program checks the emulated one"
    );
    let ctx = CudaContext::new(0).expect("the emulated device");
    // SAFETY: see above: every program orders its streams and drains them before freeing.
    unsafe { ctx.disable_event_tracking() };
    ctx
}

/// Distinct nonzero words: a read of a buffer before they land sees the driver's NaN fill.
fn pattern() -> Vec<u32> {
    (1..=WORDS as u32)
        .map(|i| i.wrapping_mul(0x9e37_79b9))
        .collect()
}

/// Uploads on a "copy" stream, orders a "compute" stream after it with an event (unless `wait`
/// is false: the mutant), copies the uploaded buffer device-to-device on the compute stream and
/// reads that back; returns how many words differ from what was uploaded.
fn upload_then_read(wait: bool) -> usize {
    let ctx = emulated_context();
    let copy = ctx.new_stream().unwrap();
    let compute = ctx.new_stream().unwrap();
    let data = pattern();
    // SAFETY: `staged` is written by the upload before anything reads it (the property under
    // test: the mutant breaks it, and the emulator's allocations start as NaN bytes, not
    // undefined memory); `out` is written by the device-to-device copy before it is read back.
    let mut staged = unsafe { compute.alloc::<u32>(WORDS) }.unwrap();
    let mut out = unsafe { compute.alloc::<u32>(WORDS) }.unwrap();

    copy.memcpy_htod(&data, &mut staged).unwrap();
    let uploaded = copy.record_event(None).unwrap();
    if wait {
        compute.wait(&uploaded).unwrap();
    }
    compute.memcpy_dtod(&staged, &mut out).unwrap();
    let got = compute.clone_dtoh(&out).unwrap();
    // Without the wait the upload may still be queued: let it land before the buffers are freed.
    copy.synchronize().unwrap();
    got.iter().zip(&data).filter(|(g, w)| g != w).count()
}

/// Uploads page-locked words on a stream, then rewrites them on the host: after waiting for the
/// upload (unless `wait` is false: the mutant, which rewrites what the queued copy may not have
/// read yet); returns how many uploaded words differ from the ones first written.
fn rewrite_pinned_after_upload(wait: bool) -> usize {
    let ctx = emulated_context();
    let copy = ctx.new_stream().unwrap();
    // SAFETY: a fresh page-locked allocation of WORDS words, freed at the end after the stream
    // is drained; it is written in full below before the copy reads it.
    let host = unsafe { result::malloc_host(WORDS * 4, 0) }
        .unwrap()
        .cast::<u32>();
    // SAFETY: host holds WORDS words and nothing else refers to it.
    let words = unsafe { std::slice::from_raw_parts_mut(host, WORDS) };
    let data = pattern();
    words.copy_from_slice(&data);
    // SAFETY: written by the upload before it is read back.
    let mut staged = unsafe { copy.alloc::<u32>(WORDS) }.unwrap();
    // SAFETY: staged holds WORDS words; the source is page-locked and outlives the copy.
    unsafe {
        result::memcpy_htod_async(staged.device_ptr_mut(&copy).0, &words[..], copy.cu_stream())
    }
    .unwrap();
    let uploaded = copy.record_event(None).unwrap();
    if wait {
        uploaded.synchronize().unwrap();
    }
    words.fill(0);
    let got = copy.clone_dtoh(&staged).unwrap();
    copy.synchronize().unwrap();
    // SAFETY: allocated by malloc_host above; the stream is drained, so no copy reads it.
    unsafe { result::free_host(host.cast()) }.unwrap();
    got.iter().zip(&data).filter(|(g, w)| g != w).count()
}

/// One program and variant under one seed, when a parent test runs it (`VARIANT_ENV` set):
/// prints its answer.
#[test]
#[ignore = "run by the tests below in a child process per seed and variant"]
fn stream_wait_child() {
    let answer = match std::env::var(VARIANT_ENV).as_deref() {
        Ok("wait") => upload_then_read(true),
        Ok("no-wait") => upload_then_read(false),
        Ok("pinned-wait") => rewrite_pinned_after_upload(true),
        Ok("pinned-no-wait") => rewrite_pinned_after_upload(false),
        // Picked up by `-- --ignored` alone: nothing to answer.
        Err(_) => return eprintln!("stream_wait_child: run by the mutant tests in this file"),
        other => panic!("{VARIANT_ENV}: no variant {other:?}"),
    };
    println!("{ANSWER}{answer}");
}

/// Runs [`stream_wait_child`] in a child of this binary under the driver seed `seed`; how many
/// words it read back wrong.
fn run_child(seed: u64, variant: &str) -> usize {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stream_wait_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TANDEM_EMU_SEED", seed.to_string())
        .env(VARIANT_ENV, variant)
        .output()
        .expect("running this test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest prints the test's name on the line the answer starts, so it is found mid-line.
    let answer = stdout
        .lines()
        .find_map(|l| l.split_once(ANSWER).map(|(_, n)| n.trim()));
    match answer.map(str::parse) {
        Some(Ok(n)) if out.status.success() => n,
        _ => panic!(
            "the {variant} child under seed {seed} gave no answer ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The program `prefix` names reads the right data under every seed with its wait (variant
/// `<prefix>wait`), and wrong data under at least one without it (`<prefix>no-wait`).
fn assert_caught(test: &str, prefix: &str, what: &str) {
    // On a real GPU the order is the hardware's, and a missing wait may well go unseen there:
    // the claim is the emulated driver's.
    match emulated::install() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("skipped: {test}: a real CUDA driver is present");
            return;
        }
        Err(e) => panic!("the emulated driver failed to load: {e:#}"),
    }
    let mut caught = Vec::new();
    for seed in SEEDS {
        let with_wait = run_child(seed, &format!("{prefix}wait"));
        assert_eq!(
            with_wait, 0,
            "with its wait, the program read {with_wait} of {WORDS} words wrong under seed {seed}"
        );
        let without = run_child(seed, &format!("{prefix}no-wait"));
        println!("seed {seed}: with the wait 0 wrong words; without it {without} of {WORDS}");
        if without > 0 {
            caught.push(seed);
        }
    }
    println!("{what} is caught under seeds {caught:?}");
    assert!(
        !caught.is_empty(),
        "the emulated driver never caught {what} under seeds {SEEDS:?}"
    );
}

#[test]
fn missing_stream_wait_is_caught() {
    assert_caught(
        "missing_stream_wait_is_caught",
        "",
        "the missing stream wait",
    );
}

#[test]
fn rewriting_pinned_memory_before_its_copy_is_caught() {
    assert_caught(
        "rewriting_pinned_memory_before_its_copy_is_caught",
        "pinned-",
        "the host rewriting page-locked memory a queued copy has not read",
    );
}
