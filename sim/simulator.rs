//! The discrete-event loop: the real [`Scheduler`] (with its block allocator, prefix cache and
//! policy) against a pretend executor whose steps take the cost model's time.
//!
//! It mirrors the engine thread (`engine/core.rs`) step for step: requests are `add`ed
//! as they arrive, `schedule` plans a step whenever fewer than `depth` steps are in flight
//! (2 with overlap, as in the engine, so planning stays off the critical path and costs no
//! simulated time), the executor runs queued steps back to back, and on each step's return
//! `on_step_done` takes one fake token per sample. A request finishes when it has its trace's
//! output length (its `max_tokens`, so the scheduler stops planning for it exactly as the
//! engine's does with EOS ignored) and is `remove`d, freeing its blocks at once.

use anyhow::{ensure, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use super::cost_model::CostModel;
use super::timeline::StepRecord;
use super::workload::{engine_request, prompt_tokens, TraceRequest};
use crate::engine::admission::{self, Admission};
use crate::engine::scheduler::batch::Batch;
use crate::engine::scheduler::policy::SloMiss;
use crate::engine::scheduler::{aging, policy, Scheduler, SchedulerConfig};

/// The simulated engine's settings (the engine's own defaults, see `EngineConfig`).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub sched: SchedulerConfig,
    pub policy: String,
    /// Plan step N+1 while step N runs (the engine's default).
    pub overlap: bool,
    /// Most requests waiting for their first admission; arrivals beyond it are refused, as the
    /// engine's `max_queue` refuses submissions (0 = unbounded).
    pub max_queue: usize,
    /// Prompt ids are drawn below this (only matters for replaying on a real model).
    pub vocab: u32,
    /// The error of the output-length predictor the `shortest-job-first` policy sees: each
    /// request's predicted length is its true one times exp(σ·z), z standard normal, so 0 is an
    /// oracle and σ = 1 is off by a factor of e one time in three.
    pub length_error: f64,
    /// Seeds the predictor's errors.
    pub length_error_seed: u64,
    /// The TTFT SLO of trace requests that give none (`--ttft-slo-ms`).
    pub ttft_slo: Option<Duration>,
    /// What the `deadline` policy does with a request past its TTFT deadline.
    pub slo_miss: SloMiss,
    /// Keep a [`StepRecord`] per step in [`SimResult::timeline`].
    pub record_steps: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            sched: SchedulerConfig {
                max_num_seqs: 64,
                max_batch_tokens: 512,
                num_blocks: 1024,
                block_size: 16,
                enable_prefix_caching: true,
                max_wait_steps: Some(aging::DEFAULT_MAX_WAIT_STEPS),
            },
            policy: "fcfs".into(),
            overlap: true,
            max_queue: 1024,
            vocab: 49152,
            length_error: 0.0,
            length_error_seed: 0,
            ttft_slo: None,
            slo_miss: SloMiss::default(),
            record_steps: false,
        }
    }
}

/// What happened to one request, in simulated seconds from the start of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestResult {
    pub arrival: f64,
    pub prompt_len: usize,
    pub output_len: usize,
    pub prefix_group: Option<u32>,
    pub priority: i32,
    /// Its TTFT SLO in seconds, if it has one.
    pub ttft_slo: Option<f64>,
    /// First planned into a step (the engine's queue time ends here too).
    pub scheduled: f64,
    /// Its first token came back.
    pub first_token: f64,
    pub finished: f64,
    /// Prompt tokens served by the prefix cache (on its latest admission).
    pub cached_tokens: usize,
    pub preemptions: u32,
    /// Refused on arrival (then it has no latencies).
    pub rejected: Option<Rejection>,
    /// Its client went away (`cancel_after`) before it finished: aborted then (`finished`), it
    /// counts as neither completed nor rejected.
    pub cancelled: bool,
}

/// Why a request was refused; the engine refuses the same requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `max_queue` requests were already waiting.
    QueueFull,
    /// It needs more KV blocks than the whole cache has.
    TooLarge,
    /// The `deadline` policy gave up on it once its TTFT deadline passed (`--slo-miss refuse`).
    SloMissed,
}

impl Rejection {
    /// The report's label for an engine refusal.
    fn of(r: &admission::Rejection) -> Self {
        match r {
            admission::Rejection::QueueFull { .. } => Rejection::QueueFull,
            // The traces carry no model context, so only the cache can be too small.
            admission::Rejection::TooLarge { .. } | admission::Rejection::ContextLength { .. } => {
                Rejection::TooLarge
            }
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue_full",
            Rejection::TooLarge => "too_large",
            Rejection::SloMissed => "slo_missed",
        }
    }
}

impl RequestResult {
    /// Served to its end: neither refused nor cancelled.
    pub fn completed(&self) -> bool {
        self.rejected.is_none() && !self.cancelled
    }
    pub fn queue_time(&self) -> f64 {
        self.scheduled - self.arrival
    }

