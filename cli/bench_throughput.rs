//! `tandem bench throughput`: offline throughput of the engine, in-process.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

use crate::cli::engine_args::EngineArgs;
use crate::cli::trace_args::TraceArgs;
use crate::engine::request::{Event, Request, SamplingParams};
use crate::engine::timeline::{idle_fraction, write_csv};
use crate::sim::workload::{engine_request, prompt_tokens};

#[derive(clap::Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long, default_value_t = 32)]
    pub num_prompts: usize,
    /// Prompt length in tokens (random ids).
    #[arg(long, default_value_t = 32)]
    pub input_len: usize,
    /// Tokens generated per request (EOS ignored).
    #[arg(long, default_value_t = 64)]
    pub output_len: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A trace's prompt and output lengths instead of the fixed sizes above (arrival times are
    /// ignored: every request is submitted at once). A JSONL trace of the simulator's format
    /// drives the comparison with transformers in scripts/gpu-bench.sh.
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Write each step's start and end (seconds), tokens and sequences to this CSV file, and
    /// report the fraction of time the executor sat idle between steps.
    #[arg(long)]
    pub timeline: Option<PathBuf>,
}

fn request(prompt: Vec<u32>, output_len: usize) -> Request {
    Request::new(
        prompt,
        SamplingParams {
            max_tokens: output_len,
            ignore_eos: true,
            ..Default::default()
        },
    )
}

pub fn run(args: ThroughputArgs) -> Result<()> {
    anyhow::ensure!(
        args.num_prompts > 0 && args.input_len > 0 && args.output_len > 0,
        "sizes must be positive"
    );
    let (engine, tokenizer) = args.engine.launch()?;
    let handle = engine.handle();
    let vocab = handle.model().vocab_size as u64;
    // Prompt ids avoid the low ids, where tokenizers keep their special tokens.
    let mut state = args.seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let low = 100.min(vocab / 2);
    let requests: Vec<Request> = match args.trace.load()? {
        Some(trace) => trace
            .iter()
            .enumerate()
            .map(|(i, r)| engine_request(r, prompt_tokens(r, i, vocab as u32)))
            .collect(),
        None => (0..args.num_prompts)
            .map(|_| {
                let prompt = (0..args.input_len)
                    .map(|_| (low + next(vocab - low)) as u32)
                    .collect();
                request(prompt, args.output_len)
            })
            .collect(),
    };
    let num_requests = requests.len();
    let prompt_tokens_total: usize = requests.iter().map(|r| r.prompt_ids.len()).sum();
    drop(tokenizer);
    handle.timeline().start();
    let started = Instant::now();
    let mut streams = requests
        .into_iter()
        .map(|r| handle.submit(r))
        .collect::<Result<Vec<_>, _>>()
        .context("submitting")?;
    let mut output_tokens = 0usize;
    let mut failed = 0usize;
    for s in &mut streams {
        while let Some(ev) = s.blocking_recv() {
            match ev {
                Event::Tokens { ids, .. } => output_tokens += ids.len(),
                Event::Finished { reason, .. } => {
                    failed += usize::from(reason.as_str() == "error");
                    break;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    handle.shutdown();
    engine.join()?;
    // Read once the engine has stopped: it publishes its counters when idle, so a read right
    // after the last stream ends may miss the last step.
    let steps = handle.timeline().take();
    let stats = handle.stats();
    let total = prompt_tokens_total + output_tokens;
    println!(
        "requests: {} ({} failed)  overlap: {}  policy: {}",
        num_requests, failed, !args.engine.no_overlap, args.engine.policy
    );
    println!(
        "elapsed: {secs:.2} s  steps: {}  preemptions: {}",
        stats.steps, stats.preemptions
    );
    println!(
        "throughput: {:.2} requests/s, {:.1} output tokens/s, {:.1} total tokens/s",
        num_requests as f64 / secs,
        output_tokens as f64 / secs,
        total as f64 / secs
    );
    let busy: f64 = steps.iter().map(|s| s.end - s.start).sum();
    println!(
        "steps: mean {:.2} ms busy, executor idle between steps {:.2}%",
        1e3 * busy / steps.len().max(1) as f64,
        100.0 * idle_fraction(&steps)
    );
    if let Some(path) = &args.timeline {
        write_csv(path, &steps)?;
    }
    Ok(())
}
