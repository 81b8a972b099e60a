//! A planned step, as the scheduler hands it to the executor.

use std::sync::Arc;

use crate::device::step::StepInput;
use crate::engine::request::{RequestId, SamplingParams};

/// Who samples from one logits row; `epoch` tells a stale sample (its request was preempted
/// while the step was in flight) from a live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleSlot {
    pub id: RequestId,
    pub epoch: u32,
}

/// What the executor needs to (re)create a request's sampler state.
#[derive(Debug, Clone)]
pub struct SamplerReset {
    pub id: RequestId,
    pub params: Arc<SamplingParams>,
    pub seed: u64,
    /// Only filled when a repetition penalty needs it.
    pub prompt: Vec<u32>,
    /// Tokens already generated (after a preemption).
    pub generated: Vec<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The step's metadata; placeholder rows hold 0 in `input_ids` until resolved.
    pub step: StepInput,
    /// `(row, i)`: row `row`'s input is sample `i` of the previous step (a placeholder).
    pub carry: Vec<(u32, u32)>,
    /// One per logits row, in `step.logits_indices` order.
    pub samples: Vec<SampleSlot>,
    /// `(request, epoch, computed end)` of every sequence in the step, for bookkeeping on return.
    pub scheduled: Vec<(RequestId, u32, usize)>,
    /// The executor forgets these requests' sampler state first...
    pub sampler_drops: Vec<RequestId>,
    /// ...then creates these.
    pub sampler_resets: Vec<SamplerReset>,
}

impl Batch {
    /// Empties every buffer, keeping its capacity.
    pub fn clear(&mut self) {
        let s = &mut self.step;
        for v in [
            &mut s.input_ids,
            &mut s.positions,
            &mut s.query_start_locs,
            &mut s.context_lens,
            &mut s.block_tables,
            &mut s.logits_indices,
        ] {
            v.clear();
        }
        s.slot_mapping.clear();
        s.max_blocks_per_seq = 0;
        self.carry.clear();
        self.samples.clear();
        self.scheduled.clear();
        self.sampler_drops.clear();
        self.sampler_resets.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.step.input_ids.is_empty()
    }
}
