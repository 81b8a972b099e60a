//! Device-side sampling: the launcher of `kernels/sampling.cu` (`sample_rows_<dtype>`), which
//! runs [`crate::device::sampling::sample`] without the penalties on each logits row, so only
//! token ids and requested logprobs come back to the host.
//!
//! The parity tests `sample_rows_*` in tests/cuda_parity.rs check it against the CPU sampler.
//!
//! The per-row entries go up with the step's metadata (one copy, see [`super::CudaMeta`]); the
//! kernel writes its results into [`SampleBuffers`], which the return stream copies to
//! page-locked memory (`step_io.rs`): sampling allocates nothing and waits for nothing, so it can
//! be captured in a graph with the forward pass.

use anyhow::{ensure, Result};
use cudarc::driver::CudaSlice;

use super::pinned::PinnedWords;

use super::constrain::set_constrained_rows;
use super::{u32_of, CudaBackend, CudaMeta, CudaTensor};
use crate::device::sampling::device_words::{pack_entries, unpack, OUT_WORDS, PARAM_WORDS};
use crate::device::sampling::{DeviceSampling, RowConstraint, Sampled, MAX_DEVICE_TOP_LOGPROBS};

/// `SAMPLE_THREADS` in sampling.cu.
const THREADS: u32 = 512;

/// The fewest elements of a greedy row one block takes when the row is split over blocks.
const GREEDY_MIN_SPLIT: usize = 2048;

/// The most blocks a greedy row is split over.
const GREEDY_MAX_SPLITS: usize = 64;

/// How many blocks each greedy row (without logprobs) of a `rows` x `vocab` launch is split
/// over: enough for two blocks per SM over the launch, each with [`GREEDY_MIN_SPLIT`] elements
/// at least. A single block streams a row at a fraction of the bandwidth, so a few rows of a large
/// vocabulary, one block each, leave most of the GPU idle.
fn greedy_splits(rows: usize, vocab: usize, sms: usize) -> u32 {
    let by_gpu = (2 * sms).div_ceil(rows.max(1));
    let by_len = vocab / GREEDY_MIN_SPLIT;
    by_gpu.min(by_len).clamp(1, GREEDY_MAX_SPLITS) as u32
}

/// The device sampler's results for up to `rows` rows, on the device and (once copied back) in
/// page-locked host memory.
pub struct SampleBuffers {
    rows: usize,
    pub(super) out_dev: CudaSlice<u32>,
    pub(super) out_host: PinnedWords,
    /// Rows the last step sampled (0: it sampled on the host, nothing to copy back).
    pub(super) sampled_rows: usize,
    /// The vocabulary they were sampled over (bounds the top logprobs).
    pub(super) vocab: usize,
    /// Per row, the best key of a greedy row split over blocks (all ones between launches)
    /// and how many of its blocks are done (zero between launches).
    greedy_best: CudaSlice<u64>,
    greedy_done: CudaSlice<u32>,
}

impl SampleBuffers {
    pub(super) fn new(b: &CudaBackend, rows: usize) -> Result<Self> {
        let rows = rows.max(1);
        Ok(SampleBuffers {
            rows,
            out_dev: b.stream.alloc_zeros::<u32>(rows * OUT_WORDS)?,
            out_host: PinnedWords::new(&b.ctx, rows * OUT_WORDS)?,
            sampled_rows: 0,
            vocab: 0,
            greedy_best: b.stream.clone_htod(&vec![u64::MAX; rows])?,
            greedy_done: b.stream.alloc_zeros::<u32>(rows)?,
        })
    }
}

/// Checks a step's sampling entries before they go up.
pub(super) fn check_entries(entries: &[DeviceSampling]) -> Result<()> {
    if let Some(n) = entries
        .iter()
        .filter_map(|p| p.logprobs)
        .find(|&n| n as usize > MAX_DEVICE_TOP_LOGPROBS)
    {
        anyhow::bail!("{n} top logprobs requested; the device sampler returns at most 20");
    }
    Ok(())
}

