//! The operations the forward pass needs — exactly those, nothing more.
//!
//! The model is written once against this trait. The CPU backend implements it plainly and is
//! the reference; the CUDA backend implements it with kernels and is checked against the CPU one.
//! Every op writes into a buffer the caller allocated up front, so a step allocates nothing.
//! `rows` is the number of token rows live in this step; buffers may be larger.

use std::time::Instant;

use anyhow::Result;

use super::quant::matrix::QuantMatrix;
use super::sampling::{DeviceSampling, RowConstraint, Sampled};
use super::step::StepInput;

/// Layout of the fused q|k|v projection output: each row is `[q heads | k heads | v heads]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkvLayout {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl QkvLayout {
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
    pub fn row_width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }
}

/// Shape of one layer's paged cache: K and V are each `[num_blocks, block_size, kv_heads, head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl CacheShape {
    pub fn elements(&self) -> usize {
        self.num_blocks * self.block_size * self.num_kv_heads * self.head_dim
    }
}

/// Attention settings that do not change between steps.
#[derive(Debug, Clone, Copy)]
pub struct AttentionParams {
    pub layout: QkvLayout,
    pub cache: CacheShape,
    pub scale: f32,
    /// Keys more than `window - 1` positions behind the query are masked.
    pub sliding_window: Option<usize>,
}

/// The RMSNorm weights of the q and k heads (Qwen3's q_norm / k_norm), for
/// [`Backend::rope_write_kv`].
pub struct QkNorm<'a, T> {
    pub q_w: &'a T,
    pub k_w: &'a T,
    pub eps: f32,
}

