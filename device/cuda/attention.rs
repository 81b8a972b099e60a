//! The attention op on the GPU: the host checks, the choice between the general kernel
//! (`kernels/paged_attention.cu`: any step), the tensor-core prefill kernel
//! (`kernels/paged_attention_prefill.cu`: bf16 steps that are not pure decode, head_dim a multiple
//! of 16 up to 128) and the split-context decode kernels (steps where every sequence has one
//! query row: `kernels/paged_attention_decode_tc.cu` on the tensor cores for bf16, head_dim 64
//! or 128, GQA groups up to 8 and block sizes that are multiples of 16; otherwise the scalar
//! `kernels/paged_attention_decode.cu`), and the decode kernels' workspace for split partials,
//! sized when the metadata is made.
//!
//! Why the decode path: at decode, attention is a read of the cache. The general kernel runs one
//! block per (row, q head), so each K/V byte is read `num_heads / num_kv_heads` times and a long
//! context is walked by one block. The decode kernel runs one block per (sequence, kv head,
//! context split): the GQA group's q heads share every K/V load, and the splits fill the GPU, so
//! a decode step's attention runs near the time it takes to read the cache once. bf16 K/V loads
//! are issued one tile ahead: half the bytes of f32 per load otherwise leaves the kernel
//! latency-bound.
//!
//! Why the tensor-core decode kernel: the scalar one's bf16 instances stay well below copy
//! bandwidth because they run out of issue slots (a widening, an FMA per q head, shuffle
//! reductions per key element), where f32, with twice the bytes for the same work, comes close
//! to it. On the tensor cores a 16-key tile is 3 head_dim/16 mma instructions and a short
//! softmax per lane, which leaves the loop little but its loads.
//!
//! Why the prefill path: prefill attention is compute: the general kernel's scalar FMAs (one
//! block per row and head, every key re-read per row) use a small part of the GPU, while the
//! prefill kernel shares each K/V tile among 64 rows and runs both products on the tensor cores.
//! Pure decode steps the decode kernel cannot take stay on the general kernel (the prefill
//! kernel would compute 64 rows for one).

use anyhow::{ensure, Result};
use cudarc::driver::{CudaFunction, CudaSlice};

use super::kernels::{DECODE_SETS, DECODE_TC_HEAD_DIMS};
use super::{u32_of, CudaBackend, CudaMeta, CudaTensor, MAX_HEAD_DIM};
use crate::device::backend::{AttentionParams, QkvLayout};

/// Fewest keys per split (`DEC_MIN_SPLIT_KEYS` in paged_attention_decode.cu).
const MIN_SPLIT_KEYS: usize = 64;
/// Most splits of one sequence (`DEC_MAX_SPLITS` in paged_attention_decode.cu).
const MAX_SPLITS: usize = 64;
/// The most blocks per SM the split count aims for: one wave at the 4 resident blocks per SM
/// that the scalar kernel's ~110 registers × 128 threads allow (the workspace is sized for it).
/// A kernel that fits fewer (the head_dim-128 tensor-core one: 227 registers, 2 blocks) aims for
/// its own one wave ([`CudaBackend::decode_blocks_per_sm`]). Splitting further only adds merge
/// work: once the grid fills the GPU, more splits are slower, not faster.
const BLOCKS_PER_SM: usize = 4;
/// Warps per block (`DEC_WARPS`): a GQA group may be cut into at most this many head chunks.
const DEC_WARPS: usize = 4;
/// Threads per block of both decode kernels.
const DEC_THREADS: u32 = 128;
/// Query rows per block of the prefill kernel (`PF_ROWS`): the step's row tiles
/// ([`crate::device::step::StepInput::row_tiles`]) go up with its metadata.
pub(super) const PREFILL_ROWS: usize = 64;
/// Threads per block of the prefill kernel (`PF_THREADS`).
const PREFILL_THREADS: u32 = 128;

/// The smallest decode instance set ([`DECODE_SETS`]) whose width holds `head_dim`, if any.
fn decode_set(head_dim: usize) -> Option<usize> {
    DECODE_SETS
        .iter()
        .position(|&(width, _, _)| head_dim <= width)
}

/// How the decode step's attention is computed; tests and the benchmark pin it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodePath {
    /// The decode kernel where it applies (on the tensor cores where they apply), its split
    /// count chosen from the step.
    Auto,
    /// Always the general kernel (the reference the decode kernel is benchmarked against).
    General,
    /// The decode kernel (tensor cores where they apply) with this many splits (capped by the
    /// workspace and the kernel).
    Splits(usize),
    /// As `Auto` but never on the tensor cores: the scalar decode kernel, which the tensor-core
    /// one is benchmarked against.
    Scalar,
}

