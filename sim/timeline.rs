//! A run's per-step record (only kept when asked: it costs a few words per step): what each
//! step computed and how much of the KV cache was in use, for the timeline chart.

use serde::Serialize;

use super::cost_model::StepShape;
use crate::engine::scheduler::batch::Batch;
use crate::engine::scheduler::Scheduler;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepRecord {
    /// Simulated seconds the step started and ended on the executor.
    pub start: f64,
    pub end: f64,
    /// Token rows of sequences still reading their prompt (chunks of more than one token).
    pub prefill_tokens: usize,
    /// Token rows of sequences computing one token.
    pub decode_tokens: usize,
    /// KV-cache blocks referenced once the step was planned.
    pub kv_blocks_used: usize,
}

impl StepRecord {
    /// The record of `batch`, just planned by `sched`, running from `start` to `end`.
    pub fn of(batch: &Batch, sched: &Scheduler, start: f64, end: f64) -> Self {
        let shape = StepShape::of(&batch.step);
        let alloc = sched.allocator();
        StepRecord {
            start,
            end,
            prefill_tokens: (shape.tokens - shape.decode_tokens) as usize,
            decode_tokens: shape.decode_tokens as usize,
            kv_blocks_used: alloc.num_blocks() - alloc.num_free(),
        }
    }

    pub fn tokens(&self) -> usize {
        self.prefill_tokens + self.decode_tokens
    }
}
