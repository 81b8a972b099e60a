//! Scheduler tests without a model: steps "return" with made-up samples.

use proptest::prelude::*;

use super::*;
use crate::engine::request::SamplingParams;

fn cfg(max_num_seqs: usize, max_batch_tokens: usize, num_blocks: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_num_seqs,
        max_batch_tokens,
        num_blocks,
        block_size: 4,
        enable_prefix_caching: true,
        max_wait_steps: Some(aging::DEFAULT_MAX_WAIT_STEPS),
    }
}

fn request(prompt_len: usize, max_tokens: usize, first_token: u32) -> Request {
    let prompt = (0..prompt_len as u32).map(|i| first_token + i).collect();
    Request::new(
        prompt,
        SamplingParams {
            max_tokens,
            ..Default::default()
        },
    )
}

fn scheduler(policy: &str, c: SchedulerConfig) -> Scheduler {
    Scheduler::new(c, policy::by_name(policy).unwrap()).unwrap()
}

/// Ids of the sequences in a batch, in row order.
fn ids(b: &Batch) -> Vec<RequestId> {
    b.scheduled.iter().map(|&(id, ..)| id).collect()
}

/// Returns a step with sample `7` for everyone, finishing requests at max_tokens.
fn complete(s: &mut Scheduler, b: &Batch) {
    let sampled = vec![7; b.samples.len()];
    for a in s.on_step_done(b, &sampled) {
        if s.get(a.id)
            .is_some_and(|q| q.num_output() >= q.params.max_tokens)
        {
            s.remove(a.id);
        }
    }
}

#[test]
fn mixes_decode_and_chunked_prefill_under_the_budget() {
    let mut s = scheduler("fcfs", cfg(8, 10, 64));
    s.add(0, request(3, 5, 100), 0);
    s.add(1, request(25, 5, 200), 0);
    let b = s.schedule().unwrap();
    // Request 0's prompt (3) and a 7-token chunk of request 1's prompt fill the budget of 10.
    assert_eq!(b.step.query_start_locs, vec![0, 3, 10]);
    assert_eq!(
        b.samples.len(),
        1,
        "only request 0 reached the end of its prompt"
    );
    complete(&mut s, &b);
    let b = s.schedule().unwrap();
    assert_eq!(ids(&b), vec![0, 1]);
    assert_eq!(
        b.step.query_start_locs,
        vec![0, 1, 10],
        "1 decode token + a 9-token chunk"
    );
    assert_eq!(
        b.step.input_ids[0], 7,
        "request 0 decodes the token sampled last step"
    );
}

#[test]
fn overlap_plans_a_placeholder_for_the_sample_in_flight() {
    let mut s = scheduler("fcfs", cfg(8, 64, 64));
    s.add(0, request(5, 4, 100), 0);
    let first = s.schedule().unwrap();
    // Planned before `first` returns: the input is the sample `first` is producing.
    let second = s.schedule().unwrap();
    assert_eq!(second.carry, vec![(0, 0)]);
    assert_eq!(second.step.positions, vec![5]);
    complete(&mut s, &first);
    complete(&mut s, &second);
    assert_eq!(s.get(0).unwrap().output(), &[7, 7]);
}

#[test]
fn does_not_plan_past_max_tokens() {
    let mut s = scheduler("fcfs", cfg(8, 64, 64));
    s.add(0, request(5, 1, 100), 0);
    let first = s.schedule().unwrap();
    assert!(
        s.schedule().is_none(),
        "the one token to generate is already in flight"
    );
    complete(&mut s, &first);
    assert!(s.get(0).is_none());
}

#[test]
fn preempts_the_most_recently_admitted_and_resumes_it_first() {
    // 5 blocks of 4 tokens: two 8-token prompts fit (2 blocks each), growth does not.
    let mut s = scheduler("fcfs", cfg(8, 64, 5));
    s.add(0, request(8, 8, 100), 0);
    s.add(1, request(8, 8, 200), 0);
    let b = s.schedule().unwrap();
    assert_eq!(ids(&b), vec![0, 1]);
    complete(&mut s, &b);
    // Request 0 needs a third block, request 1 too: only one is free, so 1 is preempted.
    let b = s.schedule().unwrap();
    assert_eq!(ids(&b), vec![0]);
    assert_eq!(s.preemptions, 1);
    assert_eq!(s.get(1).unwrap().num_computed, 0);
    assert_eq!(
        s.get(1).unwrap().output(),
        &[7],
        "accepted tokens survive preemption"
    );
    complete(&mut s, &b);
    // Once 0 finishes, 1 resumes and recomputes prompt + its accepted token.
    while s.get(0).is_some() {
        let b = s.schedule().unwrap();
        complete(&mut s, &b);
    }
    let b = s.schedule().unwrap();
    assert_eq!(ids(&b), vec![1]);
    // Its first block survived in the prefix cache (the tail block was evicted for request 0).
    assert_eq!(s.get(1).unwrap().num_cached_prompt, 4);
    assert_eq!(b.step.positions, (4..9).collect::<Vec<u32>>());
    assert_eq!(b.sampler_resets[0].generated, vec![7]);
}