    pub fn ttft(&self) -> f64 {
        self.first_token - self.arrival
    }

    /// Whether it got its first token within its TTFT SLO (`None` without one). A refused
    /// request misses it.
    pub fn met_ttft_slo(&self) -> Option<bool> {
        self.ttft_slo
            .map(|slo| self.rejected.is_none() && self.ttft() <= slo)
    }

    pub fn e2e(&self) -> f64 {
        self.finished - self.arrival
    }

    /// Mean time per output token after the first; `None` for single-token outputs.
    pub fn tpot(&self) -> Option<f64> {
        (self.output_len > 1)
            .then(|| (self.finished - self.first_token) / (self.output_len - 1) as f64)
    }
}

#[derive(Debug, Clone)]
pub struct SimResult {
    pub policy: String,
    pub requests: Vec<RequestResult>,
    pub steps: u64,
    pub preemptions: u64,
    /// Prompt tokens looked up in / served from the prefix cache.
    pub prefix_queries: u64,
    pub prefix_hits: u64,
    /// Simulated seconds the executor was busy.
    pub busy: f64,
    /// Arrival of the first request to the end of the last step.
    pub duration: f64,
    /// One record per step when [`SimConfig::record_steps`] is set, else empty.
    pub timeline: Vec<StepRecord>,
}

struct InFlight {
    batch: Batch,
    end: f64,
}

/// Replays `trace` (validated, in arrival order) through the scheduler, steps timed by `cost`.
pub fn simulate(cfg: &SimConfig, cost: &CostModel, trace: &[TraceRequest]) -> Result<SimResult> {
    simulate_with(cfg, trace, |b| cost.step_time(&b.step))
}

/// [`simulate`] with any step timer: `step_time(batch)` gives a planned step's seconds. (Tests
/// time real forward passes on the planned batches with it, to tell the cost model's error
/// from the engine's.)
pub fn simulate_with(
    cfg: &SimConfig,
    trace: &[TraceRequest],
    mut step_time: impl FnMut(&Batch) -> f64,
) -> Result<SimResult> {
    super::workload::validate(trace)?;
    ensure!(
        cfg.length_error.is_finite() && cfg.length_error >= 0.0,
        "the length predictor's error must be a σ >= 0"
    );
    let opts = policy::PolicyOptions {
        slo_miss: cfg.slo_miss,
    };
    let mut sched = Scheduler::new(cfg.sched.clone(), policy::by_name_with(&cfg.policy, opts)?)?;
    let mut predictor = LengthPredictor::new(cfg.length_error, cfg.length_error_seed);
    let depth = if cfg.overlap { 2 } else { 1 };
    let admission = Admission {
        // The traces name no model, so there is no context to exceed.
        max_context: usize::MAX,
        block_size: cfg.sched.block_size,
        num_blocks: cfg.sched.num_blocks,
        max_queue: if cfg.max_queue == 0 {
            usize::MAX
        } else {
            cfg.max_queue
        },
    };
    let mut results: Vec<RequestResult> = trace
        .iter()
        .map(|r| RequestResult {
            arrival: r.arrival,
            prompt_len: r.prompt_len,
            output_len: r.output_len,
            prefix_group: r.prefix_group,
            priority: r.priority,
            ttft_slo: ttft_slo(cfg, r).map(|d| d.as_secs_f64()),
            scheduled: f64::NAN,
            first_token: f64::NAN,
            finished: f64::NAN,
            cached_tokens: 0,
            preemptions: 0,
            rejected: None,
            cancelled: false,
        })
        .collect();
    // When added requests' clients go away: (time's bits, request), soonest first. (Times are
    // finite and >= 0, so their bits order as they do.)
    let mut cancels: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(depth);
    let mut sampled: Vec<u32> = Vec::new();
    let (mut now, mut executor_free, mut busy) = (0.0f64, 0.0f64, 0.0f64);
    let mut next = 0;
    let mut steps = 0u64;
    let mut timeline = Vec::new();
    // Added and not yet admitted for the first time (what `max_queue` bounds).
    let mut waiting = 0usize;
    loop {
        sched.set_clock(Duration::from_secs_f64(now));
        while next < trace.len() && trace[next].arrival <= now {
            let r = &trace[next];
            let refuse = admission
                .check(r.prompt_len, r.output_len, waiting)
                .err()
                .map(|e| Rejection::of(&e));
            if refuse.is_some() {
                results[next].rejected = refuse;
            } else {
                waiting += 1;
                let mut req = engine_request(r, prompt_tokens(r, next, cfg.vocab));
                req.predicted_output_len = Some(predictor.predict(r.output_len));
                req.ttft_slo = ttft_slo(cfg, r);
                sched.add(next as u64, req, 0);
                if let Some(after) = r.cancel_after {
                    cancels.push(Reverse(((r.arrival + after).to_bits(), next)));
                }
            }
            next += 1;
        }
        // Clients gone by now: abort what they still wait for (a step in flight with them in it
        // comes back to a scheduler that no longer knows them, as in the engine).
        while let Some(&Reverse((at, id))) = cancels.peek() {
            if sched.get(id as u64).is_none() {
                cancels.pop(); // finished or refused already
                continue;
            }
            if f64::from_bits(at) > now {
                break;
            }
            cancels.pop();
            sched.remove(id as u64);
            let r = &mut results[id];
            if r.scheduled.is_nan() {
                waiting -= 1;
            }
            r.cancelled = true;
            r.finished = now;
        }
        while in_flight.len() < depth {
            let planned = sched.schedule();
            for seq in sched.take_refused() {
                results[seq.id as usize].rejected = Some(Rejection::SloMissed);
                waiting -= 1;
            }
            let Some(batch) = planned else {
                break;
            };
            for &(id, ..) in &batch.scheduled {
                let r = &mut results[id as usize];
                if r.scheduled.is_nan() {
                    r.scheduled = now;
                    waiting -= 1;
                }
            }
            let dt = step_time(&batch);
            let start = now.max(executor_free);
            executor_free = start + dt;
            if cfg.record_steps {
                timeline.push(StepRecord::of(&batch, &sched, start, executor_free));
            }
            busy += dt;
            steps += 1;
            in_flight.push_back(InFlight {
                batch,
                end: executor_free,
            });
        }
        let step_end = in_flight.front().map(|f| f.end);
        let arrival = trace.get(next).map(|r| r.arrival);
        let cancel = cancels.peek().map(|Reverse((at, _))| f64::from_bits(*at));
        let wake = match (arrival, cancel) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        };
        match (step_end, wake) {
            (None, None) => break,
            (None, Some(a)) => now = a,
            (Some(e), Some(a)) if a < e => now = a,
            (Some(e), _) => {
                now = e;
                let done = in_flight.pop_front().expect("a step is in flight");
                step_done(&mut sched, done.batch, now, &mut results, &mut sampled);
            }
        }
    }
    ensure!(
        !sched.has_work(),
        "the scheduler stopped making progress with {} requests running and {} waiting",
        sched.num_running(),
        sched.num_waiting()
    );
    // Every request is removed by now, so a block still referenced was leaked.
    sched
        .allocator()
        .check_invariants()
        .map_err(anyhow::Error::msg)?;
    ensure!(
        sched.allocator().all_free(),
        "KV blocks are still referenced after every request finished"
    );
    let (prefix_queries, prefix_hits) = sched.allocator().prefix_stats();
    let first = trace.first().map_or(0.0, |r| r.arrival);
    Ok(SimResult {
        policy: cfg.policy.clone(),
        duration: (executor_free.max(now) - first).max(0.0),
        requests: results,
        steps,
        preemptions: sched.preemptions,
        prefix_queries,
        prefix_hits,
        busy,
        timeline,
    })
}

