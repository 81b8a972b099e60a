//! The CPU reference backend: plain, obviously right ops in f32, with a real GEMM for the matmuls.
//! Every CUDA kernel is checked against these.

mod attention;
mod emulated;
mod gemm;
mod ops;
mod packed;
mod quant_matmul;
mod weight;

use anyhow::{ensure, Result};

use super::backend::{AttentionParams, Backend, DeviceSampler, QkvLayout, StepGraphs};
use super::quant::matrix::QuantMatrix;
use super::step::StepInput;

pub use attention::{attention, write_kv};
pub use gemm::matmul_transposed;
pub use ops::{add_rms_norm, embed, qk_norm, rms_norm, rope, silu_mul};
pub use packed::{matmul_packed, PackedWeight};
pub use quant_matmul::matmul_quant;
pub use weight::CpuWeight;

/// The CPU device. Tensors are host vectors; metadata is the host [`StepInput`] itself (plus,
/// when it emulates a device sampler, that sampler's inputs and results: [`CpuMeta`]).
#[derive(Debug, Default, Clone)]
pub struct CpuBackend {
    /// Whether to act as a backend that samples on the device and replays graphs of padded decode
    /// steps (see `emulated.rs`): the executor's launch-ahead path, checked on the CPU.
    emulate_device: bool,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend::default()
    }

    /// A CPU backend that emulates sampling on the device and padding decode steps to graph
    /// shapes, so the launch-ahead executor path and step padding run (and are tested) here.
    pub fn emulating_device() -> Self {
        CpuBackend {
            emulate_device: true,
        }
    }
}

pub use emulated::CpuMeta;

/// `out[i] = table[ids[i]]`, dequantising only the rows looked up (see [`embed`] for the
/// row-major f32 one).
fn embed_rows(table: &CpuWeight, ids: &[u32], dim: usize, out: &mut [f32]) -> Result<()> {
    ensure!(
        table.k() == dim,
        "embed: table rows have {} elements, not {dim}",
        table.k()
    );
    ensure!(out.len() >= ids.len() * dim, "embed: output too small");
    for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
        table.row_into(id as usize, row)?;
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Tensor = Vec<f32>;
    type Meta = CpuMeta;
    type Weight = CpuWeight;

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn upload_weight(&self, data: &[f32], n: usize, k: usize) -> Result<CpuWeight> {
        Ok(CpuWeight::F32(PackedWeight::from_rows(data, n, k)?))
    }

    /// Keeps the blocks: `linear` multiplies on them and `embed` dequantises the rows it reads.
    fn upload_quant_weight(&self, w: QuantMatrix) -> Result<CpuWeight> {
        Ok(CpuWeight::Blocks(w))
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn download(&self, t: &Vec<f32>, len: usize) -> Result<Vec<f32>> {
        ensure!(
            len <= t.len(),
            "download of {len} elements from a tensor of {}",
            t.len()
        );
        Ok(t[..len].to_vec())
    }

    fn download_into(&self, t: &Vec<f32>, out: &mut [f32]) -> Result<()> {
        ensure!(
            out.len() <= t.len(),
            "download of {} elements from a tensor of {}",
            out.len(),
            t.len()
        );
        out.copy_from_slice(&t[..out.len()]);
        Ok(())
    }

    fn new_meta(&self, max_tokens: usize, max_seqs: usize, _: QkvLayout) -> Result<CpuMeta> {
        let mut m = CpuMeta::default();
        m.input_ids.reserve(max_tokens);
        m.positions.reserve(max_tokens);
        m.slot_mapping.reserve(max_tokens);
        m.context_lens.reserve(max_seqs);
        m.query_start_locs.reserve(max_seqs + 1);
        Ok(m)
    }

    fn upload_meta(&self, step: &StepInput, meta: &mut CpuMeta) -> Result<()> {
        self.store_step(step, &[], &[], meta)
    }

    // The emulated device sampler and graph padding (emulated.rs); off unless
    // `CpuBackend::emulating_device`.

    fn device_sampler(&self) -> Option<&dyn DeviceSampler<Self>> {
        self.emulate_device
            .then_some(self as &dyn DeviceSampler<Self>)
    }

    fn step_graphs(&self) -> Option<&dyn StepGraphs<Self>> {
        self.emulate_device.then_some(self as &dyn StepGraphs<Self>)
    }

    fn embed(
        &self,
        table: &CpuWeight,
        meta: &CpuMeta,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        embed_rows(table, &meta.input_ids, dim, out)
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        rms_norm(&x[..rows * dim], w, eps, &mut out[..rows * dim]);
        Ok(())
    }

    fn add_rms_norm(
        &self,
        residual: &mut Vec<f32>,
        delta: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let n = rows * dim;
        add_rms_norm(&mut residual[..n], &delta[..n], w, eps, &mut out[..n]);
        Ok(())
    }

    fn linear(
        &self,
        x: &Vec<f32>,
        w: &CpuWeight,
        bias: Option<&Vec<f32>>,
        rows: usize,
        k: usize,
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        ensure!(
            (w.n(), w.k()) == (n, k),
            "linear: weight is {}x{}, the call says {n}x{k}",
            w.n(),
            w.k()
        );
        w.matmul(
            &x[..rows * k],
            bias.map(|b| b.as_slice()),
            rows,
            &mut out[..rows * n],
        )
    }

    fn qk_norm(
        &self,
        qkv: &mut Vec<f32>,
        q_w: &Vec<f32>,
        k_w: &Vec<f32>,
        eps: f32,
        rows: usize,
        layout: QkvLayout,
    ) -> Result<()> {
        qk_norm(&mut qkv[..rows * layout.row_width()], q_w, k_w, eps, layout);
        Ok(())
    }

    fn rope(
        &self,
        qkv: &mut Vec<f32>,
        cos_sin: &Vec<f32>,
        meta: &CpuMeta,
        layout: QkvLayout,
    ) -> Result<()> {
        rope(qkv, cos_sin, &meta.positions, layout)
    }

    fn write_kv(
        &self,
        qkv: &Vec<f32>,
        k_cache: &mut Vec<f32>,
        v_cache: &mut Vec<f32>,
        meta: &CpuMeta,
        params: &AttentionParams,
    ) -> Result<()> {
        write_kv(qkv, k_cache, v_cache, &meta.slot_mapping, params)
    }

    fn attention(
        &self,
        qkv: &Vec<f32>,
        k_cache: &Vec<f32>,
        v_cache: &Vec<f32>,
        meta: &CpuMeta,
        params: &AttentionParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        attention(qkv, k_cache, v_cache, meta, params, out)
    }

    fn silu_mul(
        &self,
        gate_up: &Vec<f32>,
        rows: usize,
        inter: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        silu_mul(
            &gate_up[..rows * 2 * inter],
            inter,
            &mut out[..rows * inter],
        );
        Ok(())
    }

    fn gather_logit_rows(
        &self,
        x: &Vec<f32>,
        meta: &CpuMeta,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        embed(x, &meta.logits_indices, dim, out)
    }
}
