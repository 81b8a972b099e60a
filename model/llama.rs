//! The decoder-only transformer (Llama, Mistral, Qwen2, Qwen3), written once over [`Backend`].
//!
//! It sees one flat batch of token rows plus attention metadata ([`StepInput`]) and never
//! allocates during a step: every activation buffer is sized up front for `max_tokens` rows.

use anyhow::{ensure, Result};

use super::config::ModelConfig;
use super::rope::cos_sin_table;
use super::weights::LlamaWeights;
use super::{Model, StepLimits};
use crate::device::backend::{AttentionParams, Backend, QkNorm};
use crate::device::kv_cache::KvCache;
use crate::device::step::StepInput;

/// Activations, each sized for `max_tokens` rows (`last`/`logits` for `max_seqs`).
struct Workspace<B: Backend> {
    residual: B::Tensor, // (max_tokens, hidden)
    normed: B::Tensor,   // (max_tokens, hidden)
    delta: B::Tensor,    // (max_tokens, hidden): output of o_proj / down_proj
    qkv: B::Tensor,      // (max_tokens, q_dim + 2 * kv_dim)
    attn: B::Tensor,     // (max_tokens, q_dim)
    gate_up: B::Tensor,  // (max_tokens, 2 * intermediate)
    act: B::Tensor,      // (max_tokens, intermediate)
    last: B::Tensor,     // (max_seqs, hidden): rows whose logits are wanted
    logits: B::Tensor,   // (max_seqs, vocab)
}

impl<B: Backend> Workspace<B> {
    fn new(b: &B, cfg: &ModelConfig, lim: StepLimits) -> Result<Self> {
        let t = lim.max_tokens;
        let layout = cfg.qkv_layout();
        Ok(Workspace {
            residual: b.zeros(t * cfg.hidden_size)?,
            normed: b.zeros(t * cfg.hidden_size)?,
            delta: b.zeros(t * cfg.hidden_size)?,
            qkv: b.zeros(t * layout.row_width())?,
            attn: b.zeros(t * cfg.q_dim())?,
            gate_up: b.zeros(t * 2 * cfg.intermediate_size)?,
            act: b.zeros(t * cfg.intermediate_size)?,
            last: b.zeros(lim.max_seqs * cfg.hidden_size)?,
            logits: b.zeros(lim.max_seqs * cfg.vocab_size)?,
        })
    }
}

pub struct Llama<B: Backend> {
    pub cfg: ModelConfig,
    pub limits: StepLimits,
    backend: B,
    weights: LlamaWeights<B>,
    cos_sin: B::Tensor, // (max_position_embeddings, head_dim)
    ws: Workspace<B>,
}

impl<B: Backend> Llama<B> {
    pub fn new(
        backend: B,
        cfg: ModelConfig,
        weights: LlamaWeights<B>,
        limits: StepLimits,
    ) -> Result<Self> {
        ensure!(
            limits.max_tokens > 0 && limits.max_seqs > 0,
            "step limits must be positive"
        );
        let cos_sin = backend.upload(&cos_sin_table(&cfg, cfg.max_position_embeddings))?;
        let ws = Workspace::new(&backend, &cfg, limits)?;
        Ok(Llama {
            cfg,
            limits,
            backend,
            weights,
            cos_sin,
            ws,
        })
    }

    /// Everything a backend would otherwise have to trust: sizes, ranges, consistency.
    fn check_step_inner(&self, step: &StepInput, kv: &KvCache<B>) -> Result<()> {
        let rows = step.num_tokens();
        let seqs = step.num_seqs();
        ensure!(rows > 0, "empty step");
        ensure!(
            rows <= self.limits.max_tokens,
            "step of {rows} tokens exceeds max_tokens {}",
            self.limits.max_tokens
        );
        ensure!(
            seqs <= self.limits.max_seqs,
            "step of {seqs} sequences exceeds max_seqs {}",
            self.limits.max_seqs
        );
        ensure!(
            step.logits_indices.len() <= self.limits.max_seqs,
            "too many logit rows"
        );
        ensure!(
            step.positions.len() == rows && step.slot_mapping.len() == rows,
            "positions and slot_mapping must have one entry per token"
        );
        ensure!(
            step.query_start_locs.len() == seqs + 1,
            "query_start_locs must have one entry per sequence plus one"
        );
        ensure!(
            step.query_start_locs.first() == Some(&0)
                && step.query_start_locs.last() == Some(&(rows as u32)),
            "query_start_locs must run from 0 to the number of tokens"
        );
        ensure!(
            step.query_start_locs.windows(2).all(|w| w[0] < w[1]),
            "every sequence needs at least one token"
        );
        ensure!(
            step.block_tables.len() == seqs * step.max_blocks_per_seq,
            "block_tables has the wrong size"
        );
        ensure!(
            step.logits_indices.iter().all(|&i| (i as usize) < rows),
            "logits index out of range"
        );
        let vocab = self.cfg.vocab_size as u32;
        ensure!(
            step.input_ids.iter().all(|&t| t < vocab),
            "token id outside the vocabulary of {vocab}"
        );
        let max_pos = self.cfg.max_position_embeddings as u32;
        ensure!(
            step.positions.iter().all(|&p| p < max_pos),
            "position beyond the model's context of {max_pos}"
        );
        ensure!(
            kv.layers.len() == self.cfg.num_layers,
            "KV cache has the wrong number of layers"
        );
        // The backend's ops check these too, but a replayed graph runs no op's checks.
        let slots = (kv.shape.num_blocks * kv.shape.block_size) as i64;
        ensure!(
            step.slot_mapping.iter().all(|&s| s < slots),
            "cache slot outside the cache of {slots} slots"
        );
        for s in 0..seqs {
            let blocks = (step.context_lens[s] as usize).div_ceil(kv.shape.block_size);
            ensure!(
                blocks <= step.max_blocks_per_seq,
                "sequence {s}: block table too short for its context"
            );
            ensure!(
                step.block_table(s)[..blocks]
                    .iter()
                    .all(|&b| (b as usize) < kv.shape.num_blocks),
                "sequence {s}: block outside the cache of {} blocks",
                kv.shape.num_blocks
            );
        }
        Ok(())
    }
}

