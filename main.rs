//! The `tandem` command line.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write;

mod cli;

use tandem::model::llama::{Llama, StepLimits};
use tandem::model::tokenizer::Tokenizer;
use tandem::runtime::backend::Backend;
use tandem::runtime::generate::{generate, GenerateOptions};
use tandem::runtime::model_args::{Device, ModelArgs};

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
    Generate(GenerateArgs),
    /// Serve the OpenAI-compatible HTTP API.
    Serve(tandem::server::ServeArgs),
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
    Serve(tandem::server::BenchServeArgs),
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    /// Most tokens in one forward step (longer prompts are prefilled in chunks).
    #[arg(long, default_value_t = 512)]
    max_batch_tokens: usize,
    /// The prompt text (used as is, no chat template).
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
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
    let result = match cli.command {
        Command::Generate(args) => run_generate(args),
        Command::Serve(args) => tandem::server::run_serve(args),
        Command::Bench(BenchCommand::Throughput(args)) => cli::bench_throughput::run(args),
        Command::Bench(BenchCommand::Decode(args)) => cli::bench_decode::run(args),
        Command::Bench(BenchCommand::Serve(args)) => tandem::server::run_bench_serve(args),
        Command::Sim(args) => cli::sim::run(args),
        Command::Calibrate(args) => cli::calibrate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(args.temperature >= 0.0, "--temperature must be >= 0");
    let limits = StepLimits {
        max_tokens: args.max_batch_tokens,
        max_seqs: 1,
    };
    let device = args.model.open_device()?;
    let source = args.model.open_source()?;
    match device {
        Device::Cpu(backend) => {
            let (model, tokenizer) = source.into_model(backend, limits)?;
            generate_with(model, &tokenizer, &args)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(backend) => {
            let (model, tokenizer) = source.into_model(backend, limits)?;
            generate_with(model, &tokenizer, &args)
        }
    }
}

fn generate_with<B: Backend>(
    mut model: Llama<B>,
    tokenizer: &Tokenizer,
    args: &GenerateArgs,
) -> Result<()> {
    let prompt = tokenizer.encode(&args.prompt, true)?;
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        seed: args.seed,
        block_size: args.block_size,
        stop_ids: if args.ignore_eos {
            vec![]
        } else {
            tokenizer.eos_ids.clone()
        },
    };
    // Print text as it becomes complete: decode everything so far and emit what is new, holding
    // back while the tail is an unfinished UTF-8 sequence (shown as U+FFFD).
    let mut ids = Vec::new();
    let mut printed = 0;
    let mut stdout = std::io::stdout().lock();
    let started = std::time::Instant::now();
    generate(&mut model, &prompt, &opts, |tok| {
        ids.push(tok);
        let text = tokenizer.decode(&ids, true)?;
        if !text.ends_with('\u{FFFD}') && text.len() > printed {
            stdout.write_all(&text.as_bytes()[printed..])?;
            stdout.flush()?;
            printed = text.len();
        }
        Ok(())
    })
    .context("generation failed")?;
    writeln!(stdout)?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        prompt_tokens = prompt.len(),
        generated = ids.len(),
        "done in {secs:.2}s ({:.1} tokens/s)",
        ids.len() as f64 / secs
    );
    Ok(())
}
