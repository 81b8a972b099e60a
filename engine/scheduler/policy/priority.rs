//! Per-request priority (lower value first, as in vLLM; ties by arrival). When blocks run out the
//! lowest-priority running request is preempted (the most recently admitted among equals).

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