impl<B: Backend> Model<B> for Llama<B> {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn limits(&self) -> StepLimits {
        self.limits
    }

    fn backend(&self) -> &B {
        &self.backend
    }

    fn check_step(&self, step: &StepInput, kv: &KvCache<B>) -> Result<()> {
        self.check_step_inner(step, kv)
    }

    fn forward_ops(&mut self, meta: &B::Meta, step: &StepInput, kv: &mut KvCache<B>) -> Result<()> {
        forward_ops(
            &self.backend,
            &self.cfg,
            &self.weights,
            &mut self.ws,
            &self.cos_sin,
            meta,
            step,
            kv,
        )
    }

    fn logits(&self) -> &B::Tensor {
        &self.ws.logits
    }
}

/// The forward pass's ops for `step` (its metadata in `meta`), in order; the logits land in
/// `ws.logits`. Launches only: no allocation, no wait, no copy (so a backend may capture it).
#[allow(clippy::too_many_arguments)]
fn forward_ops<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    w: &LlamaWeights<B>,
    ws: &mut Workspace<B>,
    cos_sin: &B::Tensor,
    meta: &B::Meta,
    step: &StepInput,
    kv: &mut KvCache<B>,
) -> Result<()> {
    let rows = step.num_tokens();
    let (h, inter, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.rms_norm_eps);
    let layout = cfg.qkv_layout();
    let params = AttentionParams {
        layout,
        cache: kv.shape,
        scale: 1.0 / (cfg.head_dim as f32).sqrt(),
        sliding_window: cfg.sliding_window,
    };

    b.embed(&w.embed, meta, h, &mut ws.residual)?;
    for (i, (layer, (k_cache, v_cache))) in w.layers.iter().zip(kv.layers.iter_mut()).enumerate() {
        // The previous layer's MLP output joins the residual stream inside the fused norm.
        if i == 0 {
            b.rms_norm(&ws.residual, &layer.attn_norm, eps, rows, h, &mut ws.normed)?;
        } else {
            b.add_rms_norm(
                &mut ws.residual,
                &ws.delta,
                &layer.attn_norm,
                eps,
                rows,
                h,
                &mut ws.normed,
            )?;
        }
        b.linear(
            &ws.normed,
            &layer.qkv,
            layer.qkv_bias.as_ref(),
            rows,
            h,
            layout.row_width(),
            &mut ws.qkv,
        )?;
        let qk_norm = match (&layer.q_norm, &layer.k_norm) {
            (Some(q_w), Some(k_w)) => Some(QkNorm { q_w, k_w, eps }),
            _ => None,
        };
        let (qkv, norm) = (&mut ws.qkv, qk_norm);
        b.rope_write_kv(qkv, rows, norm, cos_sin, k_cache, v_cache, meta, &params)?;
        b.attention(&ws.qkv, k_cache, v_cache, meta, &params, &mut ws.attn)?;
        b.linear(
            &ws.attn,
            &layer.o,
            layer.o_bias.as_ref(),
            rows,
            cfg.q_dim(),
            h,
            &mut ws.delta,
        )?;

        b.add_rms_norm(
            &mut ws.residual,
            &ws.delta,
            &layer.mlp_norm,
            eps,
            rows,
            h,
            &mut ws.normed,
        )?;
        b.linear(
            &ws.normed,
            &layer.gate_up,
            None,
            rows,
            h,
            2 * inter,
            &mut ws.gate_up,
        )?;
        b.silu_mul(&ws.gate_up, rows, inter, &mut ws.act)?;
        b.linear(&ws.act, &layer.down, None, rows, inter, h, &mut ws.delta)?;
    }
    b.add_rms_norm(
        &mut ws.residual,
        &ws.delta,
        &w.norm,
        eps,
        rows,
        h,
        &mut ws.normed,
    )?;
    let n_logits = step.logits_indices.len();
    b.gather_logit_rows(&ws.normed, meta, h, &mut ws.last)?;
    b.linear(
        &ws.last,
        w.lm_head(),
        None,
        n_logits,
        h,
        cfg.vocab_size,
        &mut ws.logits,
    )?;
    Ok(())
}
