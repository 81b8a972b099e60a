//! Steps sampled on the device and launched without waiting: the executor launches step N+1
//! before it collects step N's tokens, so the device always has the next step queued.
//!
//! A launched step owns one of the runner's two metadata slots until it is collected. Its carried
//! rows (a placeholder's input is a sample of the step launched just before) are filled in on
//! the device from that step's samples, which need not have reached the host. A plain decode
//! step may be padded to the backend's graph shape, so that a captured graph replays it.
//!
//! A step with constrained rows (a grammar's mask, a logit bias) is launched in two parts: its
//! forward pass at once, its sampling once the caller has the rows' constraints
//! ([`Runner::sample_launched`]): a row's mask depends on the token sampled just before it, which
//! reaches the host only when the step before is collected. The device runs the forward pass
//! meanwhile; only the sampling waits for the masks. Such steps are not padded to graphs.

use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::{AfterForward, Runner};
use crate::device::backend::Backend;
use crate::device::kv_cache::KvCache;
use crate::device::sampling::{DeviceSampling, RowConstraint, Sampled};
use crate::device::step::StepInput;

/// A step launched by [`Runner::launch_sampled`], to be passed to [`Runner::collect_sampled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a launched step holds a metadata slot until it is collected"]
pub struct LaunchedStep {
    slot: usize,
    /// The rows whose sampling waits for [`Runner::sample_launched`] (none: it was launched).
    awaiting: Option<usize>,
}

impl LaunchedStep {
    /// Whether its sampling waits for its rows' constraints ([`Runner::sample_launched`]).
    pub fn awaits_sampling(&self) -> bool {
        self.awaiting.is_some()
    }
}

impl<B: Backend> Runner<B> {
    /// Whether the backend samples on the device (else only the `forward*` methods apply).
    pub fn samples_on_device(&self) -> bool {
        self.backend().device_sampler().is_some()
    }

    /// Launches `step` with its rows sampled on the device with `sampling` (one entry per
    /// `step.logits_indices`), without waiting for it. `carry` (`(row, i)`) fills row `row`'s
    /// input id with sample `i` of the step launched just before, which must not be collected
    /// yet (nor await its sampling). At most two steps may be launched and not collected. With a
    /// constrained entry only the forward pass is launched: see [`Self::sample_launched`].
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
        let constrained = sampling.iter().any(|e| e.constrained);
        let shape = self
            .backend()
            .step_graphs()
            .filter(|_| !constrained)
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
            let after = if constrained {
                AfterForward::AwaitSampling
            } else {
                AfterForward::Sample(run_sampling.len())
            };
            self.run_ops(run, kv, slot, shape.is_some(), after)
        })();
        self.padded = padded;
        self.padded_sampling = padded_sampling;
        result.map(|()| LaunchedStep {
            slot,
            awaiting: constrained.then_some(sampling.len()),
        })
    }

    /// Launches the sampling of a step whose forward pass [`launch_sampled`] launched alone
    /// (it had constrained entries): `constraints` holds one per constrained entry, in order.
    /// Call it before launching another step, since the step's logits are overwritten by the
    /// next forward pass. Returns the step, now to be collected.
    ///
    /// [`launch_sampled`]: Self::launch_sampled
    pub fn sample_launched(
        &mut self,
        launched: LaunchedStep,
        constraints: &[RowConstraint],
    ) -> Result<LaunchedStep> {
        let rows = launched
            .awaiting
            .context("this step's sampling was launched with it")?;
        let sampler = self
            .model
            .backend()
            .device_sampler()
            .context("this backend does not sample on the device")?;
        let vocab = self.model.config().vocab_size;
        let meta = &mut self.metas[launched.slot];
        let sampled = sampler.sample_launch(self.model.logits(), vocab, rows, constraints, meta);
        // The step's end is marked even when sampling failed, so the slot is released in order.
        let finished = self.model.backend().finish_step(meta);
        sampled.and(finished)?;
        Ok(LaunchedStep {
            slot: launched.slot,
            awaiting: None,
        })
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
        ensure!(
            !launched.awaits_sampling(),
            "internal error: a step collected before its sampling was launched"
        );
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
        ensure!(
            !sampling.iter().any(|e| e.constrained),
            "constrained rows need their constraints: launch_sampled, then sample_launched"
        );
        let launched = self.launch_sampled(step, kv, sampling, &[])?;
        self.collect_sampled(launched, sampling, out)?;
        Ok(true)
    }
}
