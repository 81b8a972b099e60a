//! Shortest job first, on output length: the waiting request expected to generate the fewest
//! tokens is admitted first (ties by arrival), and when blocks run out the running request
//! expected to generate the most further tokens is preempted. It lowers mean latency when output
//! lengths vary, as far as the predictions are right: the expectation is the request's
//! `predicted_output_len` (a length predictor's guess; the simulator gives the true length or a
//! noisy one, `--length-error`), or its `max_tokens` when there is none. Without aging it starves
//! a long job for as long as shorter ones keep arriving.
//!
//! Bound (with aging on, the default; see `scheduler::aging` for the derivation): a request that
//! fits the cache finishes within `max_wait_steps` + Σ (prompt + output + 2) steps of arriving,
//! summed over itself and the requests unfinished when it arrived.
//! Once overdue, the long job is admitted ahead of the shorter ones and no longer preempted for
//! them.
//!
//! The idea and its predicted-length variants: Qiu et al., "Efficient Interactive LLM Serving
//! with Proxy Model-based Sequence Length Prediction" (2024); Fu et al., "Efficient LLM
//! Scheduling by Learning to Rank" (NeurIPS 2024).

use std::cmp::Ordering;

use super::super::sequence::SeqState;
use super::Policy;

pub struct ShortestJobFirst;

impl Policy for ShortestJobFirst {
    fn compare_waiting(&self, a: &SeqState, b: &SeqState) -> Ordering {
        (a.predicted_remaining(), a.arrival_order).cmp(&(b.predicted_remaining(), b.arrival_order))
    }

    fn choose_victim(&self, running: &[&SeqState]) -> usize {
        let mut best = 0;
        for (i, s) in running.iter().enumerate() {
            let b = running[best];
            if (s.predicted_remaining(), s.admitted_order)
                > (b.predicted_remaining(), b.admitted_order)
            {
                best = i;
            }
        }
        best
    }
}
