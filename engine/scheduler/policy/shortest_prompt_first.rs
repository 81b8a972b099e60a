//! Waiting requests with the shortest prompts are admitted first (ties by arrival): lowers mean
//! time to first token when prompt lengths vary. Without aging it starves a long prompt for as
//! long as shorter ones keep arriving.
//!
//! Bound (with aging on, the default; see `scheduler::aging` for the derivation): a request that
//! fits the cache finishes within `max_wait_steps` + Σ (prompt + output + 2) steps of arriving,
//! summed over itself and the requests unfinished when it arrived.
//! Once overdue, the long prompt is admitted ahead of the shorter ones.

use std::cmp::Ordering;

use super::super::sequence::SeqState;
use super::Policy;

pub struct ShortestPromptFirst;

impl Policy for ShortestPromptFirst {
    fn compare_waiting(&self, a: &SeqState, b: &SeqState) -> Ordering {
        (a.num_prompt, a.arrival_order).cmp(&(b.num_prompt, b.arrival_order))
    }
}
