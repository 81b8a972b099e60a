//! A step's metadata as the CUDA kernels read it: fixed offsets in one device buffer.

use cudarc::driver::CudaSlice;

use super::attention::DecodeWorkspace;
use super::sampling::SampleBuffers;
use crate::runtime::step::StepInput;

/// A step's metadata on the device: one buffer of u32 words at fixed offsets (so a later CUDA
/// graph sees fixed addresses), filled by one copy per step, plus the host copy the ops validate.
///
/// Word layout for `T = max_tokens`, `S = max_seqs`, `B` = block-table columns of capacity:
/// `slot_mapping` (i64, 2T words, first so it is 8-byte aligned) | `input_ids` T | `positions` T |
/// `query_start_locs` S+1 | `context_lens` S | `logits_indices` S | `block_tables` S·B.
pub struct CudaMeta {
    pub(super) host: StepInput,
    pub(super) staging: Vec<u32>,
    pub(super) dev: CudaSlice<u32>,
    pub(super) max_tokens: usize,
    pub(super) max_seqs: usize,
    pub(super) table_cols: usize,
    /// Split partials of the decode attention, sized for `max_seqs` and the model's layout.
    pub(super) decode: DecodeWorkspace,
    /// The device sampler's parameters and results, for `max_seqs` rows.
    pub(super) sampling: SampleBuffers,
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
    pub(super) fn tables_off(&self) -> usize {
        self.logits_off() + self.max_seqs
    }
    pub(super) fn words(&self) -> usize {
        self.tables_off() + self.max_seqs * self.table_cols
    }
    /// The host copy of the step last uploaded.
    pub fn host(&self) -> &StepInput {
        &self.host
    }
}
