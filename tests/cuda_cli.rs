//! The `tandem` commands a GPU run makes (scripts/gpu-check.sh, scripts/gpu-bench.sh) run here
//! first, on the emulated device (`TANDEM_EMULATED_CUDA=1`, device/cuda/emulated.rs), on the tiny
//! test model: a bug in them is found here rather than in a short, rare GPU run. Greedy
//! `generate` in f32 must print the CPU's text; the benchmarks must finish and report.
//!
//! Built with `--features cuda,kernel-emu` (the test command). On a machine with a CUDA driver
//! the same commands run on the GPU.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::repo_root;
use common::wait::OutputWithin;

fn tiny_llama() -> String {
    repo_root()
        .join("tests/models/tiny-llama")
        .display()
        .to_string()
}

/// Runs `tandem ARGS` on the emulated device; fails the test, with its output, unless it exits 0.
fn tandem(args: &[&str]) -> String {
    tandem_with(args, &[]).0
}

/// [`tandem`] with extra environment variables; returns stdout and stderr.
fn tandem_with(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env("TANDEM_EMULATED_CUDA", "1")
        .envs(env.iter().copied())
        .output_within();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "tandem {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-cuda-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn generate_on_the_device_prints_the_cpus_text() {
    let model = tiny_llama();
    let args = |device: &'static str, dtype: &'static str| {
        let mut a = vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "16",
            "--temperature",
            "0",
            "--ignore-eos",
            "--device",
            device,
        ];
        if !dtype.is_empty() {
            a.extend(["--dtype", dtype]);
        }
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| tandem(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let cpu = run(args("cpu", ""));
    let gpu = run(args("cuda", "f32"));
    assert_eq!(
        gpu, cpu,
        "greedy text on the device (f32) differs from the CPU's"
    );
    let bf16 = run(args("cuda", "bf16"));
    assert!(!bf16.trim().is_empty(), "bf16 generated nothing");
    eprintln!("generate: cpu {cpu:?}, cuda f32 the same, cuda bf16 {bf16:?}");
    // A driver that refuses programmatic dependent launches (the emulated one, asked to): the
    // backend warns, launches plainly from then on, and prints the same text.
    let a = args("cuda", "f32");
    let (refused, log) = tandem_with(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("TANDEM_EMU_REFUSE_PDL", "1")],
    );
    assert!(
        log.contains("refused a programmatic dependent launch"),
        "no fallback warning:\n{log}"
    );
    assert_eq!(refused, cpu, "text after falling back to plain launches");
}

#[test]
fn bench_decode_reports_every_batch_in_every_mode() {
    let model = tiny_llama();
    let modes: [&[&str]; 7] = [
        &[],
        &["--no-cuda-graphs"],
        &["--host-sampling"],
        &["--decode-attention", "scalar"],
        &["--gemm", "cublas"],
        &["--gemm", "auto"],
        &["--no-pdl"],
    ];
    for mode in modes {
        let mut args = vec![
            "bench",
            "decode",
            "--device",
            "cuda",
            "--model",
            &model,
            "--batch",
            "1,8",
            "--context",
            "40",
            "--steps",
            "3",
            "--copy-gbps",
            "10",
        ];
        args.extend(mode);
        let out = tandem(&args);
        eprintln!("{out}");
        // The emulated device reports compute capability 9.0, so programmatic dependent launch
        // is on there unless turned off (a real GPU has it from 9.0 on).
        if mode == ["--no-pdl"] {
            assert!(out.contains("pdl: off"), "pdl not off:\n{out}");
        } else if out.contains("emulated CUDA device") {
            assert!(out.contains("pdl: on"), "pdl not on:\n{out}");
        }
        for batch in ["1", "8"] {
            // The machine-readable line: DECODE, batch, context, median ms, roofline ms, ratio.
            let row: Vec<&str> = out
                .lines()
                .find(|l| l.starts_with(&format!("DECODE\t{batch}\t")))
                .unwrap_or_else(|| panic!("no row for batch {batch} ({mode:?}):\n{out}"))
                .split('\t')
                .collect();
            let ms: f64 = row[3].parse().unwrap();
            assert!(ms > 0.0, "batch {batch}: {ms} ms per step");
        }
        // `--gemm auto` times each product shape once and reports what it picked (tiny-llama's
        // products: qkv, o, gate_up, down, lm_head; batches 1 and 8 share one row tile).
        let tuned = out.lines().filter(|l| l.contains("-> ")).count();
        if mode == ["--gemm", "auto"] {
            assert!(out.contains("gemm tuning"), "no tuning report:\n{out}");
            assert_eq!(tuned, 5, "one tuning per product shape:\n{out}");
        } else {
            assert_eq!(tuned, 0, "tuned under {mode:?}:\n{out}");
        }
    }
}

#[test]
fn bench_throughput_runs_a_trace_in_every_mode() {
    let model = tiny_llama();
    let trace = scratch("trace.jsonl");
    let lines: Vec<String> = (0..10)
        .map(|i| {
            format!(
                "{{\"arrival\": 0.0, \"prompt_len\": {}, \"output_len\": 24}}",
                8 + 7 * i
            )
        })
        .collect();
    std::fs::write(&trace, lines.join("\n") + "\n").unwrap();
    let trace = trace.display().to_string();
    let timeline = scratch("timeline.csv").display().to_string();
    let base = [
        "bench",
        "throughput",
        "--device",
        "cuda",
        "--model",
        model.as_str(),
        "--trace",
        trace.as_str(),
        "--max-num-seqs",
        "8",
        "--max-batch-tokens",
        "128",
        "--num-kv-blocks",
        "128",
    ];
    for extra in [
        &["--timeline", timeline.as_str()][..],
        &["--no-cuda-graphs"][..],
        &["--no-overlap"][..],
        &["--host-sampling"][..],
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = tandem(&args);
        eprintln!("{extra:?}:\n{out}");
        assert!(
            out.contains("tok/s") || out.contains("tokens/s"),
            "no throughput figure ({extra:?}):\n{out}"
        );
    }
    let csv = std::fs::read_to_string(&timeline).unwrap();
    assert!(
        csv.lines().count() > 24,
        "the timeline has {} lines for at least 24 steps",
        csv.lines().count()
    );
}
