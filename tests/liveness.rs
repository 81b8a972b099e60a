//! Every request finishes: under every policy the scheduler keeps making progress with the KV
//! cache full and the step budget small. Every run here is bounded in steps, so a scheduler that
//! stops making progress fails with a message instead of hanging.

use std::collections::VecDeque;

use proptest::prelude::*;
use tandem::engine::request::{Request, RequestId, SamplingParams};
use tandem::engine::scheduler::batch::Batch;
use tandem::engine::scheduler::{policy, Scheduler, SchedulerConfig};
use tandem::sim::workload::Synthetic;
use tandem::sim::{simulate_with, CostModel, SimConfig};

/// `S` below: the steps a schedule that never throws work away needs at most. Every step computes
/// at least one token; a request computes its prompt and output tokens (the last sample is never
/// fed back, so fewer), and with two steps in flight it may wait two steps for its last samples.
fn linear_bound(lens: impl Iterator<Item = (usize, usize)>) -> u64 {
    lens.map(|(prompt, output)| (prompt + output + 2) as u64)
        .sum()
}

/// `tandem sim --policy prefill-first --num-requests 800 --rate 1`: four times the default rate,
/// about twice what the shipped cost model serves, so the queue grows and the cache fills. If
/// prefill work can take the block a running decoder needs, prefill-first spins here forever (two
/// requests taking each other's block turn about, neither gaining a token); every policy must
/// finish.
///
/// The limit is `S` (about 210,000 steps). Only fcfs and shortest-prompt-first are proven to stay
/// under it (see [`step_bound`]); prefill-first's proven bound is quadratic, too loose to catch a
/// hang quickly. Every policy needs about 10,000 steps here, and a scheduler that stops making
/// progress exceeds any limit (in under two seconds for this one).
#[test]
fn every_policy_finishes_a_workload_that_overflows_the_cache() {
    let trace = Synthetic {
        num_requests: 800,
        rate: 1.0,
        ..Default::default()
    }
    .generate()
    .unwrap();
    let limit = linear_bound(trace.iter().map(|r| (r.prompt_len, r.output_len)));
    let cost = CostModel::default_cpu();
    for name in policy::NAMES {
        let cfg = SimConfig {
            policy: name.into(),
            ..Default::default()
        };
        let mut steps = 0u64;
        let r = simulate_with(&cfg, &trace, |b: &Batch| {
            steps += 1;
            assert!(
                steps <= limit,
                "{name}: the simulator is still stepping after {limit} steps (the sum of prompt \
                 + output + 2 over the workload): the scheduler stopped making progress"
            );
            cost.step_time(&b.step)
        })
        .unwrap();
        let unfinished = r
            .requests
            .iter()
            .filter(|q| q.rejected.is_none() && q.finished.is_nan())
            .count();
        assert_eq!(unfinished, 0, "{name}: requests left unfinished");
        eprintln!(
            "{name}: {steps} steps (limit {limit}), {} preemptions",
            r.preemptions
        );
        if name == "prefill-first" {
            assert!(
                r.preemptions > 0,
                "the workload no longer fills the cache, so it tests nothing"
            );
        }
    }
}

#[derive(Debug, Clone)]
struct Req {
    /// In steps from the start.
    arrival: u64,
    prompt_len: usize,
    output_len: usize,
    /// Requests of one family share the first half of their prompts (prefix-cache hits).
    family: u32,
    priority: i32,
}

#[derive(Debug, Clone)]
struct Case {
    block_size: usize,
    num_blocks: usize,
    max_batch_tokens: usize,
    max_num_seqs: usize,
    prefix_caching: bool,
    /// Plan a step while the previous one is in flight, as the engine does by default.
    overlap: bool,
    reqs: Vec<Req>,
}

fn case() -> impl Strategy<Value = Case> {
    let req = (0u64..4, 1usize..=20, 1usize..=12, 0u32..3, 0i32..3);
    (
        1usize..=4,
        2usize..=12,
        1usize..=16,
        1usize..=6,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(req, 1..=8),
    )
        .prop_map(|(bs, nb, budget, seqs, prefix_caching, overlap, reqs)| {
            let mut arrival = 0;
            let reqs = reqs
                .into_iter()
                .map(|(gap, prompt_len, output_len, family, priority)| {
                    arrival += gap;
                    Req {
                        arrival,
                        prompt_len,
                        output_len,
                        family,
                        priority,
                    }
                })
                // The engine refuses what cannot fit the whole cache.
                .filter(|r| (r.prompt_len + r.output_len).div_ceil(bs) <= nb)
                .collect();
            Case {
                block_size: bs,
                num_blocks: nb,
                max_batch_tokens: budget,
                max_num_seqs: seqs,
                prefix_caching,
                overlap,
                reqs,
            }
        })
}

