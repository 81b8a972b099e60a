//! The decoder-only transformer (Llama, Mistral, Qwen2, Qwen3), written once over [`Backend`].
//!
//! It sees one flat batch of token rows plus attention metadata ([`StepInput`]) and never
//! allocates during a step: every activation buffer is sized up front for `max_tokens` rows.

use anyhow::{ensure, Result};

use super::config::ModelConfig;
use super::rope::cos_sin_table;
use super::weights::LlamaWeights;
use crate::runtime::backend::{AttentionParams, Backend, CacheShape, QkNorm, QkvLayout};
use crate::runtime::kv_cache::KvCache;
use crate::runtime::sampling::DeviceSampling;
use crate::runtime::step::StepInput;

/// The most a single step may hold.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    /// Token rows per step.
    pub max_tokens: usize,
    /// Sequences (and logit rows) per step.
    pub max_seqs: usize,
}

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
        let layout = qkv_layout(cfg);
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

fn qkv_layout(cfg: &ModelConfig) -> QkvLayout {
    QkvLayout {
        num_heads: cfg.num_heads,
        num_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
    }
}

pub struct Llama<B: Backend> {
    pub cfg: ModelConfig,
    pub limits: StepLimits,
    pub(super) backend: B,
    weights: LlamaWeights<B>,
    cos_sin: B::Tensor, // (max_position_embeddings, head_dim)
    /// Two metadata slots, used in turn: a step's metadata goes up while the step before, in
    /// the other slot, may still be running (see `sampled_step.rs`).
    pub(super) metas: [B::Meta; 2],
    pub(super) next_slot: usize,
    /// Reused buffers for a step padded to a graph shape and its sampling entries.
    pub(super) padded: StepInput,
    pub(super) padded_sampling: Vec<DeviceSampling>,
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
        let new_meta = || backend.new_meta(limits.max_tokens, limits.max_seqs, qkv_layout(&cfg));
        let metas = [new_meta()?, new_meta()?];
        let ws = Workspace::new(&backend, &cfg, limits)?;
        Ok(Llama {
            cfg,
            limits,
            backend,
            weights,
            cos_sin,
            metas,
            next_slot: 0,
            padded: StepInput::default(),
            padded_sampling: Vec::new(),
            ws,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// A paged cache of `num_blocks` blocks of `block_size` tokens for this model.
    pub fn new_kv_cache(&self, num_blocks: usize, block_size: usize) -> Result<KvCache<B>> {
        let shape = CacheShape {
            num_blocks,
            block_size,
            num_kv_heads: self.cfg.num_kv_heads,
            head_dim: self.cfg.head_dim,
        };
        KvCache::new(&self.backend, self.cfg.num_layers, shape)
    }

    /// Runs one step: writes its K/V into `kv` and returns the logits of the rows in
    /// `step.logits_indices`, as `(len(logits_indices), vocab)` on the device.
    pub fn forward(&mut self, step: &StepInput, kv: &mut KvCache<B>) -> Result<&B::Tensor> {
        self.check_step(step, kv)?;
        let slot = self.take_slot();
        self.backend
            .upload_step(step, &[], &[], &mut self.metas[slot])?;
        self.run_ops(step, kv, slot, false, None)?;
        Ok(&self.ws.logits)
    }

    /// The metadata slot the next step uses (they alternate).
    pub(super) fn take_slot(&mut self) -> usize {
        let slot = self.next_slot;
        self.next_slot ^= 1;
        slot
    }

    /// Issues the step whose metadata is in slot `slot` (uploaded already): the forward pass,
    /// then, with `sample_rows`, sampling on the device; or replays the graph the backend
    /// captured for it (`graph`: the step is padded to a graph shape). Then marks its end.
    pub(super) fn run_ops(
        &mut self,
        step: &StepInput,
        kv: &mut KvCache<B>,
        slot: usize,
        graph: bool,
        sample_rows: Option<usize>,
    ) -> Result<()> {
        let b = &self.backend;
        let meta = &mut self.metas[slot];
        // A second attempt runs eagerly when capturing a graph failed (the backend then turns
        // its graphs off): capturing only records the ops, so none of them has run yet.
        for attempt in 0..2 {
            if b.begin_ops(meta, graph && attempt == 0)? {
                break;
            }
            let issued = forward_ops(
                b,
                &self.cfg,
                &self.weights,
                &mut self.ws,
                &self.cos_sin,
                meta,
                step,
                kv,
            )
            .and_then(|()| match sample_rows {
                Some(rows) => b.sample_launch(&self.ws.logits, self.cfg.vocab_size, rows, meta),
                None => Ok(()),
            });
            // A capture must end even when an op failed, or the stream stays in capture mode.
            let ended = b.end_ops(meta, issued.is_ok());
            issued?;
            match ended {
                Ok(()) => break,
                Err(e) if graph && attempt == 0 => {
                    tracing::warn!("running the step eagerly: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
        b.finish_step(meta)
    }

    /// [`forward`](Self::forward), with the logits copied into `out` on the host: one row of
    /// `vocab_size` per wanted row, flat. `out` is resized, so a caller that keeps it allocates
    /// nothing once warmed up (the executor does, every step).
    pub fn forward_into(
        &mut self,
        step: &StepInput,
        kv: &mut KvCache<B>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.forward(step, kv)?;
        self.logits_into(step.logits_indices.len(), out)
    }

    /// Copies the first `rows` logit rows of the last [`forward`](Self::forward) into `out` (resized).
    pub fn logits_into(&self, rows: usize, out: &mut Vec<f32>) -> Result<()> {
        out.resize(rows * self.cfg.vocab_size, 0.0);
        self.backend.download_into(&self.ws.logits, out)
    }

    /// [`forward`](Self::forward), with the logits copied to the host, one `Vec` per wanted row.
    pub fn forward_to_host(
        &mut self,
        step: &StepInput,
        kv: &mut KvCache<B>,
    ) -> Result<Vec<Vec<f32>>> {
        let vocab = self.cfg.vocab_size;
        let n = step.logits_indices.len();
        self.forward(step, kv)?;
        let flat = self.backend.download(&self.ws.logits, n * vocab)?;
        Ok(flat.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Everything a backend would otherwise have to trust: sizes, ranges, consistency.
    pub(super) fn check_step(&self, step: &StepInput, kv: &KvCache<B>) -> Result<()> {
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
    let layout = qkv_layout(cfg);
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