#[test]
fn prefix_cache_hits_skip_cached_blocks() {
    let mut s = scheduler("fcfs", cfg(8, 64, 64));
    s.add(0, request(10, 1, 100), 0);
    let b = s.schedule().unwrap();
    complete(&mut s, &b);
    assert!(s.get(0).is_none());
    s.add(1, request(10, 1, 100), 0);
    let b = s.schedule().unwrap();
    // 2 full blocks (8 tokens) are cached; the last 2 tokens are computed.
    assert_eq!(b.step.positions, vec![8, 9]);
    assert_eq!(s.get(1).unwrap().num_cached_prompt, 8);
}

/// Admission order of a crafted queue under each policy (one running slot, so one at a time).
#[test]
fn each_policy_orders_the_queue_as_promised() {
    let order = |policy: &str| -> Vec<RequestId> {
        let mut s = scheduler(policy, cfg(1, 64, 64));
        let mut long_job = request(12, 1, 100);
        long_job.predicted_output_len = Some(9);
        s.add(0, long_job, 0);
        s.add(1, request(3, 1, 200), 0);
        let mut urgent = request(8, 1, 300);
        urgent.priority = -5;
        urgent.predicted_output_len = Some(4);
        s.add(2, urgent, 0);
        let mut admitted = Vec::new();
        while let Some(b) = s.schedule() {
            admitted.extend(ids(&b));
            complete(&mut s, &b);
        }
        admitted
    };
    assert_eq!(order("fcfs"), vec![0, 1, 2]);
    assert_eq!(order("shortest-prompt-first"), vec![1, 2, 0]);
    assert_eq!(order("priority"), vec![2, 0, 1]);
    // Expected outputs: 9 (predicted), 1 (max_tokens), 4 (predicted).
    assert_eq!(order("shortest-job-first"), vec![1, 2, 0]);
}

#[test]
fn decode_first_and_prefill_first_split_the_budget_differently() {
    let step_after_one_decoder = |policy: &str| {
        let mut s = scheduler(policy, cfg(8, 4, 64));
        s.add(0, request(2, 8, 100), 0);
        let b = s.schedule().unwrap();
        complete(&mut s, &b);
        s.add(1, request(20, 8, 200), 0);
        s.schedule().unwrap()
    };
    let d = step_after_one_decoder("decode-first");
    assert_eq!(
        ids(&d),
        vec![0, 1],
        "the decode token first, then a 3-token chunk"
    );
    let p = step_after_one_decoder("prefill-first");
    assert_eq!(ids(&p), vec![1], "the whole budget goes to the new prompt");
    assert_eq!(p.step.input_ids.len(), 4);
}

/// The step in which blocks first run out: request 0 (priority 5) was admitted before
/// request 1 (priority 0) and is the first to need a new block.
fn first_preempting_step(policy: &str) -> Vec<RequestId> {
    let mut s = scheduler(policy, cfg(8, 64, 4));
    let mut low = request(4, 20, 100);
    low.priority = 5;
    s.add(0, low, 0);
    let b = s.schedule().unwrap();
    complete(&mut s, &b);
    s.add(1, request(4, 20, 200), 0);
    loop {
        let b = s.schedule().unwrap();
        if s.preemptions > 0 {
            return ids(&b);
        }
        complete(&mut s, &b);
    }
}

#[test]
fn the_victim_is_the_latest_admitted_or_the_lowest_priority() {
    assert_eq!(
        first_preempting_step("fcfs"),
        vec![0],
        "fcfs preempts request 1, admitted last"
    );
    assert_eq!(
        first_preempting_step("priority"),
        vec![1],
        "priority preempts request 0 itself"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        prompt_len: usize,
        max_tokens: usize,
        family: u32,
    },
    Step {
        overlap: bool,
    },
    Finish(usize),
    Abort(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..30, 1usize..12, 0u32..3).prop_map(|(p, m, f)| Op::Submit {
            prompt_len: p,
            max_tokens: m,
            family: f
        }),
        any::<bool>().prop_map(|overlap| Op::Step { overlap }),
        any::<bool>().prop_map(|overlap| Op::Step { overlap }),
        (0usize..40).prop_map(Op::Finish),
        (0usize..40).prop_map(Op::Abort),
    ]
}

