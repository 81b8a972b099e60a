//! A step's traffic with the host, on streams of its own so the compute stream never waits for
//! the host: the metadata goes up as one copy from page-locked memory on the copy stream, the
//! placeholders are filled on the device from the previous step's samples, and the samples come
//! back on the return stream. Events order the three streams per metadata slot (see
//! [`SlotEvents`](super::meta::SlotEvents)); the host blocks only when it collects a step's tokens.
//!
//! tests/cuda_engine.rs (`launch_ahead_*`, `graphs_*`) checks it, on a GPU or the emulated
//! device; the CPU's emulated device sampler runs the same executor path.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use super::attention::PREFILL_ROWS;
use super::constrain::set_constrained_rows;
use super::pinned::PinnedWords;
use super::sampling::check_entries;
use super::{u32_of, CudaBackend, CudaMeta};
use crate::device::sampling::device_words::{pack_entries, OUT_WORDS, PARAM_WORDS};
use crate::device::sampling::{DeviceSampling, Sampled};
use crate::device::step::StepInput;

impl CudaBackend {
    /// [`crate::device::backend::Backend::upload_step`] on this device.
    pub(super) fn upload_step_op(
        &self,
        step: &StepInput,
        carry: &[(u32, u32)],
        sampling: &[DeviceSampling],
        meta: &mut CudaMeta,
    ) -> Result<()> {
        let (t, s) = (step.num_tokens(), step.num_seqs());
        ensure!(
            t <= meta.max_tokens
                && s <= meta.max_seqs
                && step.logits_indices.len() <= meta.max_seqs,
            "step of {t} tokens / {s} sequences / {} logit rows exceeds the metadata buffers \
             ({} tokens, {} sequences)",
            step.logits_indices.len(),
            meta.max_tokens,
            meta.max_seqs
        );
        ensure!(
            step.positions.len() == t
                && step.slot_mapping.len() == t
                && step.query_start_locs.len() == s + 1
                && step.block_tables.len() == s * step.max_blocks_per_seq,
            "inconsistent step metadata"
        );
        ensure!(
            carry.len() <= meta.max_seqs && sampling.len() <= meta.max_seqs,
            "{} carried rows / {} sampling entries exceed {} sequences",
            carry.len(),
            sampling.len(),
            meta.max_seqs
        );
        ensure!(
            carry.iter().all(|&(row, _)| (row as usize) < t),
            "a carried row is outside the step"
        );
        check_entries(sampling)?;
        // The host may rewrite the staging words only once their last copy is done.
        meta.events.uploaded.synchronize()?;
        if step.max_blocks_per_seq > meta.table_cols {
            // The one allocation outside load time: block tables wider than any seen before.
            // Doubling keeps it rare. Graphs captured on the old buffer would read freed memory.
            meta.graphs.clear();
            meta.warmed.clear();
            meta.table_cols = step.max_blocks_per_seq.next_power_of_two();
            // The old buffer is freed in stream order, after the work already queued on it.
            meta.dev = self.stream.alloc_zeros::<u32>(meta.words())?;
            meta.staging = PinnedWords::new(&self.ctx, meta.words())?;
            // The new buffer is allocated and zeroed in the compute stream's order: the copy
            // below (which waits for `step_done`) must come after that, or the zeroing could
            // land on the copied words.
            meta.events.step_done.record(&self.stream)?;
        }
        let used = self.stage(step, carry, sampling, meta);
        // The slot's device words are rewritten only once the step that last read them is done,
        // and that step's samples are overwritten only once they are back on the host.
        let copy = self.copy_stream.cu_stream();
        self.copy_stream.wait(&meta.events.step_done)?;
        meta.staging
            .copy_to_device(self.ptr(&meta.dev), used, copy)?;
        meta.events.uploaded.record(&self.copy_stream)?;
        self.stream.wait(&meta.events.uploaded)?;
        self.stream.wait(&meta.events.samples_back)?;
        meta.events.started.record(&self.stream)?;
        meta.host.clone_from(step);
        meta.carry.clear();
        meta.carry.extend_from_slice(carry);
        meta.sampling_rows = sampling.len();
        set_constrained_rows(meta, sampling);
        meta.sampling.sampled_rows = 0;
        Ok(())
    }

