//! One sequence, start to finish: prefill in chunks, then decode token by token.
//! This is what `tandem generate` runs; the engine (continuous batching) replaces it for serving.

use std::io::Write;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use clap::Args;

use crate::cli::model_args::{Device, ModelArgs};
use crate::device::backend::Backend;
use crate::device::sampling::params::SamplingParams;
use crate::device::sampling::{sample, SamplerScratch, SamplerState};
use crate::device::step::{SeqChunk, StepInput};
use crate::model::tokenizer::Tokenizer;
use crate::model::StepLimits;
use crate::runner::Runner;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Most tokens in one forward step (longer prompts are prefilled in chunks).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// The prompt text (used as is, no chat template).
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seeds the draws as the server's `seed` does: the same seed, temperature and prompt give
    /// the same tokens here and from `tandem serve`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

/// `tandem generate`.
pub fn run(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(args.temperature >= 0.0, "--temperature must be >= 0");
    let limits = StepLimits {
        max_tokens: args.max_batch_tokens,
        max_seqs: 1,
    };
    let device = args.model.open_device()?;
    let source = args.model.open_source()?;
    match device {
        Device::Cpu(backend) => {
            let (model, tokenizer) = crate::runner::load(source, backend, limits)?;
            generate_with(model, &tokenizer, &args)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(backend) => {
            let (model, tokenizer) = crate::runner::load(source, backend, limits)?;
            generate_with(model, &tokenizer, &args)
        }
    }
}

fn generate_with<B: Backend>(
    mut model: Runner<B>,
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

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// The engine's sampler keys each draw by this seed and the token's position.
    pub seed: u64,
    pub block_size: usize,
    /// Generation stops after any of these (not included in the output).
    pub stop_ids: Vec<u32>,
}

/// Generates up to `opts.max_tokens` tokens after `prompt`, calling `on_token` for each. Tokens
/// are picked by the engine's sampler, so a request to the engine with the same prompt,
/// temperature and seed gets the same tokens.
pub fn generate<B: Backend>(
    model: &mut Runner<B>,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    ensure!(!prompt.is_empty(), "the prompt is empty");
    ensure!(opts.block_size > 0, "block size must be positive");
    let context = model.cfg().max_position_embeddings;
    ensure!(
        prompt.len() < context,
        "the prompt has {} tokens; the model's context is {context}",
        prompt.len()
    );
    let max_new = opts.max_tokens.min(context - prompt.len());
    let total = prompt.len() + max_new;
    let num_blocks = total.div_ceil(opts.block_size);
    let mut kv = model.new_kv_cache(num_blocks, opts.block_size)?;
    let block_table: Vec<u32> = (0..num_blocks as u32).collect();
    let params = SamplingParams {
        temperature: opts.temperature,
        ..SamplingParams::default()
    };
    let mut sampler = SamplerState::new(Arc::new(params), opts.seed, prompt, &[]);
    let mut scratch = SamplerScratch::new(model.cfg().vocab_size);

    // Prefill in chunks the workspace can hold; only the last chunk's logits matter.
    let chunk_len = model.limits().max_tokens;
    let mut logits = Vec::new();
    for (i, chunk) in prompt.chunks(chunk_len).enumerate() {
        let step = StepInput::build(
            &[SeqChunk {
                tokens: chunk,
                num_cached: i * chunk_len,
                block_table: &block_table,
                want_logits: true,
            }],
            opts.block_size,
        )?;
        logits = model.forward_to_host(&step, &mut kv)?.remove(0);
    }

    let mut out = Vec::with_capacity(max_new);
    while out.len() < max_new {
        let token = sample(&mut sampler, &mut logits, &mut scratch).token;
        if opts.stop_ids.contains(&token) {
            break;
        }
        out.push(token);
        on_token(token)?;
        if out.len() == max_new {
            break;
        }
        let step = StepInput::build(
            &[SeqChunk {
                tokens: &[token],
                num_cached: prompt.len() + out.len() - 1,
                block_table: &block_table,
                want_logits: true,
            }],
            opts.block_size,
        )?;
        logits = model.forward_to_host(&step, &mut kv)?.remove(0);
    }
    Ok(out)
}
