//! The simulator on crafted and synthetic workloads: exact timings for a lone request,
//! determinism per seed, each policy's ordering showing in the results, the prefix cache,
//! preemption, refusals, and a day-sized trace run to the end (its speed: benches/simulate.rs).

use tandem::engine::scheduler::{aging, SchedulerConfig};
use tandem::sim::report::{Slo, Summary};
use tandem::sim::simulator::{Rejection, RequestResult};
use tandem::sim::workload::{Synthetic, TraceRequest};
use tandem::sim::{simulate, CostModel, SimConfig, SimResult};

const SLO: Slo = Slo {
    ttft_s: 1.0,
    tpot_s: 0.1,
};

/// 1 ms per step plus 0.1 ms per token: simple enough to predict by hand.
fn linear_cost() -> CostModel {
    CostModel::from_coefficients(vec![1, 1001], &[0.0011, 0.1011, 0.0, 0.0])
}

fn config(policy: &str, max_num_seqs: usize, max_batch_tokens: usize) -> SimConfig {
    SimConfig {
        sched: SchedulerConfig {
            max_num_seqs,
            max_batch_tokens,
            num_blocks: 4096,
            block_size: 16,
            enable_prefix_caching: true,
            max_wait_steps: Some(aging::DEFAULT_MAX_WAIT_STEPS),
        },
        policy: policy.into(),
        ..Default::default()
    }
}

fn req(arrival: f64, prompt_len: usize, output_len: usize) -> TraceRequest {
    TraceRequest {
        arrival,
        prompt_len,
        output_len,
        ..Default::default()
    }
}