impl CudaBackend {
    /// [`crate::device::backend::Backend::sample_launch`] on this device: rows `0..rows` of
    /// `logits` with the entries uploaded with the step.
    pub(super) fn sample_launch_op(
        &self,
        logits: &CudaTensor,
        vocab: usize,
        rows: usize,
        constraints: &[RowConstraint],
        meta: &mut CudaMeta,
    ) -> Result<()> {
        ensure!(
            rows <= meta.sampling_rows && rows <= meta.sampling.rows,
            "sampling {rows} rows with {} entries uploaded ({} rows of buffers)",
            meta.sampling_rows,
            meta.sampling.rows
        );
        ensure!(vocab > 0, "sampling rows of width 0");
        ensure!(
            logits.len() >= rows * vocab,
            "sampling {rows} rows of {vocab} from a tensor of {}",
            logits.len()
        );
        let v32 = u32_of(vocab, "vocab")?;
        // Unread (null) when no row is constrained: a graph captures it as it is.
        let adjusted = if meta.constrained_rows.is_empty() && constraints.is_empty() {
            0u64
        } else {
            ensure!(
                meta.constrained_rows.iter().all(|&r| (r as usize) < rows),
                "a constrained row is past the {rows} rows sampled"
            );
            self.constrain_launch(logits, vocab, constraints, meta)?
        };
        let (lp, pp, op) = (
            self.tp(logits),
            self.meta_ptr(meta, meta.params_off()),
            self.ptr(&meta.sampling.out_dev),
        );
        let (best, done) = (
            self.ptr(&meta.sampling.greedy_best),
            self.ptr(&meta.sampling.greedy_done),
        );
        let splits = greedy_splits(rows, vocab, self.sm_count);
        self.launch(
            &self.k.sample_rows,
            (rows as u32, splits, 1),
            THREADS,
            |b| {
                b.arg(&lp)
                    .arg(&v32)
                    .arg(&pp)
                    .arg(&adjusted)
                    .arg(&op)
                    .arg(&best)
                    .arg(&done);
            },
        )?;
        meta.sampling.sampled_rows = rows;
        meta.sampling.vocab = vocab;
        Ok(())
    }

    /// The samples copied back for `entries` (one per row, in order), appended to `out`.
    pub(super) fn read_samples(
        &self,
        meta: &CudaMeta,
        entries: &[DeviceSampling],
        out: &mut Vec<Sampled>,
    ) -> Result<()> {
        ensure!(
            entries.len() <= meta.sampling.sampled_rows,
            "{} samples wanted from a step that sampled {} rows",
            entries.len(),
            meta.sampling.sampled_rows
        );
        let words = meta.sampling.out_host.as_slice();
        for (p, r) in entries.iter().zip(words.chunks_exact(OUT_WORDS)) {
            out.push(unpack(p, r, meta.sampling.vocab));
        }
        Ok(())
    }

    /// Samples rows `0..params.len()` of `logits` on the device and waits for the results
    /// (tests and the kernel benchmark; the engine's steps upload their entries with the step
    /// and collect later); `constraints` holds one per constrained entry, in order. `meta` lends
    /// its buffers; its entries are overwritten.
    pub fn sample_rows(
        &self,
        logits: &CudaTensor,
        vocab: usize,
        params: &[DeviceSampling],
        constraints: &[RowConstraint],
        meta: &mut CudaMeta,
        out: &mut Vec<Sampled>,
    ) -> Result<bool> {
        let rows = params.len();
        if rows == 0 {
            return Ok(true);
        }
        ensure!(
            rows <= meta.max_seqs,
            "sampling {rows} rows exceeds the sampling buffers ({} rows)",
            meta.max_seqs
        );
        check_entries(params)?;
        let mut words = vec![0u32; rows * PARAM_WORDS];
        pack_entries(params, &mut words);
        let off = meta.params_off();
        self.stream
            .memcpy_htod(&words, &mut meta.dev.slice_mut(off..off + words.len()))?;
        meta.sampling_rows = rows;
        set_constrained_rows(meta, params);
        self.sample_launch_op(logits, vocab, rows, constraints, meta)?;
        self.finish_step_op(meta)?;
        self.collect_op(meta, params, out)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_rows_split_to_fill_the_gpu() {
        // One row of Llama's vocabulary on 132 SMs: 62 blocks of >= 2048 elements.
        assert_eq!(greedy_splits(1, 128_256, 132), 62);
        // 64 rows: 5 blocks each, 320 in all (2 per SM wanted: 264).
        assert_eq!(greedy_splits(64, 128_256, 132), 5);
        // Enough rows fill the GPU unsplit; short rows are not split.
        assert_eq!(greedy_splits(256, 128_256, 132), 2);
        assert_eq!(greedy_splits(512, 128_256, 132), 1);
        assert_eq!(greedy_splits(1, 1000, 132), 1);
        assert_eq!(greedy_splits(0, 5, 4), 1);
    }
}
