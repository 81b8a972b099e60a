//! A step's metadata as the CUDA kernels read it: fixed offsets in one device buffer, filled by one
//! copy per step from page-locked memory on the copy stream; plus, per metadata slot, the sampler's
//! result buffers, the events that order the slot's streams, and the graphs captured on it.

use std::collections::{HashMap, HashSet};

use cudarc::driver::{CudaEvent, CudaGraph, CudaSlice};

use anyhow::Result;

use super::attention::{DecodeWorkspace, PREFILL_ROWS};
use super::constrain::ConstrainBuffers;
use super::pinned::PinnedWords;
use super::sampling::SampleBuffers;
use super::{pinned, CudaBackend};
use crate::device::backend::QkvLayout;
use crate::device::sampling::device_words::PARAM_WORDS;
use crate::device::step::StepInput;

/// A step's metadata on the device: one buffer of u32 words at fixed offsets (so a captured graph
/// sees fixed addresses), filled by one copy per step, plus the host copy the ops validate.
///
/// Word layout for `T = max_tokens`, `S = max_seqs`, `B` = block-table columns of capacity:
/// `slot_mapping` (i64, 2T words, first so it is 8-byte aligned) | `input_ids` T | `positions` T |
/// `query_start_locs` S+1 | `context_lens` S | `logits_indices` S | `carry` 2S (row, sample) |
/// sampling entries S·PARAM_WORDS (from an even word: they hold u64s) | prefill row tiles
/// 2·(⌈T/64⌉ + S) (sequence, tile) | `block_tables` S·B (last: a step copies only its own rows).
pub struct CudaMeta {
    pub(super) host: StepInput,
    /// The carried rows of the step last uploaded, as `(row, sample)`.
    pub(super) carry: Vec<(u32, u32)>,
    /// Sampling entries uploaded with the step (rows the device sampler may take).
    pub(super) sampling_rows: usize,
    /// The rows of those entries that are constrained, in order.
    pub(super) constrained_rows: Vec<u32>,
    /// Buffers for constrained rows, made on the slot's first step with one.
    pub(super) constrain: Option<ConstrainBuffers>,
    /// Row tiles of the prefill attention uploaded with the step (0 for a pure decode step).
    pub(super) row_tiles: usize,
    pub(super) staging: PinnedWords,
    pub(super) dev: CudaSlice<u32>,
    pub(super) max_tokens: usize,
    pub(super) max_seqs: usize,
    pub(super) table_cols: usize,
    /// Split partials of the decode attention, sized for `max_seqs` and the model's layout.
    pub(super) decode: DecodeWorkspace,
    /// The device sampler's results, for `max_seqs` rows.
    pub(super) sampling: SampleBuffers,
    pub(super) events: SlotEvents,
    /// Graphs captured on this slot's buffers, by `(rows, block-table width)`.
    pub(super) graphs: HashMap<(usize, usize), SendGraph>,
    /// Shapes already run once eagerly (the warm-up before a capture).
    pub(super) warmed: HashSet<(usize, usize)>,
    /// The shape being captured between `begin_ops` and `end_ops`.
    pub(super) capturing: Option<(usize, usize)>,
    /// The step is padded to a graph shape: the decode attention sizes its splits from the table
    /// width rather than the longest context, so a replay is right for any context in the width.
    pub(super) graph_mode: bool,
}

/// The events that order one metadata slot's work across the three streams.
pub(super) struct SlotEvents {
    /// Copy stream: this slot's metadata copy is done (the compute stream waits; so does the
    /// host before it rewrites the staging words).
    pub uploaded: CudaEvent,
    /// Compute stream: the slot's step (ops and sampling) is done, so its device words may be
    /// rewritten (the copy stream waits) and its samples copied back (the return stream waits).
    pub step_done: CudaEvent,
    /// Return stream: the samples are in host memory (the host waits; so does the compute
    /// stream before the slot's next step rewrites them).
    pub samples_back: CudaEvent,
    /// Compute stream, with timing: the step's first and last work, for the timeline.
    pub started: CudaEvent,
    pub finished: CudaEvent,
}