/// `r`'s TTFT SLO: its own, else the simulation's.
fn ttft_slo(cfg: &SimConfig, r: &TraceRequest) -> Option<Duration> {
    r.ttft_slo_ms
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .or(cfg.ttft_slo)
}

/// A step came back at `now`: feed its samples to the scheduler and finish complete requests.
fn step_done(
    sched: &mut Scheduler,
    batch: Batch,
    now: f64,
    results: &mut [RequestResult],
    sampled: &mut Vec<u32>,
) {
    // Fake tokens: any id will do, the scheduler only stores them (and hashes full blocks).
    sampled.clear();
    sampled.extend(batch.samples.iter().map(|s| 1 + (s.id % 97) as u32));
    for a in sched.on_step_done(&batch, sampled) {
        let r = &mut results[a.id as usize];
        let done = sched.get(a.id).map_or(0, |s| s.num_output());
        if done == 1 {
            r.first_token = now;
        }
        if done >= r.output_len {
            r.finished = now;
            if let Some(s) = sched.remove(a.id) {
                r.cached_tokens = s.num_cached_prompt;
                r.preemptions = s.preemptions;
            }
        }
    }
    sched.recycle(batch);
}

/// A stand-in for a learned output-length predictor: the true length with a lognormal error.
struct LengthPredictor {
    sigma: f64,
    rng: StdRng,
}

impl LengthPredictor {
    fn new(sigma: f64, seed: u64) -> Self {
        LengthPredictor {
            sigma,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn predict(&mut self, true_len: usize) -> usize {
        if self.sigma == 0.0 {
            return true_len;
        }
        let z: f64 = StandardNormal.sample(&mut self.rng);
        ((true_len as f64 * (self.sigma * z).exp()).round() as usize).max(1)
    }
}