fn prompt(i: usize, r: &Req) -> Vec<u32> {
    let shared = r.prompt_len / 2;
    (0..r.prompt_len as u32)
        .map(|j| {
            if (j as usize) < shared {
                1000 * (r.family + 1) + j
            } else {
                100_000 * (i as u32 + 1) + j
            }
        })
        .collect()
}

/// The step bound for `policy`, with `S` from [`linear_bound`].
///
/// - fcfs and shortest-prompt-first budget running requests oldest first. The oldest running
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
/// - decode-first and priority get the same quadratic bound without that argument (decode-first
///   budgets a newer decoder before an older prefill, priority preempts by priority, so the oldest
///   running request can be preempted); a scheduler that stops making progress exceeds it anyway.
fn step_bound(policy: &str, s: u64) -> u64 {
    match policy {
        "fcfs" | "shortest-prompt-first" => s,
        _ => s * (s + 1),
    }
}

/// Replays `c` on the scheduler alone, the way the simulator drives it (time counts steps).
fn run(policy_name: &str, c: &Case) -> Result<(), String> {
    let cfg = SchedulerConfig {
        max_num_seqs: c.max_num_seqs,
        max_batch_tokens: c.max_batch_tokens,
        num_blocks: c.num_blocks,
        block_size: c.block_size,
        enable_prefix_caching: c.prefix_caching,
    };
    let mut s = Scheduler::new(cfg, policy::by_name(policy_name).unwrap()).unwrap();
    let bound = step_bound(
        policy_name,
        linear_bound(c.reqs.iter().map(|r| (r.prompt_len, r.output_len))),
    );
    let depth = if c.overlap { 2 } else { 1 };
    let mut in_flight: VecDeque<Batch> = VecDeque::new();
    let (mut now, mut next, mut steps, mut finished) = (0u64, 0usize, 0u64, 0usize);
    loop {
        while next < c.reqs.len() && c.reqs[next].arrival <= now {
            let r = &c.reqs[next];
            let mut req = Request::new(
                prompt(next, r),
                SamplingParams {
                    max_tokens: r.output_len,
                    ignore_eos: true,
                    ..Default::default()
                },
            );
            req.priority = r.priority;
            s.add(next as RequestId, req, 0);
            next += 1;
        }
        while in_flight.len() < depth {
            let Some(b) = s.schedule() else { break };
            steps += 1;
            if steps > bound {
                return Err(format!(
                    "{policy_name}: {} of {} requests unfinished after {bound} steps ({} running, \
                     {} waiting, {} preemptions)",
                    c.reqs.len() - finished,
                    c.reqs.len(),
                    s.num_running(),
                    s.num_waiting(),
                    s.preemptions
                ));
            }
            in_flight.push_back(b);
        }
        let Some(b) = in_flight.pop_front() else {
            match c.reqs.get(next) {
                Some(r) => {
                    now = r.arrival;
                    continue;
                }
                None => break,
            }
        };
        now += 1;
        let sampled: Vec<u32> = b.samples.iter().map(|x| 1 + (x.id % 97) as u32).collect();
        for a in s.on_step_done(&b, &sampled) {
            if s.get(a.id)
                .is_some_and(|q| q.num_output() >= q.params.max_tokens)
            {
                s.remove(a.id);
                finished += 1;
            }
        }
        s.recycle(b);
    }
    if finished != c.reqs.len() || s.has_work() {
        return Err(format!(
            "{policy_name}: nothing left to plan with {} of {} requests finished ({} running, {} \
             waiting)",
            finished,
            c.reqs.len(),
            s.num_running(),
            s.num_waiting()
        ));
    }
    s.allocator().check_invariants()?;
    if !s.allocator().all_free() {
        return Err(format!("{policy_name}: blocks still referenced at the end"));
    }
    Ok(())
}

proptest! {
    // Each case takes microseconds, so many run by default.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2048),
        ..ProptestConfig::default()
    })]

    /// Small random workloads (shared prefixes, priorities, staggered arrivals) in a cache of a
    /// few blocks with a budget of a few tokens, with and without a step in flight: under every
    /// policy each request finishes within [`step_bound`] steps and the cache ends empty.
    /// `PROPTEST_CASES=100000` runs more.
    #[test]
    fn every_request_finishes_within_the_step_bound(c in case()) {
        for name in policy::NAMES {
            run(name, &c).map_err(TestCaseError::fail)?;
        }
    }
}