/// The decode kernel's partial results: `o` is `[entries, num_heads, head_dim]`, `ml` is
/// `[entries, num_heads, 2]`, one entry per (sequence, split) of a step.
pub(super) struct DecodeWorkspace {
    o: CudaSlice<f32>,
    ml: CudaSlice<f32>,
}

impl CudaBackend {
    /// Entries of (sequence, split) the workspace needs: the split count is at most
    /// `max(1, target / (seqs × kv_heads))`, so `seqs × splits <= target / kv_heads + seqs`.
    fn decode_entries(&self, max_seqs: usize, layout: QkvLayout) -> usize {
        let target = BLOCKS_PER_SM * self.sm_count;
        max_seqs + target.div_ceil(layout.num_kv_heads.max(1))
    }

    pub(super) fn new_decode_workspace(
        &self,
        max_seqs: usize,
        layout: QkvLayout,
    ) -> Result<DecodeWorkspace> {
        let entries = self.decode_entries(max_seqs, layout);
        let per_entry = layout.num_heads * layout.head_dim.min(MAX_HEAD_DIM);
        Ok(DecodeWorkspace {
            o: self
                .stream
                .alloc_zeros::<f32>((entries * per_entry).max(1))?,
            ml: self
                .stream
                .alloc_zeros::<f32>((entries * layout.num_heads * 2).max(1))?,
        })
    }

    /// The prefill kernel instance for layout `l`, or `None` when the general kernel must run
    /// (f32 storage, a head_dim that is not a multiple of 16 up to 128, or pinned).
    fn prefill_kernel(&self, l: QkvLayout) -> Option<&CudaFunction> {
        if self.prefill_general {
            return None;
        }
        if l.head_dim == 0 || !l.head_dim.is_multiple_of(16) {
            return None;
        }
        self.k.prefill.get(l.head_dim / 16 - 1)?.as_ref()
    }

    /// Whether pure decode steps of layout `l` over blocks of `block_size` run the tensor-core
    /// decode kernel (bf16 storage, head_dim 64 or 128, at most 8 q heads per kv head, blocks a
    /// multiple of its 16-key tiles, not pinned to another path). It rounds the softmax weights
    /// to bf16 as the tensor-core prefill kernel does; tests pick their tolerance by this.
    pub fn decode_uses_tensor_cores(&self, l: QkvLayout, block_size: usize) -> bool {
        self.decode_tc_kernel(l, block_size).is_some()
    }

    fn decode_tc_kernel(&self, l: QkvLayout, block_size: usize) -> Option<&CudaFunction> {
        let path = self.decode_path;
        if matches!(path, DecodePath::Scalar | DecodePath::General)
            || l.num_kv_heads == 0
            || l.num_heads / l.num_kv_heads > 8
            || block_size == 0
            || !block_size.is_multiple_of(16)
        {
            return None;
        }
        let i = DECODE_TC_HEAD_DIMS.iter().position(|&d| d == l.head_dim)?;
        self.k.decode_tc[i].as_ref()
    }

    /// The decode kernel and its split count for a decode step of `seqs` sequences over blocks
    /// of `block_size` whose longest key range is `max_span`, or `None` when the general kernel
    /// must run.
    fn decode_splits(
        &self,
        meta: &CudaMeta,
        l: QkvLayout,
        block_size: usize,
        seqs: usize,
        max_span: usize,
    ) -> Option<(&CudaFunction, usize)> {
        let path = self.decode_path;
        if path == DecodePath::General || seqs == 0 {
            return None;
        }
        // The kernel's shape limits: each lane holds one aligned vector of 4 or 8 elements,
        // and the group's heads fit in DEC_WARPS chunks of the largest instance.
        let (_, per, max_hc) = DECODE_SETS[decode_set(l.head_dim)?];
        if !l.head_dim.is_multiple_of(per) {
            return None;
        }
        if (l.num_heads / l.num_kv_heads).div_ceil(max_hc) > DEC_WARPS {
            return None;
        }
        let f = match self.decode_tc_kernel(l, block_size) {
            Some(f) => f,
            None => self.scalar_decode_kernel(l).ok()?,
        };
        let wanted = match path {
            DecodePath::Splits(n) => n,
            _ => {
                // Split only as far as one wave of blocks needs (rounding down: a grid that
                // almost fills the GPU unsplit is faster than one split in two).
                let target = self.decode_blocks_per_sm(f) * self.sm_count;
                (target / (seqs * l.num_kv_heads))
                    .max(1)
                    .min(max_span.div_ceil(MIN_SPLIT_KEYS))
            }
        };
        // The workspace bounds the splits; one split needs none.
        let per_seq = l.num_heads * l.head_dim;
        let fits = (meta.decode.o.len() / (seqs * per_seq))
            .min(meta.decode.ml.len() / (seqs * l.num_heads * 2));
        Some((f, wanted.min(MAX_SPLITS).min(fits).max(1)))
    }

