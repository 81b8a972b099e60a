//! Aging: a bound on every request's time in the system, whatever the policy.
//!
//! A request is *overdue* once `max_wait_steps` (W) steps have been planned since it arrived and
//! it has not finished. Every step first serves the overdue requests, oldest arrival first,
//! before the policy sees the budget:
//!
//! - a running one gets its next chunk (its whole remaining work, up to the budget left);
//! - a waiting one (fresh or preempted) is admitted with its first chunk if there is room; the
//!   oldest unfinished request, once overdue, makes room by preempting running requests;
//! - the victim of any preemption is a request that is not overdue, chosen by the policy, when
//!   there is one; otherwise the overdue one that arrived last.
//!
//! So the oldest overdue request comes first in every step, every other running request may give
//! way to it, and it alone fits the cache: it computes at least one token per step until done,
//! as the oldest request does under fcfs.
//!
//! **Guarantee.** A request that fits the cache, with `p` prompt and `o` output tokens, finishes
//! within `W + Σ (p_q + o_q + 2)` steps of arriving, the sum over itself and the requests that
//! arrived before it and were unfinished when it arrived. Derivation: from W steps after it
//! arrives it is overdue, so from then on every step has an oldest overdue request, which is it
//! or one of those older ones (newer arrivals are younger). Each of those stays the oldest until
//! it finishes, and while it is the oldest it computes a token every step except while waiting for
//! its last samples: at most `p + o - 1` tokens (the last sample is never fed back, and a
//! recompute after an earlier preemption only redoes tokens it already counts) plus two steps in
//! flight, so it finishes within `p + o + 2` steps of becoming the oldest. Later arrivals, however
//! many and whatever the policy thinks of them, add nothing.
//!
//! Below W, the policy alone decides. Aging costs nothing until a request is overdue; then it
//! may preempt younger work (recompute), which is why W is large by default.

use super::{RequestId, Scheduler};

/// `--max-wait-steps`' default: far above a busy server's usual time in the system (a few
/// hundred steps for a long answer), so aging only acts on a request the policy has starved.
pub const DEFAULT_MAX_WAIT_STEPS: u64 = 1000;

/// Whether `id` is overdue in the step being planned (false with aging off).
pub(super) fn is_overdue(s: &Scheduler, id: RequestId) -> bool {
    s.cfg
        .max_wait_steps
        .is_some_and(|w| s.step_no > s.seqs[&id].arrived_in + w)
}

/// The running request to preempt for `requester` (a running request needing blocks, or `None`
/// for an admission): among those not in this step and holding no claimed block (the requester
/// always qualifies), one that is not overdue, as the policy chooses; failing that, the overdue
/// one that arrived last. `None` when there is no candidate.
pub(super) fn choose_victim(s: &Scheduler, requester: Option<RequestId>) -> Option<RequestId> {
    let step_no = s.step_no;
    let candidates = s.running.iter().copied().filter(|&r| {
        let q = &s.seqs[&r];
        Some(r) == requester || (q.planned_in != step_no && q.claimed_in != step_no)
    });
    let (overdue, fresh): (Vec<RequestId>, Vec<RequestId>) =
        candidates.partition(|&r| is_overdue(s, r));
    if !fresh.is_empty() {
        let views: Vec<_> = fresh.iter().map(|r| &s.seqs[r]).collect();
        return Some(fresh[s.policy.choose_victim(&views)]);
    }
    overdue.into_iter().max_by_key(|r| s.seqs[r].arrival_order)
}
