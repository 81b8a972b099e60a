//! `tandem bench throughput`: offline throughput of the engine, in-process.

use anyhow::{Context, Result};
use std::time::Instant;

use tandem::runtime::engine::launch::EngineArgs;
use tandem::runtime::request::{Event, Request, SamplingParams};

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
    let requests: Vec<Request> = (0..args.num_prompts)
        .map(|_| {
            let prompt = (0..args.input_len)
                .map(|_| (low + next(vocab - low)) as u32)
                .collect();
            Request::new(
                prompt,
                SamplingParams {
                    max_tokens: args.output_len,
                    ignore_eos: true,
                    ..Default::default()
                },
            )
        })
        .collect();
    drop(tokenizer);
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
    let stats = handle.stats();
    handle.shutdown();
    engine.join()?;
    let total = args.num_prompts * args.input_len + output_tokens;
    println!(
        "requests: {} ({} failed)  overlap: {}  policy: {}",
        args.num_prompts, failed, !args.engine.no_overlap, args.engine.policy
    );
    println!(
        "elapsed: {secs:.2} s  steps: {}  preemptions: {}",
        stats.steps, stats.preemptions
    );
    println!(
        "throughput: {:.2} requests/s, {:.1} output tokens/s, {:.1} total tokens/s",
        args.num_prompts as f64 / secs,
        output_tokens as f64 / secs,
        total as f64 / secs
    );
    Ok(())
}