fn run(cfg: &SimConfig, trace: &[TraceRequest]) -> SimResult {
    simulate(cfg, &linear_cost(), trace).unwrap()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[test]
fn a_lone_request_takes_one_prefill_step_then_one_decode_step_per_token() {
    for overlap in [true, false] {
        let cfg = SimConfig {
            overlap,
            ..config("fcfs", 8, 512)
        };
        let r = run(&cfg, &[req(2.0, 100, 5)]);
        let q = &r.requests[0];
        let (prefill, decode) = (0.0011 + 0.0001 * 99.0, 0.0011);
        assert!((q.ttft() - prefill).abs() < 1e-12, "{q:?}");
        assert!((q.e2e() - (prefill + 4.0 * decode)).abs() < 1e-12, "{q:?}");
        assert_eq!(q.queue_time(), 0.0);
        assert_eq!(r.steps, 5);
    }
}

#[test]
fn the_same_seed_gives_the_same_results() {
    let spec = Synthetic {
        num_requests: 500,
        rate: 20.0,
        prefix_groups: 4,
        prefix_share: 0.5,
        seed: 3,
        ..Default::default()
    };
    let cfg = SimConfig {
        sched: SchedulerConfig {
            num_blocks: 400, // small enough to preempt
            ..config("fcfs", 64, 512).sched
        },
        ..config("fcfs", 64, 512)
    };
    let a = run(&cfg, &spec.generate().unwrap());
    let b = run(&cfg, &spec.generate().unwrap());
    assert!(a.preemptions > 0 && a.prefix_hits > 0);
    assert_eq!(format!("{:?}", a.requests), format!("{:?}", b.requests));
    assert_eq!(Summary::of(&a, SLO), Summary::of(&b, SLO));
    let other = Synthetic { seed: 4, ..spec };
    let c = run(&cfg, &other.generate().unwrap());
    assert_ne!(format!("{:?}", a.requests), format!("{:?}", c.requests));
}

/// One slot: a long prompt and three short ones queue behind a running request.
fn queue_behind_one() -> Vec<TraceRequest> {
    vec![
        req(0.0, 8, 50),
        req(0.001, 400, 5),
        req(0.002, 8, 5),
        req(0.003, 8, 5),
        req(0.004, 8, 5),
    ]
}

fn first_tokens(r: &SimResult) -> Vec<f64> {
    r.requests.iter().map(|q| q.first_token).collect()
}

#[test]
fn shortest_prompt_first_serves_short_prompts_before_an_earlier_long_one() {
    let trace = queue_behind_one();
    let fcfs = first_tokens(&run(&config("fcfs", 1, 512), &trace));
    let spf = first_tokens(&run(&config("shortest-prompt-first", 1, 512), &trace));
    assert!(fcfs[1] < fcfs[2] && fcfs[2] < fcfs[3] && fcfs[3] < fcfs[4]);
    assert!(spf[2] < spf[3] && spf[3] < spf[4] && spf[4] < spf[1]);
}

/// Shortest-job-first on output length: with an oracle, short jobs no longer wait behind long
/// ones, so mean latency drops well below fcfs's; as the predictor's error grows, the gain
/// shrinks back towards fcfs. (One slot, so the order of service is all that differs.)
#[test]
fn shortest_job_first_buys_latency_with_prediction_quality() {
    let trace: Vec<TraceRequest> = (0..40)
        .map(|i| req(0.0001 * i as f64, 8, if i % 4 == 0 { 120 } else { 6 }))
        .collect();
    let mean_e2e = |policy: &str, error: f64| {
        let cfg = SimConfig {
            length_error: error,
            length_error_seed: 7,
            ..config(policy, 1, 512)
        };
        let r = run(&cfg, &trace);
        r.requests.iter().map(|q| q.e2e()).sum::<f64>() / r.requests.len() as f64
    };
    let fcfs = mean_e2e("fcfs", 0.0);
    let oracle = mean_e2e("shortest-job-first", 0.0);
    let noisy = mean_e2e("shortest-job-first", 1.0);
    let blind = mean_e2e("shortest-job-first", 8.0);
    assert!(oracle < 0.6 * fcfs, "oracle {oracle} vs fcfs {fcfs}");
    assert!(
        oracle < noisy && noisy < blind,
        "{oracle} < {noisy} < {blind}"
    );
    let cfg = SimConfig {
        length_error: -1.0,
        ..config("shortest-job-first", 1, 512)
    };
    assert!(simulate(&cfg, &linear_cost(), &trace).is_err());
}

/// One client floods the server, another sends a few requests just after: under fcfs the few wait
/// behind the whole flood, under vtc they are served as soon as the flooding client has had its
/// share.
#[test]
fn vtc_serves_a_light_client_ahead_of_a_flooding_one() {
    let with_client = |r: TraceRequest, c: &str| TraceRequest {
        client: Some(c.into()),
        ..r
    };
    let mut trace: Vec<TraceRequest> = (0..30)
        .map(|i| with_client(req(0.0001 * i as f64, 16, 20), "heavy"))
        .collect();
    trace.extend((0..3).map(|i| with_client(req(0.01 + 0.0001 * i as f64, 16, 20), "light")));
    let light_ttft = |policy: &str| {
        let r = run(&config(policy, 2, 512), &trace);
        let light: Vec<f64> = r.requests[30..]
            .iter()
            .map(|q| q.first_token - q.arrival)
            .collect();
        light.iter().sum::<f64>() / light.len() as f64
    };
    let (fcfs, vtc) = (light_ttft("fcfs"), light_ttft("vtc"));
    assert!(
        vtc < 0.25 * fcfs,
        "light client's mean TTFT: vtc {vtc} vs fcfs {fcfs}"
    );
}

#[test]
fn priority_admits_the_most_urgent_waiting_request_first() {
    let mut trace = queue_behind_one();
    trace[4].priority = -1;
    let fcfs = first_tokens(&run(&config("fcfs", 1, 512), &trace));
    let prio = first_tokens(&run(&config("priority", 1, 512), &trace));
    assert!(fcfs[4] > fcfs[1]);
    assert!(prio[4] < prio[1] && prio[4] < prio[2]);
}

#[test]
fn prefill_first_trades_running_decodes_for_new_prompts_and_decode_first_the_reverse() {
    // Eight long decodes running, then eight long prompts arrive; the step budget (64 tokens)
    // cannot serve both at once.
    let mut trace: Vec<TraceRequest> = (0..8).map(|_| req(0.0, 16, 300)).collect();
    trace.extend((0..8).map(|i| req(0.05 + 0.01 * i as f64, 256, 4)));
    let measure = |policy: &str| {
        let r = run(&config(policy, 16, 64), &trace);
        let (early, late): (Vec<&RequestResult>, Vec<&RequestResult>) =
            r.requests.iter().partition(|q| q.output_len == 300);
        (
            median(late.iter().map(|q| q.ttft()).collect()),
            median(early.iter().map(|q| q.tpot().unwrap()).collect()),
        )
    };
    let (pf_ttft, pf_tpot) = measure("prefill-first");
    let (df_ttft, df_tpot) = measure("decode-first");
    assert!(
        pf_ttft < df_ttft,
        "TTFT: prefill-first {pf_ttft}, decode-first {df_ttft}"
    );
    assert!(
        pf_tpot > df_tpot,
        "TPOT: prefill-first {pf_tpot}, decode-first {df_tpot}"
    );
}

#[test]
fn shared_prefixes_hit_the_prefix_cache_and_cut_time_to_first_token() {
    let trace = Synthetic {
        num_requests: 300,
        rate: 10.0,
        prefix_groups: 3,
        prefix_len: 512,
        seed: 1,
        ..Default::default()
    }
    .generate()
    .unwrap();
    let on = run(&config("fcfs", 64, 512), &trace);
    let mut cfg = config("fcfs", 64, 512);
    cfg.sched.enable_prefix_caching = false;
    let off = run(&cfg, &trace);
    let (s_on, s_off) = (Summary::of(&on, SLO), Summary::of(&off, SLO));
    assert!(
        s_on.prefix_cache_hits as f64 > 0.5 * 512.0 * 300.0,
        "{s_on:?}"
    );
    assert_eq!(s_off.prefix_cache_hits, 0);
    assert!(
        on.requests
            .iter()
            .filter(|q| q.cached_tokens >= 496)
            .count()
            > 250
    );
    assert!(s_on.ttft.mean < s_off.ttft.mean);
}

#[test]
fn a_small_cache_preempts_and_still_finishes_everything() {
    let trace: Vec<TraceRequest> = (0..32).map(|_| req(0.0, 64, 128)).collect();
    let mut cfg = config("fcfs", 32, 512);
    cfg.sched.num_blocks = 64;
    let r = run(&cfg, &trace);
    let s = Summary::of(&r, SLO);
    assert!(s.preemptions > 0);
    assert_eq!(s.completed, 32);
    assert!(r.requests.iter().any(|q| q.preemptions > 0));
}

#[test]
fn requests_are_refused_like_the_engine_refuses_them() {
    let mut trace: Vec<TraceRequest> = (0..10).map(|_| req(0.0, 16, 4)).collect();
    trace.push(req(1.0, 5000, 10));
    let mut cfg = config("fcfs", 8, 512);
    cfg.max_queue = 2;
    cfg.sched.num_blocks = 100;
    let r = run(&cfg, &trace);
    let refused = |why| {
        r.requests
            .iter()
            .filter(|q| q.rejected == Some(why))
            .count()
    };
    assert_eq!(refused(Rejection::QueueFull), 8);
    assert_eq!(refused(Rejection::TooLarge), 1);
    assert_eq!(Summary::of(&r, SLO).completed, 2);
}

/// A day-sized trace runs to the end: every one of 100k requests completes, at a light load and a
/// saturating one. (How fast is `cargo bench --bench simulate`'s business: a wall-clock bound
/// here would fail whenever the machine is busy.)
#[test]
fn a_hundred_thousand_requests_all_complete() {
    let cost = CostModel::default_cpu();
    for rate in [0.02, 0.2] {
        let trace = Synthetic {
            num_requests: 100_000,
            rate,
            prompt_median: 64.0,
            output_median: 32.0,
            ..Default::default()
        }
        .generate()
        .unwrap();
        let r = simulate(&SimConfig::default(), &cost, &trace).unwrap();
        let s = Summary::of(&r, SLO);
        eprintln!(
            "100k requests at {rate} req/s: {} steps, {} completed, {:.0}% busy",
            s.steps,
            s.completed,
            s.utilization * 100.0
        );
        assert_eq!(s.completed, trace.len(), "at {rate} req/s");
        assert!(s.steps > 0);
    }
}

/// A client that goes away (`cancel_after`) aborts its request then, running or waiting: it
/// holds no blocks afterwards (the simulator checks the cache ends empty), takes no more steps,
/// and counts as cancelled, not completed; a client that outwaits its request changes nothing.
#[test]
fn a_client_going_away_cancels_its_request_then() {
    // One slot: the long request runs from 0; the second waits behind it.
    let cfg = config("fcfs", 1, 512);
    let long = req(0.0, 100, 1000);
    let waiting = req(0.0, 50, 10);
    let alone = run(&cfg, &[long.clone(), waiting.clone()]);
    let full_run = alone.requests[0].e2e();
    let cancel_at = full_run / 4.0;
    let trace = [
        TraceRequest {
            cancel_after: Some(cancel_at),
            ..long.clone()
        },
        waiting.clone(),
    ];
    let r = run(&cfg, &trace);
    let (cut, next) = (&r.requests[0], &r.requests[1]);
    assert!(cut.cancelled && !cut.completed(), "{cut:?}");
    assert!(
        cut.finished >= cancel_at && cut.finished < cancel_at + 0.01,
        "{cut:?}"
    );
    assert!(next.completed(), "{next:?}");
    // The waiting request starts once the long one is gone, not after its thousand tokens.
    assert!(next.ttft() < full_run / 2.0, "{next:?}");
    assert!(
        r.steps < alone.steps / 2,
        "{} of {} steps",
        r.steps,
        alone.steps
    );
    let s = Summary::of(&r, SLO);
    assert_eq!((s.completed, s.cancelled, s.rejected), (1, 1, 0));

    // Cancelled while still waiting: gone before it ever runs.
    let trace = [
        long.clone(),
        TraceRequest {
            cancel_after: Some(cancel_at),
            ..waiting.clone()
        },
    ];
    let r = run(&cfg, &trace);
    assert!(r.requests[1].cancelled && r.requests[1].scheduled.is_nan());
    assert!(r.requests[0].completed());

    // A patient client: the same results as without one.
    let trace = [
        TraceRequest {
            cancel_after: Some(full_run * 2.0),
            ..long
        },
        waiting,
    ];
    assert_eq!(run(&cfg, &trace).requests, alone.requests);
}

#[test]
fn the_timeline_records_every_computed_token_and_never_more_kv_blocks_than_the_cache() {
    let trace = Synthetic {
        num_requests: 60,
        rate: 4.0,
        prompt_median: 300.0,
        seed: 5,
        ..Default::default()
    }
    .generate()
    .unwrap();
    let num_blocks = 256;
    let mut cfg = config("fcfs", 16, 256);
    cfg.sched.num_blocks = num_blocks;
    cfg.sched.enable_prefix_caching = false;
    let quiet = run(&cfg, &trace);
    assert!(
        quiet.timeline.is_empty(),
        "steps are recorded only when asked"
    );
    cfg.record_steps = true;
    let r = run(&cfg, &trace);
    assert_eq!(r.timeline.len() as u64, r.steps);
    assert_eq!(
        r.preemptions, 0,
        "the token count below assumes no recomputation"
    );
    // Without prefix caching or preemption each prompt token is computed once, and each output
    // token but the last is fed back as a decode row.
    let done = r.requests.iter().filter(|q| q.rejected.is_none());
    let want: usize = done.map(|q| q.prompt_len + q.output_len - 1).sum();
    let got: usize = r
        .timeline
        .iter()
        .map(|s| s.prefill_tokens + s.decode_tokens)
        .sum();
    assert_eq!(got, want);
    assert!(r.timeline.iter().any(|s| s.prefill_tokens > 0));
    assert!(r.timeline.iter().any(|s| s.decode_tokens > 0));
    assert!(r.timeline.iter().all(|s| s.kv_blocks_used <= num_blocks));
    assert!(r.timeline.iter().any(|s| s.kv_blocks_used > num_blocks / 4));
    assert!(r
        .timeline
        .windows(2)
        .all(|w| w[0].end <= w[1].start + 1e-12));
    assert!(r.timeline.iter().all(|s| s.start < s.end));
    // Recording changes nothing else.
    assert_eq!(r.requests, quiet.requests);
}
