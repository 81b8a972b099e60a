//! Every request finishes: under every policy the scheduler keeps making progress with the KV
//! cache full and the step budget small, and with aging on no request waits past its bound
//! however the policy ranks it. Every run here is bounded in steps, so a scheduler that stops
//! making progress fails with a message instead of hanging.

mod liveness {
    pub mod bounds;
    pub mod drive;
    pub mod sim_replay;
    pub mod workload;
}

use proptest::prelude::*;
use tandem::engine::scheduler::batch::Batch;
use tandem::engine::scheduler::policy::{self, PolicyOptions, SloMiss};
use tandem::sim::workload::Synthetic;
use tandem::sim::{simulate_with, CostModel, SimConfig};

use liveness::bounds::linear_bound;
use liveness::workload::{case, cases, Case, Req};
use liveness::{drive, sim_replay};

/// The deadline policy giving up on late requests (the default serves them last).
const REFUSE: PolicyOptions = PolicyOptions {
    slo_miss: SloMiss::Refuse,
};

/// `tandem sim --policy prefill-first --num-requests 800 --rate 1`: four times the default rate,
/// about twice what the shipped cost model serves, so the queue grows and the cache fills. If
/// prefill work can take the block a running decoder needs, prefill-first spins here forever (two
/// requests taking each other's block turn about, neither gaining a token); every policy must
/// finish.
///
/// The limit is `S` (about 210,000 steps). Only fcfs and shortest-prompt-first are proven to stay
/// under it with aging off (see `bounds::workload_bound`); prefill-first's proven bound is quadratic, too loose to catch a
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

proptest! {
    // A case takes well under a millisecond under every policy: 16,384 cases of each test
    // run in about 10 s in release on two shared cores; `TANDEM_LIVENESS_CASES` sets the count.
    #![proptest_config(ProptestConfig {
        cases: cases(16384),
        ..ProptestConfig::default()
    })]

    /// Small random workloads (staggered arrivals, shared prefixes, priorities, `n` > 1, aborts)
    /// in a cache of a few blocks with a budget of a few tokens, with and without a step in
    /// flight, aging off or on with a small `max_wait_steps`: under every policy, on the
    /// scheduler alone, no request outlives its bound (`bounds::aging_bound` with aging on, the
    /// whole workload `bounds::workload_bound` with it off), the cache holds exactly the live
    /// requests' blocks after every step (an abort releases everything at once), and it ends
    /// empty. `TANDEM_LIVENESS_CASES=100000` runs more.
    #[test]
    fn every_request_ends_within_its_bound_on_the_scheduler(c in case()) {
        for name in policy::NAMES {
            drive::run(name, &c).map_err(TestCaseError::fail)?;
        }
        drive::run_with("deadline", REFUSE, &c).map_err(TestCaseError::fail)?;
    }

    /// The same workloads in the simulator (aborts as clients going away), each step a simulated
    /// second: every request finishes within its bound or is cancelled no sooner than its client
    /// left, and the simulator finds no block still referenced at the end.
    #[test]
    fn every_request_ends_within_its_bound_in_the_simulator(c in case()) {
        for name in policy::NAMES {
            sim_replay::run(name, &c).map_err(TestCaseError::fail)?;
        }
        sim_replay::run_with("deadline", REFUSE, &c).map_err(TestCaseError::fail)?;
    }
}

/// A request that arrives behind a queue the policy ranks ahead of it, and a stream that keeps
/// that queue full: one arrival per step, each request taking several steps while only two run
/// at once. `late` is the starved request's `(prompt, output, priority)`, `stream`'s likewise.
fn starving_workload(
    late: (usize, usize, i32),
    stream: (usize, usize, i32),
    w: Option<u64>,
) -> Case {
    let req = |arrival, (prompt_len, output_len, priority)| Req {
        arrival,
        prompt_len,
        output_len,
        family: 0,
        priority,
        n: 1,
        abort_after: None,
        ttft_slo: None,
    };
    let mut reqs: Vec<Req> = (0..4).map(|t| req(t, stream)).collect();
    reqs.push(req(4, late));
    reqs.extend((5..300).map(|t| req(t, stream)));
    Case {
        block_size: 4,
        num_blocks: 64,
        max_batch_tokens: 4,
        max_num_seqs: 2,
        prefix_caching: false,
        overlap: true,
        max_wait_steps: w,
        reqs,
    }
}

