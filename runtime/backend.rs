//! The operations the forward pass needs — exactly those, nothing more.
//!
//! The model is written once against this trait. The CPU backend implements it plainly and is
//! the reference; the CUDA backend implements it with kernels and is checked against the CPU one.
//! Every op writes into a buffer the caller allocated up front, so a step allocates nothing.
//! `rows` is the number of token rows live in this step; buffers may be larger.

use anyhow::Result;

use super::sampling::{DeviceSampling, Sampled};
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

pub trait Backend {
    /// A buffer on the device, flat and row-major.
    type Tensor;
    /// A step's metadata, resident where the ops read it.
    type Meta;
    /// A weight matrix, in whatever layout the backend's matrix product reads fastest.
    type Weight;

    /// Copies host data to a new device tensor (used at load time).
    fn upload(&self, data: &[f32]) -> Result<Self::Tensor>;
    /// Uploads a `[n, k]` row-major weight matrix (HF layout) for [`linear`](Self::linear) and
    /// [`embed`](Self::embed) (used at load time).
    fn upload_weight(&self, data: &[f32], n: usize, k: usize) -> Result<Self::Weight>;
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

    /// Samples row `i` of `logits` (`[params.len(), vocab]`, as the model's forward pass leaves
    /// them) with `params[i]`, on the device, appending one [`Sampled`] per row to `out`: the
    /// same token [`crate::runtime::sampling::sample`] picks (see `DeviceSampling`). `meta` holds
    /// the parameter and result buffers (sized for `max_seqs` rows by [`new_meta`]).
    ///
    /// `Ok(false)`, with `out` untouched, means this backend does not sample on the device (the
    /// default): the caller downloads the logits and samples on the host.
    ///
    /// [`new_meta`]: Self::new_meta
    fn sample_rows(
        &self,
        logits: &Self::Tensor,
        vocab: usize,
        params: &[DeviceSampling],
        meta: &mut Self::Meta,
        out: &mut Vec<Sampled>,
    ) -> Result<bool> {
        let _ = (logits, vocab, params, meta, out);
        Ok(false)
    }
}
