//! Steps sampled on the device and launched without waiting: the executor launches step N+1
//! before it collects step N's tokens, so the device always has the next step queued.
//!
//! A launched step owns one of the runner's two metadata slots until it is collected. Its carried
//! rows (a placeholder's input is a sample of the step launched just before) are filled in on
//! the device from that step's samples, which need not have reached the host. A plain decode
//! step may be padded to the backend's graph shape, so that a captured graph replays it.

use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::Runner;
use crate::device::backend::Backend;
use crate::device::kv_cache::KvCache;
use crate::device::sampling::{DeviceSampling, Sampled};
use crate::device::step::StepInput;

/// A step launched by [`Runner::launch_sampled`], to be passed to [`Runner::collect_sampled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a launched step holds a metadata slot until it is collected"]
pub struct LaunchedStep {
    slot: usize,
}

impl<B: Backend> Runner<B> {
    /// Whether the backend samples on the device (else only the `forward*` methods apply).
    pub fn samples_on_device(&self) -> bool {
        self.backend().device_sampler().is_some()
    }

    /// Launches `step` with its rows sampled on the device with `sampling` (one entry per
    /// `step.logits_indices`), without waiting for it. `carry` (`(row, i)`) fills row `row`'s
    /// input id with sample `i` of the step launched just before, which must not be collected
    /// yet. At most two steps may be launched and not collected.
    pub fn launch_sampled(
        &mut self,
        step: &StepInput,
        kv: &mut KvCache<B>,
        sampling: &[DeviceSampling],
        carry: &[(u32, u32)],
    ) -> Result<LaunchedStep> {
        ensure!(
            self.samples_on_device(),
            "this backend does not sample on the device"
        );
        ensure!(
            sampling.len() == step.logits_indices.len(),
            "{} sampling entries for {} logit rows",
            sampling.len(),
            step.logits_indices.len()
        );
        ensure!(
            carry
                .iter()
                .all(|&(row, _)| (row as usize) < step.num_tokens()),
            "a carried row is outside the step"
        );
        self.model.check_step(step, kv)?;
        let slot = self.take_slot();
        let limits = self.limits();
        let max_rows = limits.max_seqs.min(limits.max_tokens);
        let shape = self
            .backend()
            .step_graphs()
            .and_then(|g| g.graph_shape(step, max_rows));
        // The padded copies are taken out of `self` while the step runs, so it can borrow both.
        let mut padded = std::mem::take(&mut self.padded);
        let mut padded_sampling = std::mem::take(&mut self.padded_sampling);
        let result = (|| {
            let (run, run_sampling) = match shape {
                Some((rows, width)) => {
                    step.pad_decode(rows, width, &mut padded)?;
                    padded_sampling.clear();
                    padded_sampling.extend_from_slice(sampling);
                    padded_sampling.resize(rows, DeviceSampling::GREEDY);
                    (&padded, padded_sampling.as_slice())
                }
                None => (step, sampling),
            };
            let (a, b) = self.metas.split_at_mut(1);
            let (meta, prev) = if slot == 0 {
                (&mut a[0], &b[0])
            } else {
                (&mut b[0], &a[0])
            };
            let sampler = self
                .model
                .backend()
                .device_sampler()
                .context("this backend does not sample on the device")?;
            sampler.upload_step(run, carry, run_sampling, meta)?;
            if !carry.is_empty() {
                sampler.carry_tokens(meta, prev)?;
            }
            self.run_ops(run, kv, slot, shape.is_some(), Some(run_sampling.len()))
        })();
        self.padded = padded;
        self.padded_sampling = padded_sampling;
        result.map(|()| LaunchedStep { slot })
    }

    /// Waits for a launched step's samples; appends one per entry of the `sampling` it was
    /// launched with to `out`. Returns when the device started and finished the step, where the
    /// backend can tell.
    pub fn collect_sampled(
        &mut self,
        launched: LaunchedStep,
        sampling: &[DeviceSampling],
        out: &mut Vec<Sampled>,
    ) -> Result<Option<(Instant, Instant)>> {
        let sampler = self
            .model
            .backend()
            .device_sampler()
            .context("this backend does not sample on the device")?;
        sampler.collect_samples(&mut self.metas[launched.slot], sampling, out)
    }

    /// Whether a launched step's samples are back, so collecting it will not wait.
    pub fn step_ready(&self, launched: LaunchedStep) -> bool {
        let meta = &self.metas[launched.slot];
        self.backend()
            .device_sampler()
            .is_none_or(|s| s.step_ready(meta))
    }

    /// [`launch_sampled`](Self::launch_sampled) without carried rows, then
    /// [`collect_sampled`](Self::collect_sampled): one step, its samples appended to `out`.
    /// `Ok(false)` (nothing run) when the backend does not sample on the device.
    pub fn forward_sample(
        &mut self,
        step: &StepInput,
        kv: &mut KvCache<B>,
        sampling: &[DeviceSampling],
        out: &mut Vec<Sampled>,
    ) -> Result<bool> {
        if !self.samples_on_device() {
            return Ok(false);
        }
        let launched = self.launch_sampled(step, kv, sampling, &[])?;
        self.collect_sampled(launched, sampling, out)?;
        Ok(true)
    }
}