    /// How many blocks of decode kernel `f` an SM holds at once (its registers and shared
    /// memory decide), at most [`BLOCKS_PER_SM`]; asked of the driver once per kernel.
    fn decode_blocks_per_sm(&self, f: &CudaFunction) -> usize {
        let key = f.cu_function() as usize;
        let mut known = self
            .decode_occupancy
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *known.entry(key).or_insert_with(|| {
            f.occupancy_max_active_blocks_per_multiprocessor(DEC_THREADS, 0, None)
                .map_or(BLOCKS_PER_SM, |n| (n as usize).clamp(1, BLOCKS_PER_SM))
        })
    }

    pub(super) fn attention_op(
        &self,
        qkv: &CudaTensor,
        k_cache: &CudaTensor,
        v_cache: &CudaTensor,
        meta: &CudaMeta,
        p: &AttentionParams,
        out: &mut CudaTensor,
    ) -> Result<()> {
        let l = p.layout;
        let step = &meta.host;
        let rows = step.num_tokens();
        ensure!(
            l.head_dim <= MAX_HEAD_DIM,
            "attention: head_dim {} is above the CUDA kernel's {MAX_HEAD_DIM}",
            l.head_dim
        );
        ensure!(
            l.num_kv_heads > 0 && l.num_heads.is_multiple_of(l.num_kv_heads),
            "attention: {} heads do not split into {} kv heads",
            l.num_heads,
            l.num_kv_heads
        );
        ensure!(
            out.len() >= rows * l.q_width() && qkv.len() >= rows * l.row_width(),
            "attention: output too small"
        );
        let cache_len = p.cache.num_blocks * p.cache.block_size * l.kv_width();
        ensure!(
            k_cache.len() >= cache_len && v_cache.len() >= cache_len,
            "attention: cache buffers smaller than the cache shape"
        );
        let mut max_span = 0;
        for s in 0..step.num_seqs() {
            let (start, end) = step.seq_rows(s);
            let ctx = step.context_lens[s] as usize;
            let blocks = ctx.div_ceil(p.cache.block_size);
            ensure!(
                ctx >= end - start,
                "sequence {s}: context length below its new tokens"
            );
            ensure!(
                blocks <= step.max_blocks_per_seq,
                "sequence {s}: block table too short"
            );
            for &b in &step.block_table(s)[..blocks] {
                ensure!(
                    (b as usize) < p.cache.num_blocks,
                    "sequence {s}: block {b} outside the cache"
                );
            }
            max_span = max_span.max(p.sliding_window.map_or(ctx, |w| ctx.min(w)));
        }
        if meta.graph_mode {
            // A replayed graph keeps the split count it was captured with: size it for the
            // longest context the block tables can hold (shorter ones leave splits empty).
            let most = step.max_blocks_per_seq * p.cache.block_size;
            max_span = p.sliding_window.map_or(most, |w| most.min(w));
        }
        // Every sequence has one row exactly when there are as many rows as sequences (each
        // has at least one).
        let seqs = step.num_seqs();
        if rows == seqs {
            if let Some((f, splits)) =
                self.decode_splits(meta, l, p.cache.block_size, seqs, max_span)
            {
                return self.decode_attention(f, qkv, k_cache, v_cache, meta, p, splits, out);
            }
        }
        let args = (
            self.tp(qkv),
            self.tp(k_cache),
            self.tp(v_cache),
            self.meta_ptr(meta, meta.qsl_off()),
            self.meta_ptr(meta, meta.ctx_off()),
            self.meta_ptr(meta, meta.tables_off()),
        );
        let sizes = [
            seqs as u32,
            u32_of(step.max_blocks_per_seq, "block table width")?,
            l.num_heads as u32,
            l.num_kv_heads as u32,
            l.head_dim as u32,
            u32_of(p.cache.block_size, "block size")?,
        ];
        let window = u32_of(p.sliding_window.unwrap_or(0), "sliding window")?;
        let op = self.tp(out);
        // The prefill kernel takes the general kernel's arguments and the step's row tiles; its
        // grid is (row tiles, heads), the general kernel's (rows, heads).
        let tiles = meta.row_tiles;
        let prefill = self.prefill_kernel(l).filter(|_| rows != seqs);
        let tp = self.meta_ptr(meta, meta.tiles_off());
        let (f, grid, threads) = match prefill {
            Some(f) => (
                f,
                (u32_of(tiles, "row tiles")?, l.num_heads as u32, 1),
                PREFILL_THREADS,
            ),
            None => (
                &self.k.paged_attention,
                (u32_of(rows, "rows")?, l.num_heads as u32, 1),
                128,
            ),
        };
        self.launch(f, grid, threads, |b| {
            b.arg(&args.0).arg(&args.1).arg(&args.2);
            b.arg(&args.3).arg(&args.4).arg(&args.5);
            for v in &sizes {
                b.arg(v);
            }
            b.arg(&p.scale).arg(&window).arg(&op);
            if prefill.is_some() {
                b.arg(&tp);
            }
        })
    }