proptest! {
    /// Any interleaving of submit / step (with or without a step in flight) / finish / abort,
    /// with a pool small enough to preempt, leaves every block free at the end.
    #[test]
    fn no_block_leaks_under_any_interleaving(ops in proptest::collection::vec(op(), 1..80)) {
        let mut s = scheduler("fcfs", cfg(4, 16, 12));
        let mut next_id = 0;
        let mut in_flight: Option<Batch> = None;
        for op in ops {
            match op {
                Op::Submit { prompt_len, max_tokens, family } => {
                    // Families share prompt prefixes, so the prefix cache is exercised.
                    s.add(next_id, request(prompt_len, max_tokens, family * 1000), next_id);
                    next_id += 1;
                }
                Op::Step { overlap } => {
                    let planned = s.schedule();
                    if let Some(prev) = in_flight.take() {
                        complete(&mut s, &prev);
                    }
                    match (planned, overlap) {
                        (Some(b), true) => in_flight = Some(b),
                        (Some(b), false) => complete(&mut s, &b),
                        (None, _) => {}
                    }
                }
                Op::Finish(i) | Op::Abort(i) => {
                    s.remove(i as RequestId);
                }
            }
            prop_assert!(s.allocator().check_invariants().is_ok(), "{:?}", s.allocator().check_invariants());
        }
        if let Some(prev) = in_flight.take() {
            complete(&mut s, &prev);
        }
        for id in 0..next_id {
            s.remove(id);
        }
        prop_assert!(s.allocator().all_free());
        prop_assert_eq!(s.allocator().num_free(), 12);

    }
}

fn with_slo(mut r: Request, slo_ms: u64) -> Request {
    r.ttft_slo = Some(std::time::Duration::from_millis(slo_ms));
    r
}

/// Deadlines are set on the scheduler's clock at arrival; the earliest goes first, and a request
/// past its deadline waits behind those that can still meet theirs.
#[test]
fn deadline_admits_the_earliest_deadline_and_puts_late_requests_last() {
    let ms = std::time::Duration::from_millis;
    let mut s = scheduler("deadline", cfg(1, 64, 64));
    s.set_clock(ms(0));
    s.add(0, with_slo(request(3, 1, 100), 50), 0); // due at 50: late by the first plan
    s.add(1, request(3, 1, 200), 0); // no SLO: last
    s.set_clock(ms(40));
    s.add(2, with_slo(request(3, 1, 300), 500), 0); // due at 540
    s.add(3, with_slo(request(3, 1, 400), 100), 0); // due at 140
    s.set_clock(ms(60));
    let mut admitted = Vec::new();
    while let Some(b) = s.schedule() {
        admitted.extend(ids(&b));
        complete(&mut s, &b);
    }
    assert_eq!(admitted, vec![3, 2, 0, 1]);
    assert!(s.take_refused().is_empty(), "deprioritise refuses nobody");
}

/// In refuse mode a request past its deadline is removed before admission, its blocks freed (the
/// prefix cache looked it up, so a bug could leave its references behind), and handed to the
/// caller; the others run.
#[test]
fn refuse_mode_refuses_late_requests_and_frees_them() {
    let ms = std::time::Duration::from_millis;
    let policy = policy::by_name_with(
        "deadline",
        policy::PolicyOptions {
            slo_miss: policy::SloMiss::Refuse,
        },
    )
    .unwrap();
    let mut s = Scheduler::new(cfg(1, 64, 8), policy).unwrap();
    s.add(0, with_slo(request(8, 4, 100), 1_000), 0);
    s.add(1, with_slo(request(8, 4, 200), 10), 0);
    s.add(2, with_slo(request(8, 4, 300), 1_000), 0);
    let b = s.schedule().unwrap();
    assert_eq!(ids(&b), vec![1], "on time at first");
    complete(&mut s, &b);
    s.set_clock(ms(20));
    // 1 is running: running requests are never refused. 0 and 2 are still on time.
    let b = s.schedule().unwrap();
    assert!(s.take_refused().is_empty());
    complete(&mut s, &b);
    s.add(3, with_slo(request(8, 4, 400), 5), 0);
    s.set_clock(ms(30));
    let b = s.schedule().unwrap();
    let refused: Vec<RequestId> = s.take_refused().iter().map(|q| q.id).collect();
    assert_eq!(refused, vec![3]);
    assert!(s.get(3).is_none(), "a refused request leaves the scheduler");
    assert!(!ids(&b).contains(&3));
    complete(&mut s, &b);
    let mut admitted = Vec::new();
    while let Some(b) = s.schedule() {
        admitted.extend(ids(&b));
        complete(&mut s, &b);
    }
    admitted.dedup();
    assert_eq!(admitted, vec![1, 0, 2]);
    assert!(!s.has_work());
    assert!(s.allocator().all_free(), "every block is free at the end");
}
