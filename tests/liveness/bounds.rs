//! The step bounds the liveness tests hold the scheduler to, with their derivations. A step here
//! is a planned (non-empty) step.

/// `S`: the steps a schedule that never throws work away needs at most, from the lengths of every
/// request. Every step computes at least one token; a request computes its prompt and output
/// tokens (the last sample is never fed back, so fewer), and with two steps in flight it may wait
/// two steps for its last samples.
pub fn linear_bound(lens: impl Iterator<Item = (usize, usize)>) -> u64 {
    lens.map(|(prompt, output)| (prompt + output + 2) as u64)
        .sum()
}

/// With aging off: the steps a whole finite workload may take under `policy`, with `S` from
/// [`linear_bound`].
///
/// - fcfs, shortest-prompt-first and deadline budget running requests oldest first. The oldest running
///   request is never preempted: the victim is the most recently admitted candidate, and the
///   candidates always include the request that needs room, so when that is another request the
///   oldest is safe; when it is the oldest itself it comes first in the step, every other running
///   request is a candidate, and alone it fits the cache. So it computes a token every step (or
///   waits at most two steps for its last samples) and finishes within its own prompt + output +
///   2 steps of becoming the oldest: `S` steps in all.
/// - prefill-first claims blocks in admission order too, so again the oldest running request is
///   never preempted, but as a decoder it gets budget only after prefill work. During a run of
///   steps that leave it none, no preempted request resumes (they wait for the decodes) and a
///   fresh one is admitted only while none is preempted, so each request does at most one stretch
///   of prefill work (at most its prompt + output tokens) and the run lasts at most `S` steps.
///   Such runs are separated by the oldest request's own tokens: at most (prompt + output + 2) ·
///   (S + 1) steps per request, `S · (S + 1)` in all.
/// - decode-first, priority and shortest-job-first get the same quadratic bound without that
///   argument (decode-first budgets a newer decoder before an older prefill, priority and
///   shortest-job-first preempt by priority or expected length, so the oldest running request
///   can be preempted); a scheduler that stops making progress exceeds it anyway.
///
/// None of this bounds one request's wait while others keep arriving: shortest-prompt-first,
/// shortest-job-first and priority starve a request for as long as shorter or more urgent ones
/// come in.
pub fn workload_bound(policy: &str, s: u64) -> u64 {
    match policy {
        "fcfs" | "shortest-prompt-first" | "deadline" => s,
        _ => s * (s + 1),
    }
}

/// With aging on (`max_wait_steps` = W), under every policy: the steps from a request's arrival
/// to its end, given `work` = prompt + output + 2 of itself and of every request unfinished when
/// it arrived (all of which arrived before it): `W + Σ work`.
///
/// Derivation (the scheduler's `aging` module): W steps after arriving it is overdue, so from
/// then on every step has an oldest unfinished overdue request, and that is it or one of the
/// requests already there when it arrived (later arrivals are younger). The oldest overdue
/// request is served first in every step (admitted by preempting others if it waits), is never a
/// victim while another candidate exists, and alone fits the cache, so it computes a token every
/// step but while its last samples are in flight, and stays the oldest until it finishes: at
/// most prompt + output + 2 steps. Requests arriving later add nothing, however many there are
/// and however the policy ranks them.
pub fn aging_bound(max_wait_steps: u64, work: impl Iterator<Item = u64>) -> u64 {
    max_wait_steps + work.sum::<u64>()
}