/// A captured graph, movable to the executor thread, with the host-side state its ops set when
/// they were issued (a replay issues none of them): how many rows the captured sampler samples,
/// and of what width.
pub(super) struct SendGraph {
    pub graph: CudaGraph,
    pub sampled_rows: usize,
    pub vocab: usize,
}

// SAFETY: a graph is used (launched, dropped) only by the one thread that owns its `CudaMeta`
// at a time, never concurrently; CUDA graph objects need only external serialization.
unsafe impl Send for SendGraph {}

impl CudaBackend {
    /// [`crate::device::backend::Backend::new_meta`] on this device.
    pub(super) fn new_meta_op(
        &self,
        max_tokens: usize,
        max_seqs: usize,
        layout: QkvLayout,
    ) -> Result<CudaMeta> {
        let sync = || self.ctx.new_event(None);
        let timed = || {
            self.ctx
                .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
        };
        let mut meta = CudaMeta {
            host: StepInput::default(),
            carry: Vec::new(),
            sampling_rows: 0,
            constrained_rows: Vec::new(),
            constrain: None,
            row_tiles: 0,
            staging: pinned::PinnedWords::new(&self.ctx, 1)?,
            dev: self.stream.alloc_zeros::<u32>(1)?,
            max_tokens,
            max_seqs,
            table_cols: 64,
            decode: self.new_decode_workspace(max_seqs, layout)?,
            sampling: SampleBuffers::new(self, max_seqs)?,
            events: SlotEvents {
                uploaded: sync()?,
                step_done: sync()?,
                samples_back: sync()?,
                started: timed()?,
                finished: timed()?,
            },
            graphs: Default::default(),
            warmed: Default::default(),
            capturing: None,
            graph_mode: false,
        };
        meta.dev = self.stream.alloc_zeros::<u32>(meta.words())?;
        meta.staging = pinned::PinnedWords::new(&self.ctx, meta.words())?;
        Ok(meta)
    }
}

impl CudaMeta {
    pub(super) fn ids_off(&self) -> usize {
        2 * self.max_tokens
    }
    pub(super) fn pos_off(&self) -> usize {
        3 * self.max_tokens
    }
    pub(super) fn qsl_off(&self) -> usize {
        4 * self.max_tokens
    }
    pub(super) fn ctx_off(&self) -> usize {
        self.qsl_off() + self.max_seqs + 1
    }
    pub(super) fn logits_off(&self) -> usize {
        self.ctx_off() + self.max_seqs
    }
    pub(super) fn carry_off(&self) -> usize {
        self.logits_off() + self.max_seqs
    }
    /// Even, so each entry (with its u64 seed and position, 12 words) is 8-byte aligned.
    pub(super) fn params_off(&self) -> usize {
        (self.carry_off() + 2 * self.max_seqs).next_multiple_of(2)
    }
    /// The prefill attention's row tiles, `(sequence, tile)` pairs
    /// ([`StepInput::row_tiles`] of [`PREFILL_ROWS`]).
    pub(super) fn tiles_off(&self) -> usize {
        self.params_off() + PARAM_WORDS * self.max_seqs
    }
    /// Most row tiles of a step.
    pub(super) fn max_tiles(&self) -> usize {
        self.max_tokens.div_ceil(PREFILL_ROWS) + self.max_seqs
    }
    pub(super) fn tables_off(&self) -> usize {
        self.tiles_off() + 2 * self.max_tiles()
    }
    pub(super) fn words(&self) -> usize {
        self.tables_off() + self.max_seqs * self.table_cols
    }
    /// The host copy of the step last uploaded.
    pub fn host(&self) -> &StepInput {
        &self.host
    }
}
