//! `tandem bench decode` as a user runs it: one machine-readable row per batch size, and plain
//! errors (never a panic) for bad options.

#[path = "common/wait.rs"]
mod wait;

use std::process::{Command, Output};
use wait::OutputWithin;

fn bench_decode(extra: &[&str]) -> Output {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/tiny-llama");
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["bench", "decode", "--model", model, "--device", "cpu"])
        .args(extra)
        .output_within()
}

#[test]
fn prints_one_decode_row_per_batch_size_with_positive_figures() {
    let out = bench_decode(&["--batch", "1,4", "--context", "32", "--steps", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("step/roofline"), "no table in:\n{stdout}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("DECODE\t"))
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 2, "stdout:\n{stdout}");
    for (row, batch) in rows.iter().zip(["1", "4"]) {
        // batch, context, ms/step, roofline ms, step/roofline
        assert_eq!(row.len(), 5, "row {row:?}");
        assert_eq!((row[0], row[1]), (batch, "32"));
        for field in &row[2..] {
            let x: f64 = field.parse().unwrap_or_else(|e| panic!("{field:?}: {e}"));
            assert!(x.is_finite() && x > 0.0, "row {row:?}");
        }
    }
}

/// A bad option exits non-zero with a one-line reason, not a panic.
fn assert_plain_error(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(want), "no {want:?} in stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn a_zero_batch_size_is_a_plain_error() {
    let out = bench_decode(&["--batch", "0", "--context", "8", "--steps", "1"]);
    assert_plain_error(&out, "--batch sizes must be positive");
}

#[test]
fn a_context_beyond_the_model_is_a_plain_error() {
    // tiny-llama's max_position_embeddings is 256.
    let out = bench_decode(&["--batch", "1", "--context", "300", "--steps", "1"]);
    assert_plain_error(&out, "beyond the model's context");
}

#[test]
fn bf16_on_the_cpu_is_a_plain_error() {
    let out = bench_decode(&["--batch", "1", "--dtype", "bf16"]);
    assert_plain_error(&out, "--dtype bf16 needs --device cuda");
}
