//! Per-request priority (lower value first, as in vLLM; ties by arrival). When blocks run out the
//! lowest-priority running request is preempted (the most recently admitted among equals).
//! Without aging it starves a less urgent request for as long as more urgent ones keep arriving.
//!
//! Bound (with aging on, the default; see `scheduler::aging` for the derivation): a request that
//! fits the cache finishes within `max_wait_steps` + Σ (prompt + output + 2) steps of arriving,
//! summed over itself and the requests unfinished when it arrived.
//! Once overdue, the request is admitted ahead of more urgent ones and no longer preempted for
//! them.

use std::cmp::Ordering;

use super::super::sequence::SeqState;
use super::Policy;

pub struct Priority;

impl Policy for Priority {
    fn compare_waiting(&self, a: &SeqState, b: &SeqState) -> Ordering {
        (a.priority, a.arrival_order).cmp(&(b.priority, b.arrival_order))
    }

    fn choose_victim(&self, running: &[&SeqState]) -> usize {
        let mut best = 0;
        for (i, s) in running.iter().enumerate() {
            let b = running[best];
            if (s.priority, s.admitted_order) > (b.priority, b.admitted_order) {
                best = i;
            }
        }
        best
    }
}