/// Under `policy`, the starved request (sequence 4) waits until the stream has drained with aging
/// off, past the bound aging guarantees it, and ends within that bound with aging on.
fn aging_ends_the_starvation(policy: &str, late: (usize, usize, i32), stream: (usize, usize, i32)) {
    starvation_ends(policy, |w| starving_workload(late, stream, w));
}

/// [`aging_ends_the_starvation`] on the workload `case(max_wait_steps)`.
fn starvation_ends(policy: &str, case: impl Fn(Option<u64>) -> Case) {
    const STARVED: usize = 4;
    let on = drive::run(policy, &case(Some(16))).unwrap();
    let off = drive::run(policy, &case(None)).unwrap();
    let bound = on.bounds[STARVED].unwrap();
    let (waited, ended) = (off.spans[STARVED].unwrap(), off.ends[STARVED].unwrap());
    let last_of_the_rest = (0..off.ends.len())
        .filter(|&i| i != STARVED)
        .filter_map(|i| off.ends[i])
        .max()
        .unwrap();
    assert!(
        waited > bound && ended >= last_of_the_rest,
        "{policy} without aging: the request took {waited} steps (the aging bound is {bound}) and \
         ended at step {ended}, the stream at {last_of_the_rest}: the workload no longer starves it"
    );
    let with_aging = on.spans[STARVED].unwrap();
    assert!(
        with_aging <= bound,
        "{policy} with aging: the request took {with_aging} steps, bound {bound}"
    );
    eprintln!(
        "{policy}: {waited} steps without aging, {with_aging} with (bound {bound}), {} and {} \
         steps in all",
        off.steps, on.steps
    );
}

/// Shortest-prompt-first starves a long prompt behind a stream of shorter ones.
#[test]
fn aging_bounds_the_wait_of_a_long_prompt_under_shortest_prompt_first() {
    aging_ends_the_starvation("shortest-prompt-first", (12, 4, 0), (2, 6, 0));
}

/// Shortest-job-first starves a long job behind a stream of shorter ones.
#[test]
fn aging_bounds_the_wait_of_a_long_job_under_shortest_job_first() {
    aging_ends_the_starvation("shortest-job-first", (2, 12, 0), (2, 6, 0));
}

/// Priority starves a low-priority request behind a stream of more urgent ones.
#[test]
fn aging_bounds_the_wait_of_a_low_priority_request_under_priority() {
    aging_ends_the_starvation("priority", (2, 6, 5), (2, 6, 0));
}

/// The deadline policy starves a request that missed its deadline behind a stream of requests
/// that can still meet theirs.
#[test]
fn aging_bounds_the_wait_of_a_late_request_under_deadline() {
    const STARVED: usize = 4;
    let case = |w| {
        let mut c = starving_workload((2, 6, 0), (2, 6, 0), w);
        for (i, r) in c.reqs.iter_mut().enumerate() {
            r.ttft_slo = Some(if i == STARVED { 0 } else { 10_000 });
        }
        c
    };
    starvation_ends("deadline", case);
    // Refusing instead, it gives up on that request alone, and everything else finishes.
    let refusing = drive::run_with("deadline", REFUSE, &case(None)).unwrap();
    assert_eq!(refusing.refused, 1);
    assert_eq!(refusing.ends[STARVED], None);
    assert!((0..refusing.ends.len())
        .filter(|&i| i != STARVED)
        .all(|i| refusing.ends[i].is_some()));
}
