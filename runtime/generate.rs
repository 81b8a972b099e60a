//! One sequence, start to finish: prefill in chunks, then decode token by token.
//! This is what `tandem generate` runs; the engine (continuous batching) replaces it for serving.

use anyhow::{ensure, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::backend::Backend;
use super::step::{SeqChunk, StepInput};
use crate::model::llama::Llama;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub seed: u64,
    pub block_size: usize,
    /// Generation stops after any of these (not included in the output).
    pub stop_ids: Vec<u32>,
}

/// Generates up to `opts.max_tokens` tokens after `prompt`, calling `on_token` for each.
pub fn generate<B: Backend>(
    model: &mut Llama<B>,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    ensure!(!prompt.is_empty(), "the prompt is empty");
    ensure!(opts.block_size > 0, "block size must be positive");
    let context = model.cfg.max_position_embeddings;
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
    let mut rng = StdRng::seed_from_u64(opts.seed);

    // Prefill in chunks the workspace can hold; only the last chunk's logits matter.
    let chunk_len = model.limits.max_tokens;
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
        let token = sample(&logits, opts.temperature, &mut rng);
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

/// Greedy when `temperature` is 0, otherwise a draw from softmax(logits / temperature).
pub fn sample(logits: &[f32], temperature: f32, rng: &mut impl Rng) -> u32 {
    if temperature <= 0.0 {
        return argmax(logits);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let mut r = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

/// Index of the largest logit (the first one on ties, as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn low_temperature_sampling_concentrates_on_the_maximum() {
        let mut rng = StdRng::seed_from_u64(7);
        let logits = [0.0, 5.0, 1.0];
        assert!((0..100).all(|_| sample(&logits, 0.05, &mut rng) == 1));
        let hits = (0..2000)
            .filter(|_| sample(&[0.0, 0.0], 1.0, &mut rng) == 0)
            .count();
        assert!(
            (800..1200).contains(&hits),
            "a fair coin came up {hits}/2000"
        );
    }
}
