//! The `tandem` command line.

use clap::{Parser, Subcommand};

use tandem::cli;

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "An LLM inference server written from scratch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a continuation of a prompt and print it to stdout.
    Generate(cli::generate::GenerateArgs),
    /// Serve the OpenAI-compatible HTTP API.
    Serve(cli::serve::ServeArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Simulate the scheduler on a workload with a calibrated step-time model.
    Sim(cli::sim::SimArgs),
    /// Time real forward steps and fit the simulator's step-time model.
    Calibrate(cli::calibrate::CalibrateArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Offline throughput of the engine, in-process.
    Throughput(cli::bench_throughput::ThroughputArgs),
    /// One decode step's time at several batch sizes, against the memory roofline.
    Decode(cli::bench_decode::DecodeArgs),
    /// Load a running server with streaming requests (the figures `vllm bench serve` prints).
    Serve(cli::loadgen::BenchServeArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Bench(BenchCommand::Serve(_))
    ) {
        exit_quietly_when_stdout_closes();
    }
    let result = match cli.command {
        Command::Generate(args) => cli::generate::run(args),
        Command::Serve(args) => cli::serve::run_serve(args),
        Command::Bench(BenchCommand::Throughput(args)) => cli::bench_throughput::run(args),
        Command::Bench(BenchCommand::Decode(args)) => cli::bench_decode::run(args),
        Command::Bench(BenchCommand::Serve(args)) => cli::loadgen::run_bench_serve(args),
        Command::Sim(args) => cli::sim::run(args),
        Command::Calibrate(args) => cli::calibrate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The commands that print results (generate, sim, the in-process benchmarks) stop like any Unix
/// tool when their reader goes away (`tandem sim | head`), instead of panicking on the failed
/// write: the Rust runtime ignores SIGPIPE, so this puts the default action back. The networked
/// commands keep it ignored, so a client that hangs up is an error on that one connection.
fn exit_quietly_when_stdout_closes() {
    // SAFETY: called once, before any other thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