    /// The scalar decode kernel's instance for layout `l`.
    fn scalar_decode_kernel(&self, l: QkvLayout) -> Result<&CudaFunction> {
        let group = l.num_heads / l.num_kv_heads;
        let set = decode_set(l.head_dim)
            .ok_or_else(|| anyhow::anyhow!("no decode kernel for head_dim {}", l.head_dim))?;
        // The fewest heads per warp that keeps the group within DEC_WARPS chunks, at least the
        // whole group up to the instance's maximum (fewer chunks: fewer re-reads from L1).
        let max_hc_log2 = DECODE_SETS[set].2.trailing_zeros() as usize;
        let hc_log2 = (group.next_power_of_two().trailing_zeros() as usize).min(max_hc_log2);
        self.k.decode[set][hc_log2]
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no decode kernel for head_dim {}", l.head_dim))
    }

    /// Decode kernel `f` over `splits` context splits, then (splits > 1) the merge kernel.
    /// The caller has checked the step and that the kernel handles this layout.
    #[allow(clippy::too_many_arguments)]
    fn decode_attention(
        &self,
        f: &CudaFunction,
        qkv: &CudaTensor,
        k_cache: &CudaTensor,
        v_cache: &CudaTensor,
        meta: &CudaMeta,
        p: &AttentionParams,
        splits: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        let l = p.layout;
        let step = &meta.host;
        let seqs = step.num_seqs();
        let args = (
            self.tp(qkv),
            self.tp(k_cache),
            self.tp(v_cache),
            self.meta_ptr(meta, meta.qsl_off()),
            self.meta_ptr(meta, meta.ctx_off()),
            self.meta_ptr(meta, meta.tables_off()),
        );
        let sizes = [
            u32_of(step.max_blocks_per_seq, "block table width")?,
            l.num_heads as u32,
            l.num_kv_heads as u32,
            l.head_dim as u32,
            u32_of(p.cache.block_size, "block size")?,
        ];
        let window = u32_of(p.sliding_window.unwrap_or(0), "sliding window")?;
        let (n_splits, op) = (splits as u32, self.tp(out));
        let (po, pml) = (self.ptr(&meta.decode.o), self.ptr(&meta.decode.ml));
        let grid = (n_splits, l.num_kv_heads as u32, u32_of(seqs, "sequences")?);
        self.launch(f, grid, DEC_THREADS, |b| {
            b.arg(&args.0).arg(&args.1).arg(&args.2);
            b.arg(&args.3).arg(&args.4).arg(&args.5);
            for v in &sizes {
                b.arg(v);
            }
            b.arg(&p.scale).arg(&window).arg(&n_splits).arg(&op);
            b.arg(&po).arg(&pml);
        })?;
        if splits > 1 {
            let (qsl, nh, hd) = (args.3, l.num_heads as u32, l.head_dim as u32);
            self.launch(
                &self.k.decode_merge,
                (seqs as u32, nh, 1),
                DEC_THREADS,
                |b| {
                    b.arg(&po).arg(&pml).arg(&qsl);
                    b.arg(&n_splits).arg(&nh).arg(&hd).arg(&op);
                },
            )?;
        }
        Ok(())
    }
}