    /// Writes the step's words into the page-locked staging buffer; returns how many to copy.
    fn stage(
        &self,
        step: &StepInput,
        carry: &[(u32, u32)],
        sampling: &[DeviceSampling],
        meta: &mut CudaMeta,
    ) -> usize {
        let offs = (
            meta.ids_off(),
            meta.pos_off(),
            meta.qsl_off(),
            meta.ctx_off(),
            meta.logits_off(),
            meta.carry_off(),
            meta.params_off(),
            meta.tiles_off(),
            meta.tables_off(),
        );
        let (ids, pos, qsl, ctx, lg, cy, pa, tiles, tb) = offs;
        let (t, s) = (step.num_tokens(), step.num_seqs());
        let w = meta.staging.as_mut_slice();
        for (i, &slot) in step.slot_mapping.iter().enumerate() {
            let bits = slot as u64;
            w[2 * i] = bits as u32;
            w[2 * i + 1] = (bits >> 32) as u32;
        }
        w[ids..ids + t].copy_from_slice(&step.input_ids);
        w[pos..pos + t].copy_from_slice(&step.positions);
        w[qsl..qsl + s + 1].copy_from_slice(&step.query_start_locs);
        w[ctx..ctx + s].copy_from_slice(&step.context_lens);
        w[lg..lg + step.logits_indices.len()].copy_from_slice(&step.logits_indices);
        for (i, &(row, from)) in carry.iter().enumerate() {
            w[cy + 2 * i] = row;
            w[cy + 2 * i + 1] = from;
        }
        pack_entries(sampling, &mut w[pa..pa + sampling.len() * PARAM_WORDS]);
        // Row tiles only where the prefill kernel may run: not on pure decode steps, the
        // engine's every-step case (at most ceil(T/64) + S tiles: the region's size).
        let mut row_tiles = 0;
        if t != s {
            for (i, (seq, tile)) in step.row_tiles(PREFILL_ROWS).enumerate() {
                w[tiles + 2 * i] = seq;
                w[tiles + 2 * i + 1] = tile;
                row_tiles = i + 1;
            }
        }
        w[tb..tb + step.block_tables.len()].copy_from_slice(&step.block_tables);
        meta.row_tiles = row_tiles;
        tb + step.block_tables.len()
    }

    /// [`crate::device::backend::Backend::carry_tokens`] on this device: one small kernel on
    /// the compute stream, after the previous step's sampler (stream order).
    pub(super) fn carry_tokens_op(&self, meta: &mut CudaMeta, prev: &CudaMeta) -> Result<()> {
        let n = meta.carry.len();
        if n == 0 {
            return Ok(());
        }
        let sampled = prev.sampling.sampled_rows;
        if let Some(&(row, from)) = meta.carry.iter().find(|c| c.1 as usize >= sampled) {
            anyhow::bail!(
                "row {row} carries sample {from} of a step that sampled {sampled} rows on the device"
            );
        }
        let (ids, carry, samples) = (
            self.meta_ptr(meta, meta.ids_off()),
            self.meta_ptr(meta, meta.carry_off()),
            self.ptr(&prev.sampling.out_dev),
        );
        let (n32, words) = (u32_of(n, "carried rows")?, OUT_WORDS as u32);
        self.launch(&self.k.carry_tokens, (n32.div_ceil(128), 1, 1), 128, |b| {
            b.arg(&ids).arg(&carry).arg(&samples).arg(&n32).arg(&words);
        })
    }

    /// [`crate::device::backend::Backend::finish_step`] on this device.
    pub(super) fn finish_step_op(&self, meta: &mut CudaMeta) -> Result<()> {
        meta.events.finished.record(&self.stream)?;
        meta.events.step_done.record(&self.stream)?;
        let rows = meta.sampling.sampled_rows;
        if rows > 0 {
            let back = self.return_stream.cu_stream();
            self.return_stream.wait(&meta.events.step_done)?;
            let src = self.ptr(&meta.sampling.out_dev);
            meta.sampling
                .out_host
                .copy_from_device(src, rows * OUT_WORDS, back)?;
            meta.events.samples_back.record(&self.return_stream)?;
        }
        Ok(())
    }

    /// [`crate::device::backend::Backend::step_ready`] on this device.
    pub(super) fn step_ready_op(&self, meta: &CudaMeta) -> bool {
        // An error counts as ready: collecting reports it.
        meta.events.samples_back.try_is_complete().unwrap_or(true)
    }

    /// [`crate::device::backend::Backend::collect_samples`] on this device.
    pub(super) fn collect_op(
        &self,
        meta: &mut CudaMeta,
        entries: &[DeviceSampling],
        out: &mut Vec<Sampled>,
    ) -> Result<Option<(Instant, Instant)>> {
        ensure!(
            meta.sampling.sampled_rows > 0 || entries.is_empty(),
            "no step sampled on the device in this slot"
        );
        meta.events.samples_back.synchronize()?;
        self.ctx.check_err()?;
        self.read_samples(meta, entries, out)?;
        Ok(self.step_times(meta))
    }

    /// When the device started and finished the slot's last step, on the host's clock. CUDA
    /// reports event gaps in f32 milliseconds, so the start (measured from the epoch) loses
    /// precision as the process ages (~8 µs after 100 s); the duration is measured between the
    /// step's own events and stays exact, which keeps the idle fraction over many steps (span
    /// minus busy time) right.
    fn step_times(&self, meta: &CudaMeta) -> Option<(Instant, Instant)> {
        let ms = |a: &cudarc::driver::CudaEvent, b| a.elapsed_ms(b).ok().map(|t| t.max(0.0));
        let secs = |t: f32| Duration::from_secs_f64(f64::from(t) / 1e3);
        let start = self.epoch.1 + secs(ms(&self.epoch.0, &meta.events.started)?);
        let busy = secs(ms(&meta.events.started, &meta.events.finished)?);
        Some((start, start + busy))
    }
}