pub trait Backend: Send + 'static {
    /// A buffer on the device, flat and row-major.
    type Tensor: Send;
    /// A step's metadata, resident where the ops read it.
    type Meta: Send;
    /// A weight matrix, in whatever layout the backend's matrix product reads fastest.
    type Weight: Send;

    /// Copies host data to a new device tensor (used at load time).
    fn upload(&self, data: &[f32]) -> Result<Self::Tensor>;
    /// Uploads a `[n, k]` row-major weight matrix (HF layout) for [`linear`](Self::linear) and
    /// [`embed`](Self::embed) (used at load time).
    fn upload_weight(&self, data: &[f32], n: usize, k: usize) -> Result<Self::Weight>;
    /// Uploads a `[n, k]` weight matrix kept in its GGML blocks. A backend that computes on the
    /// blocks keeps them; the default dequantises to f32 and calls
    /// [`upload_weight`](Self::upload_weight).
    fn upload_quant_weight(&self, w: QuantMatrix) -> Result<Self::Weight> {
        let data = w.to_f32()?;
        self.upload_weight(&data, w.n(), w.k())
    }
    /// A new zero-filled device tensor of `len` elements.
    fn zeros(&self, len: usize) -> Result<Self::Tensor>;
    /// Copies the first `len` elements back to the host.
    fn download(&self, t: &Self::Tensor, len: usize) -> Result<Vec<f32>>;
    /// Copies the first `out.len()` elements into `out` (a buffer the caller reuses every step).
    fn download_into(&self, t: &Self::Tensor, out: &mut [f32]) -> Result<()> {
        let v = self.download(t, out.len())?;
        out.copy_from_slice(&v);
        Ok(())
    }

    /// Metadata buffers able to hold steps of up to `max_tokens` rows and `max_seqs` sequences,
    /// with any attention workspace sized for `layout` (so no step allocates).
    fn new_meta(&self, max_tokens: usize, max_seqs: usize, layout: QkvLayout)
        -> Result<Self::Meta>;
    /// Makes `step` the metadata the next ops read.
    fn upload_meta(&self, step: &StepInput, meta: &mut Self::Meta) -> Result<()>;

    /// `out[t] = table[input_ids[t]]`; table is `[vocab, dim]`.
    fn embed(
        &self,
        table: &Self::Weight,
        meta: &Self::Meta,
        dim: usize,
        out: &mut Self::Tensor,
    ) -> Result<()>;

    /// `out = rms_norm(x) * w` over rows of width `dim`.
    fn rms_norm(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Tensor,
    ) -> Result<()>;

    /// `residual += delta; out = rms_norm(residual) * w` — the residual add fused with the norm.
    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm(
        &self,
        residual: &mut Self::Tensor,
        delta: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Self::Tensor,
    ) -> Result<()>;

    /// `out[rows, n] = x[rows, k] · wᵀ (+ bias)`, with `w` stored `[n, k]` as in HF checkpoints.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        bias: Option<&Self::Tensor>,
        rows: usize,
        k: usize,
        n: usize,
        out: &mut Self::Tensor,
    ) -> Result<()>;

    /// RMSNorm of every q head (weight `q_w`) and k head (weight `k_w`) in place (Qwen3).
    #[allow(clippy::too_many_arguments)]
    fn qk_norm(
        &self,
        qkv: &mut Self::Tensor,
        q_w: &Self::Tensor,
        k_w: &Self::Tensor,
        eps: f32,
        rows: usize,
        layout: QkvLayout,
    ) -> Result<()>;

    /// Rotates the q and k heads in place (HF "rotate half" pairing: `i` with `i + head_dim/2`).
    /// `cos_sin` is `[max_positions, head_dim]`: cos for the first half, sin for the second.
    fn rope(
        &self,
        qkv: &mut Self::Tensor,
        cos_sin: &Self::Tensor,
        meta: &Self::Meta,
        layout: QkvLayout,
    ) -> Result<()>;

    /// Writes each row's k and v heads into the paged cache at its slot (slot -1 = skip).
    fn write_kv(
        &self,
        qkv: &Self::Tensor,
        k_cache: &mut Self::Tensor,
        v_cache: &mut Self::Tensor,
        meta: &Self::Meta,
        params: &AttentionParams,
    ) -> Result<()>;

    /// [`Backend::qk_norm`] (where the model has q/k norms), [`Backend::rope`], then
    /// [`Backend::write_kv`] of the rotated rows: what each layer runs before attention, on
    /// `rows` rows. A backend may do them in one pass (the CUDA backend: one launch).
    #[allow(clippy::too_many_arguments)]
    fn rope_write_kv(
        &self,
        qkv: &mut Self::Tensor,
        rows: usize,
        qk_norm: Option<QkNorm<'_, Self::Tensor>>,
        cos_sin: &Self::Tensor,
        k_cache: &mut Self::Tensor,
        v_cache: &mut Self::Tensor,
        meta: &Self::Meta,
        params: &AttentionParams,
    ) -> Result<()> {
        if let Some(n) = qk_norm {
            self.qk_norm(qkv, n.q_w, n.k_w, n.eps, rows, params.layout)?;
        }
        self.rope(qkv, cos_sin, meta, params.layout)?;
        self.write_kv(qkv, k_cache, v_cache, meta, params)
    }

    /// Causal attention of each row's q heads over its sequence's cached keys and values.
    /// `out` is `[rows, num_heads * head_dim]`.
    fn attention(
        &self,
        qkv: &Self::Tensor,
        k_cache: &Self::Tensor,
        v_cache: &Self::Tensor,
        meta: &Self::Meta,
        params: &AttentionParams,
        out: &mut Self::Tensor,
    ) -> Result<()>;

    /// `out[r] = silu(gate_up[r, ..inter]) * gate_up[r, inter..]`.
    fn silu_mul(
        &self,
        gate_up: &Self::Tensor,
        rows: usize,
        inter: usize,
        out: &mut Self::Tensor,
    ) -> Result<()>;

    /// `out[i] = x[logits_indices[i]]` for rows of width `dim`.
    fn gather_logit_rows(
        &self,
        x: &Self::Tensor,
        meta: &Self::Meta,
        dim: usize,
        out: &mut Self::Tensor,
    ) -> Result<()>;

    /// Marks the end of the step whose metadata is in `meta`, after its ops (and its sampler,
    /// where it sampled on the device). A backend whose metadata and samples move on streams of
    /// their own orders the slot's next upload, and the samples' way back, after this point; the
    /// others have nothing to do.
    fn finish_step(&self, meta: &mut Self::Meta) -> Result<()> {
        let _ = meta;
        Ok(())
    }

    /// Sampling on the device and launching steps ahead, where this backend does them; `None`:
    /// the executor downloads the logits and samples on the host, one step at a time.
    fn device_sampler(&self) -> Option<&dyn DeviceSampler<Self>> {
        None
    }

    /// Padding decode steps to graph shapes and replaying graphs captured for them, where this
    /// backend does it; `None`: every step runs as it is, op by op.
    fn step_graphs(&self) -> Option<&dyn StepGraphs<Self>> {
        None
    }
}

