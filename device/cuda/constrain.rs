//! Constrained rows on the device sampler (structured outputs, `logit_bias`): their masks and
//! biases go up when the step's sampling is launched — after the step's forward pass was
//! launched, since a row's mask depends on the token sampled just before it — as one copy from
//! page-locked memory on the copy stream; `constrain_rows` (kernels/sampling.cu) then writes each
//! row's adjusted copy, which `sample_rows` picks from.
//!
//! The buffers are made on a slot's first constrained step and grown when a step needs more:
//! steps with constrained rows are not captured in graphs, so their addresses may change.

use anyhow::{ensure, Result};
use cudarc::driver::{CudaEvent, CudaSlice};

use super::pinned::PinnedWords;
use super::{u32_of, CudaBackend, CudaMeta, CudaTensor};
use crate::device::sampling::device_words::{pack_constraints, ConstraintLayout};
use crate::device::sampling::{DeviceSampling, RowConstraint};

/// `SAMPLE_THREADS` in sampling.cu.
const THREADS: u32 = 512;

/// One metadata slot's buffers for constrained rows.
pub(super) struct ConstrainBuffers {
    /// The packed words, built here then copied into `staging`.
    host: Vec<u32>,
    staging: PinnedWords,
    dev: CudaSlice<u32>,
    /// The constrained rows' adjusted copies, `[rows, vocab]` f32.
    adjusted: CudaSlice<f32>,
    /// Copy stream: the last copy out of `staging` is done (the host waits before rewriting it;
    /// the compute stream before reading `dev`).
    uploaded: CudaEvent,
    /// Compute stream: the buffers are allocated and zeroed (in that stream's order), so the copy
    /// stream may write them.
    allocated: CudaEvent,
}

impl ConstrainBuffers {
    fn new(b: &CudaBackend, words: usize, adjusted: usize) -> Result<Self> {
        let made = ConstrainBuffers {
            host: Vec::new(),
            staging: PinnedWords::new(&b.ctx, words)?,
            dev: b.stream.alloc_zeros::<u32>(words.max(1))?,
            adjusted: b.stream.alloc_zeros::<f32>(adjusted.max(1))?,
            uploaded: b.ctx.new_event(None)?,
            allocated: b.ctx.new_event(None)?,
        };
        made.allocated.record(&b.stream)?;
        Ok(made)
    }

    fn fits(&self, words: usize, adjusted: usize) -> bool {
        self.staging.as_slice().len() >= words && self.adjusted.len() >= adjusted
    }
}

impl CudaBackend {
    /// Uploads `constraints` (one per constrained row of the step in `meta`, in order) and
    /// launches `constrain_rows` on `logits`; returns the address of the adjusted rows for
    /// `sample_rows`.
    pub(super) fn constrain_launch(
        &self,
        logits: &CudaTensor,
        vocab: usize,
        constraints: &[RowConstraint],
        meta: &mut CudaMeta,
    ) -> Result<u64> {
        let rows = &meta.constrained_rows;
        ensure!(
            constraints.len() == rows.len(),
            "{} constraints for {} constrained rows",
            constraints.len(),
            rows.len()
        );
        let mut host = meta
            .constrain
            .as_mut()
            .map(|c| std::mem::take(&mut c.host))
            .unwrap_or_default();
        let layout = pack_constraints(rows, constraints, vocab, &mut host);
        let adjusted = rows.len() * vocab;
        if !meta
            .constrain
            .as_ref()
            .is_some_and(|c| c.fits(layout.words, adjusted))
        {
            // Grown by powers of two so that a slowly growing batch reallocates rarely.
            let grown = ConstrainBuffers::new(
                self,
                layout.words.next_power_of_two(),
                rows.len().next_power_of_two() * vocab,
            )?;
            meta.constrain = Some(grown);
        }
        let c = meta.constrain.as_mut().expect("made above");
        // The staging words are rewritten only once their last copy is done, and the device
        // words only once the slot's last step (which read them) is.
        c.uploaded.synchronize()?;
        c.staging.as_mut_slice()[..layout.words].copy_from_slice(&host);
        c.host = host;
        self.copy_stream.wait(&meta.events.step_done)?;
        self.copy_stream.wait(&c.allocated)?;
        c.staging
            .copy_to_device(self.ptr(&c.dev), layout.words, self.copy_stream.cu_stream())?;
        c.uploaded.record(&self.copy_stream)?;
        self.stream.wait(&c.uploaded)?;
        let ConstraintLayout {
            masks_at, bias_at, ..
        } = layout;
        let base = self.ptr(&c.dev);
        let (lp, info, masks, bias, out) = (
            self.tp(logits),
            base,
            base + 4 * masks_at as u64,
            base + 4 * bias_at as u64,
            self.ptr(&c.adjusted),
        );
        let v32 = u32_of(vocab, "vocab")?;
        let n = u32_of(rows.len(), "constrained rows")?;
        self.launch(&self.k.constrain_rows, (n, 1, 1), THREADS, |b| {
            b.arg(&lp)
                .arg(&v32)
                .arg(&info)
                .arg(&masks)
                .arg(&bias)
                .arg(&out);
        })?;
        Ok(out)
    }
}

/// Records which of the step's entries are constrained (their constraints come at sampling).
pub(super) fn set_constrained_rows(meta: &mut CudaMeta, sampling: &[DeviceSampling]) {
    meta.constrained_rows.clear();
    let rows = (0u32..).zip(sampling).filter(|(_, e)| e.constrained);
    meta.constrained_rows.extend(rows.map(|(i, _)| i));
}
