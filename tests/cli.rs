//! The `tandem` binary as a user runs it.

#[path = "common/wait.rs"]
mod wait;

use std::process::Command;
use wait::OutputWithin;

fn tandem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
}

/// The acceptance line: greedy SmolLM2 continues "The capital of France is" with " Paris."
/// (the default model is fetched on first use, so this also covers the fetch).
#[test]
fn generate_with_the_default_model_prints_paris() {
    let out = tandem()
        .args([
            "generate",
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
        ])
        .output_within();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(" Paris."), "stdout: {stdout:?}");
    assert!(
        !stdout.contains("INFO"),
        "logs must go to stderr, not stdout: {stdout:?}"
    );
}

#[test]
fn generate_on_an_hf_directory_is_deterministic_when_greedy() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/tiny-qwen3");
    let run = || {
        tandem()
            .args([
                "generate",
                "--model",
                model,
                "--prompt",
                "Hello there",
                "--max-tokens",
                "5",
                "--ignore-eos",
            ])
            .output_within()
    };
    let (a, b) = (run(), run());
    assert!(
        a.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn a_failed_fetch_says_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let out = tandem()
        .args(["generate", "--prompt", "hi"])
        .env("TANDEM_HOME", home.path())
        .env("PATH", "/nonexistent")
        .output_within();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not fetch the default model") && stderr.contains("--model"),
        "{stderr}"
    );
}

#[test]
fn a_bad_model_path_is_a_clear_error() {
    let out = tandem()
        .args(["generate", "--model", "/no/such/dir", "--prompt", "hi"])
        .output_within();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn bench_throughput_replays_a_trace() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/tiny-llama");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    std::fs::write(
        &trace,
        "{\"arrival\": 0, \"prompt_len\": 20, \"output_len\": 5}\n\
         {\"arrival\": 0.5, \"prompt_len\": 7, \"output_len\": 3}\n",
    )
    .unwrap();
    let timeline = dir.path().join("timeline.csv");
    let out = tandem()
        .args(["bench", "throughput", "--model", model, "--trace"])
        .arg(&trace)
        .arg("--timeline")
        .arg(&timeline)
        .output_within();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("requests: 2 (0 failed)"), "{stdout}");
    // 8 output tokens (5 + 3, EOS ignored) and 27 prompt tokens: total / output = 35 / 8.
    let rate = |label: &str| -> f64 {
        let at = stdout
            .find(label)
            .unwrap_or_else(|| panic!("{label}: {stdout}"));
        stdout[..at].rsplit(' ').next().unwrap().parse().unwrap()
    };
    let ratio = rate(" total tokens/s") / rate(" output tokens/s");
    assert!((ratio - 35.0 / 8.0).abs() < 0.01, "{stdout}");
    assert!(stdout.contains("executor idle between steps"), "{stdout}");

    // The timeline: one line per step the engine counted, in order, each start <= end, and
    // every prompt token and generated token (but the last of each request) in some step.
    let steps: usize = stdout
        .split("steps: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step count: {stdout}"));
    let csv = std::fs::read_to_string(&timeline).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), steps, "{csv}");
    let tokens: f64 = rows.iter().map(|r| r[3]).sum();
    assert_eq!(tokens, 27.0 + 8.0 - 2.0, "{csv}");
    for w in rows.windows(2) {
        assert!(w[0][1] <= w[0][2] && w[0][1] <= w[1][1], "{csv}");
    }

    // A missing trace is a clear error, not a panic.
    let out = tandem()
        .args(["bench", "throughput", "--model", model, "--trace"])
        .arg(dir.path().join("absent.jsonl"))
        .output_within();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.jsonl"));
}