/// A backend's sampler on the device: steps sampled there and launched without waiting (see
/// `Runner::launch_sampled`). Reached through [`Backend::device_sampler`].
pub trait DeviceSampler<B: Backend + ?Sized> {
    /// [`Backend::upload_meta`], plus what a step sampled on the device needs: the carried rows
    /// (`(row, i)`: the row's input id is sample `i` of the step before, filled in by
    /// [`carry_tokens`](Self::carry_tokens)) and one sampling entry per logits row.
    fn upload_step(
        &self,
        step: &StepInput,
        carry: &[(u32, u32)],
        sampling: &[DeviceSampling],
        meta: &mut B::Meta,
    ) -> Result<()>;

    /// Writes the carried input ids of the step in `meta` from the samples of the step in
    /// `prev` (launched before it and maybe still running).
    fn carry_tokens(&self, meta: &mut B::Meta, prev: &B::Meta) -> Result<()>;

    /// Samples the first `rows` rows of `logits` (`[rows, vocab]`) with the step's sampling
    /// entries, on the device, leaving the results in `meta`; `constraints` holds one
    /// [`RowConstraint`] per constrained entry among them, in order. Same token as
    /// [`crate::device::sampling::sample`] for the same entry (see `DeviceSampling`).
    fn sample_launch(
        &self,
        logits: &B::Tensor,
        vocab: usize,
        rows: usize,
        constraints: &[RowConstraint],
        meta: &mut B::Meta,
    ) -> Result<()>;

    /// Whether the samples of the step in `meta` are back (collecting them will not wait).
    fn step_ready(&self, meta: &B::Meta) -> bool;

    /// Waits for the samples of the step in `meta` and appends one per entry of `sampling`
    /// (the entries it was uploaded with, padding excluded) to `out`. Returns when the device
    /// started and finished the step, where the backend can tell.
    fn collect_samples(
        &self,
        meta: &mut B::Meta,
        sampling: &[DeviceSampling],
        out: &mut Vec<Sampled>,
    ) -> Result<Option<(Instant, Instant)>>;
}

/// A backend's graphs of decode steps: a plain decode step padded to a graph shape is captured
/// once and replayed after. Reached through [`Backend::step_graphs`].
pub trait StepGraphs<B: Backend + ?Sized> {
    /// The decode-step shape `(rows, block-table width)`, rows at most `max_rows`, this backend
    /// would rather run `step` at (padded, see [`StepInput::pad_decode`]), so a captured graph
    /// can replay it; `None` to run it as it is.
    fn graph_shape(&self, step: &StepInput, max_rows: usize) -> Option<(usize, usize)>;

    /// Called before a step's ops; `graph`: the step was padded to a [`graph_shape`]. `Ok(true)`:
    /// a graph captured for this step's shape was launched in their place, so the caller skips
    /// them. `Ok(false)`: issue them (a backend may be capturing them), then call
    /// [`end_ops`](Self::end_ops).
    ///
    /// [`graph_shape`]: Self::graph_shape
    fn begin_ops(&self, meta: &mut B::Meta, graph: bool) -> Result<bool>;

    /// After the ops [`begin_ops`](Self::begin_ops) asked for (`ok`: all of them were issued).
    fn end_ops(&self, meta: &mut B::Meta, ok: bool) -> Result<()>;
}
