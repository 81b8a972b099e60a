//! The CPU backend acting as a device that samples on the device and replays graphs of padded
//! decode steps ([`CpuBackend::emulating_device`]).
//!
//! Nothing here is faster than the plain CPU path: it exists so that what the CUDA backend does
//! around its kernels — steps launched ahead and collected later, placeholders filled from the
//! previous step's samples on the "device", decode steps padded to a graph shape, the draw
//! position of a request with a sample in flight — runs in the CPU test suite, with the same
//! engine code, and must give the same tokens as the plain path.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use anyhow::{ensure, Result};

use super::CpuBackend;
use crate::device::backend::{DeviceSampler, StepGraphs};
use crate::device::graph_shape::graph_batch_size;
use crate::device::sampling::{
    sample_entry, DeviceSampling, RowConstraint, Sampled, SamplerScratch,
};
use crate::device::step::StepInput;

/// The CPU backend's step metadata: the [`StepInput`] itself, plus the emulated device
/// sampler's inputs and results.
#[derive(Debug, Default)]
pub struct CpuMeta {
    pub step: StepInput,
    carry: Vec<(u32, u32)>,
    sampling: Vec<DeviceSampling>,
    samples: Vec<Sampled>,
    scratch: Option<SamplerScratch>,
    row: Vec<f32>,
}

impl Deref for CpuMeta {
    type Target = StepInput;
    fn deref(&self) -> &StepInput {
        &self.step
    }
}

impl DerefMut for CpuMeta {
    fn deref_mut(&mut self) -> &mut StepInput {
        &mut self.step
    }
}

impl CpuBackend {
    /// Makes `step` (with its carried rows and sampling entries) the metadata of the next ops.
    pub(super) fn store_step(
        &self,
        step: &StepInput,
        carry: &[(u32, u32)],
        sampling: &[DeviceSampling],
        meta: &mut CpuMeta,
    ) -> Result<()> {
        ensure!(
            self.emulate_device || (carry.is_empty() && sampling.is_empty()),
            "this backend does not sample on the device"
        );
        // clone_from reuses the vectors' capacity: no allocation once warmed up.
        meta.step.clone_from(step);
        meta.carry.clear();
        meta.carry.extend_from_slice(carry);
        meta.sampling.clear();
        meta.sampling.extend_from_slice(sampling);
        meta.samples.clear();
        Ok(())
    }
}

impl StepGraphs<CpuBackend> for CpuBackend {
    fn graph_shape(&self, step: &StepInput, max_rows: usize) -> Option<(usize, usize)> {
        if !self.emulate_device || !step.is_plain_decode() {
            return None;
        }
        let rows = graph_batch_size(step.num_seqs(), max_rows)?;
        Some((rows, step.max_blocks_per_seq.max(1).next_power_of_two()))
    }

    // No graphs are captured: a padded step runs op by op, as the CUDA backend's first step of
    // a shape does.
    fn begin_ops(&self, _: &mut CpuMeta, _: bool) -> Result<bool> {
        Ok(false)
    }

    fn end_ops(&self, _: &mut CpuMeta, _: bool) -> Result<()> {
        Ok(())
    }
}

impl DeviceSampler<CpuBackend> for CpuBackend {
    fn upload_step(
        &self,
        step: &StepInput,
        carry: &[(u32, u32)],
        sampling: &[DeviceSampling],
        meta: &mut CpuMeta,
    ) -> Result<()> {
        self.store_step(step, carry, sampling, meta)
    }

    fn carry_tokens(&self, meta: &mut CpuMeta, prev: &CpuMeta) -> Result<()> {
        for &(row, from) in &meta.carry {
            let token = prev.samples.get(from as usize).map(|s| s.token);
            let slot = meta.step.input_ids.get_mut(row as usize);
            match (token, slot) {
                (Some(t), Some(id)) => *id = t,
                _ => anyhow::bail!("placeholder ({row}, {from}) outside the steps"),
            }
        }
        Ok(())
    }

    fn sample_launch(
        &self,
        logits: &Vec<f32>,
        vocab: usize,
        rows: usize,
        constraints: &[RowConstraint],
        meta: &mut CpuMeta,
    ) -> Result<()> {
        ensure!(
            self.emulate_device,
            "this backend does not sample on the device"
        );
        ensure!(
            rows <= meta.sampling.len() && logits.len() >= rows * vocab,
            "sampling {rows} rows with {} entries from {} logits",
            meta.sampling.len(),
            logits.len()
        );
        let constrained = meta.sampling[..rows].iter().filter(|e| e.constrained);
        ensure!(
            constrained.count() == constraints.len(),
            "{} constraints for the step's constrained rows",
            constraints.len()
        );
        let scratch = meta
            .scratch
            .get_or_insert_with(|| SamplerScratch::new(vocab));
        meta.samples.clear();
        let mut next = constraints.iter();
        for (entry, row) in meta.sampling[..rows].iter().zip(logits.chunks_exact(vocab)) {
            let constraint = if entry.constrained { next.next() } else { None };
            meta.row.clear();
            meta.row.extend_from_slice(row);
            meta.samples
                .push(sample_entry(entry, constraint, &mut meta.row, scratch));
        }
        Ok(())
    }

    fn step_ready(&self, _: &CpuMeta) -> bool {
        true
    }

    fn collect_samples(
        &self,
        meta: &mut CpuMeta,
        sampling: &[DeviceSampling],
        out: &mut Vec<Sampled>,
    ) -> Result<Option<(Instant, Instant)>> {
        ensure!(
            sampling.len() <= meta.samples.len(),
            "{} samples wanted, {} made",
            sampling.len(),
            meta.samples.len()
        );
        out.extend_from_slice(&meta.samples[..sampling.len()]);
        Ok(None)
    }
}
