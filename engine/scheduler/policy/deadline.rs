//! Earliest TTFT deadline first, with SLO-aware admission. Each request's first token is due at
//! its arrival plus its TTFT SLO (the request's `ttft_slo_ms`, else the server's
//! `--ttft-slo-ms`); waiting requests are admitted earliest deadline first (ties by arrival).
//! A request whose deadline has passed before it was admitted can no longer meet its SLO: with
//! `--slo-miss deprioritise` (the default) it waits behind every request that still can, in
//! deadline order; with `--slo-miss refuse` it is given up on and finishes with an error (the
//! server answers 503), so the capacity goes to requests that can still make it. Requests without
//! an SLO come after all that have one, in arrival order. Running requests keep going: only the
//! admission order changes (preemption victims are the most recently admitted, as under fcfs).
//!
//! What it optimises: the fraction of requests meeting their TTFT SLO under overload, where fcfs
//! lets every request in a burst miss by serving the hopeless ones first. What it can starve: a
//! request that has missed its deadline (or has none), for as long as requests that can still
//! meet theirs keep arriving; tight-SLO requests also overtake loose ones. Knobs: the default
//! SLO (`--ttft-slo-ms`), the per-request SLO, `--slo-miss`, and aging. There is no estimate of
//! how long a prefill takes: a request counts as late only once its deadline has passed.
//!
//! Bound (with aging on, the default; see `scheduler::aging` for the derivation): a request that
//! fits the cache finishes within `max_wait_steps` + Σ (prompt + output + 2) steps of arriving,
//! summed over itself and the requests unfinished when it arrived (or is refused earlier).
//! Once overdue, a late request is admitted ahead of the ones that can still meet their SLO.
//!
//! Earliest deadline first: Liu and Layland, "Scheduling Algorithms for Multiprogramming in a
//! Hard-Real-Time Environment" (JACM 1973), optimal on one processor when every deadline can be
//! met, and prone to a cascade of misses under overload, which is why late requests step aside.
//! Serving LLM requests for latency targets rather than throughput: Liu et al., "Andes: Defining
//! and Enhancing Quality-of-Experience in LLM-Based Text Streaming Services" (2024).

use std::cmp::Ordering;
use std::time::Duration;

use super::super::sequence::SeqState;
use super::{Policy, SloMiss};

pub struct EarliestDeadline {
    now: Duration,
    slo_miss: SloMiss,
}

impl EarliestDeadline {
    pub fn new(slo_miss: SloMiss) -> Self {
        EarliestDeadline {
            now: Duration::ZERO,
            slo_miss,
        }
    }

    /// Its deadline has passed: it can no longer meet its SLO.
    fn missed(&self, seq: &SeqState) -> bool {
        seq.deadline.is_some_and(|d| self.now > d)
    }

    /// Sort key: those that can still make it, then the late ones, then those without an SLO;
    /// within each, earliest deadline then arrival.
    fn key(&self, seq: &SeqState) -> (u8, Duration, u64) {
        let class = match seq.deadline {
            None => 2,
            Some(_) if self.missed(seq) => 1,
            Some(_) => 0,
        };
        (
            class,
            seq.deadline.unwrap_or(Duration::ZERO),
            seq.arrival_order,
        )
    }
}

impl Policy for EarliestDeadline {
    fn compare_waiting(&self, a: &SeqState, b: &SeqState) -> Ordering {
        self.key(a).cmp(&self.key(b))
    }

    /// A request turns late as time passes.
    fn reorders(&self) -> bool {
        true
    }

    fn on_clock(&mut self, now: Duration) {
        self.now = now;
    }

    fn may_refuse(&self) -> bool {
        self.slo_miss == SloMiss::Refuse
    }

    fn refuses(&self, seq: &SeqState) -> bool {
        self.slo_miss == SloMiss::Refuse && self.missed(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::request::{Request, SamplingParams};

    fn seq(order: u64, deadline_ms: Option<u64>) -> SeqState {
        let r = Request::new(vec![1, 2, 3], SamplingParams::default());
        let mut s = SeqState::new(order, r, order, 0, 0);
        s.deadline = deadline_ms.map(Duration::from_millis);
        s
    }

    fn order(p: &EarliestDeadline, seqs: &[SeqState]) -> Vec<u64> {
        let mut v: Vec<&SeqState> = seqs.iter().collect();
        v.sort_by(|a, b| p.compare_waiting(a, b));
        v.iter().map(|s| s.id).collect()
    }

    #[test]
    fn the_earliest_deadline_goes_first_then_late_ones_then_those_without() {
        let mut p = EarliestDeadline::new(SloMiss::Deprioritise);
        p.on_clock(Duration::from_millis(100));
        let seqs = [
            seq(0, None),
            seq(1, Some(500)),
            seq(2, Some(50)), // late
            seq(3, Some(200)),
            seq(4, Some(20)), // late, and later than 2 would be without the deadline
            seq(5, Some(200)),
        ];
        assert_eq!(order(&p, &seqs), [3, 5, 1, 4, 2, 0]);
        assert!(!p.refuses(&seqs[2]), "deprioritise mode refuses nobody");
        // Before either deadline passed, 4 and 2 lead in deadline order.
        p.on_clock(Duration::from_millis(10));
        assert_eq!(order(&p, &seqs), [4, 2, 3, 5, 1, 0]);
    }

    #[test]
    fn refuse_mode_refuses_only_late_requests() {
        let mut p = EarliestDeadline::new(SloMiss::Refuse);
        p.on_clock(Duration::from_millis(100));
        assert!(p.may_refuse());
        assert!(p.refuses(&seq(0, Some(99))));
        assert!(!p.refuses(&seq(1, Some(100))), "due now is not late yet");
        assert!(!p.refuses(&seq(2, None)));
    }
}
