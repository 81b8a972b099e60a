//! The simulator's prediction against the real engine, on the CPU default model: two short traces
//! replayed through the engine and simulated with a cost model calibrated in this test, on this
//! machine, just before. Throughput and median time to first token must agree within 15% (the
//! issue's bound); the figures are printed for `benches/RESULTS.md`.
//!
//! - `poisson`: arrivals at about half the engine's capacity. Time to first token is then a few
//!   step times, not a queue that amplifies every error; throughput mostly follows arrivals.
//! - `burst`: 25 requests 10 ms apart (a quarter second, against seconds of work), so throughput
//!   is the engine's capacity (the cost model summed over every step) and time to first token
//!   is the queue's. 25 requests for 8 running slots: the median is one request admitted as
//!   others finish, not an average straddling the first admission wave and the rest (a cliff
//!   that any timing noise moves). The 10 ms spacing, rather than all at once, keeps the engine
//!   thread from racing the submissions: it plans each step having seen the same arrivals as
//!   the simulator.
//!
//! Timing noise: CI-class machines have 2 cores, often shared with other work, and a step's time
//! can swing by a third from one minute to the next. So the cost model is calibrated
//! immediately before the replays, a few probe shapes are timed then and again after each phase
//! (on a second copy of the model, the engine idle), and an attempt only counts when they all
//! agree (the machine ran at one speed throughout). A drifted
//! attempt is redone once; if that drifts too, the test reports itself skipped (inconclusive,
//! with the figures) rather than judge the simulator by the neighbours' load. The 15% bound
//! itself is never relaxed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::device::cpu::CpuBackend;
use tandem::engine::request::{Event, FinishReason, Request, SamplingParams};
use tandem::engine::scheduler::SchedulerConfig;
use tandem::engine::{start, EngineConfig, EngineHandle};
use tandem::model::default_model::default_model_path;
use tandem::model::loader::ModelSource;
use tandem::model::StepLimits;
use tandem::runner::Runner;
use tandem::sim::calibrate::{knots_of, measure, GridPoint};
use tandem::sim::fit::fit;
use tandem::sim::report::{percentile, Slo, Summary};
use tandem::sim::workload::{prompt_tokens, Synthetic, TraceRequest};
use tandem::sim::{simulate, CostModel, SimConfig};

const TOLERANCE: f64 = 0.15;
/// A probe shape this much slower or faster after a phase than before the replays voids an
/// attempt. The worst shape, not the mean: contention slows shapes unevenly (a busy second core
/// halves a parallel prefill's speed but hardly touches a one-row decode), which moves time to
/// first token and throughput apart.
const DRIFT: f64 = 0.10;
const ATTEMPTS: usize = 2;

const MAX_SEQS: usize = 8;
const MAX_TOKENS: usize = 128;
const BLOCK_SIZE: usize = 16;
const NUM_BLOCKS: usize = 256;

fn engine_config() -> EngineConfig {
    EngineConfig {
        max_num_seqs: MAX_SEQS,
        max_batch_tokens: MAX_TOKENS,
        block_size: BLOCK_SIZE,
        num_blocks: NUM_BLOCKS,
        policy: "fcfs".into(),
        overlap: true,
        max_queue: 1024,
        enable_prefix_caching: true,
    }
}

fn sim_config(vocab: u32) -> SimConfig {
    SimConfig {
        sched: SchedulerConfig {
            max_num_seqs: MAX_SEQS,
            max_batch_tokens: MAX_TOKENS,
            num_blocks: NUM_BLOCKS,
            block_size: BLOCK_SIZE,
            enable_prefix_caching: true,
        },
        policy: "fcfs".into(),
        overlap: true,
        max_queue: 1024,
        vocab,
    }
}

fn workload(num_requests: usize, rate: f64, seed: u64) -> Vec<TraceRequest> {
    Synthetic {
        num_requests,
        rate,
        prompt_median: 24.0,
        prompt_sigma: 0.5,
        max_prompt: 96,
        output_median: 10.0,
        output_sigma: 0.5,
        max_output: 32,
        seed,
        ..Default::default()
    }
    .generate()
    .unwrap()
}

/// (name, trace, offset of its prompts' ids: no phase's prompts share a prefix with another's,
/// so the engine's cache, warm from the earlier phase, hits no more than the simulator's).
fn phases() -> Vec<(&'static str, Vec<TraceRequest>, usize)> {
    let mut burst = workload(25, f64::INFINITY, 8);
    for (i, r) in burst.iter_mut().enumerate() {
        r.arrival = 0.01 * i as f64;
    }
    vec![("poisson", workload(24, 1.2, 7), 0), ("burst", burst, 1000)]
}

/// The shapes these traces produce: small decode batches, short prefills, and their mixes.
fn grid() -> Vec<GridPoint> {
    let mut g = Vec::new();
    for seqs in [1, 2, 4, 8] {
        for ctx in [32, 64] {
            g.push(GridPoint::decode(seqs, ctx));
        }
    }
    for tokens in [8, 16, 32, 64, 128] {
        g.push(GridPoint::prefill(tokens, 0));
    }
    g.push(GridPoint::mixed(1, 32, 24));
    g.push(GridPoint::mixed(2, 40, 24));
    g.push(GridPoint::mixed(4, 40, 48));
    g
}

/// Shapes timed right after calibrating and again after each phase: one of each kind.
fn probes() -> Vec<GridPoint> {
    vec![
        GridPoint::decode(1, 32),
        GridPoint::decode(4, 64),
        GridPoint::prefill(32, 0),
        GridPoint::mixed(2, 40, 24),
    ]
}

fn load() -> Runner<CpuBackend> {
    let limits = StepLimits {
        max_tokens: MAX_TOKENS,
        max_seqs: MAX_SEQS,
    };
    ModelSource::open(&default_model_path())
        .and_then(|s| tandem::runner::load(s, CpuBackend::new(), limits))
        .unwrap()
        .0
}

fn calibrate(model: &mut Runner<CpuBackend>) -> CostModel {
    let grid = grid();
    let ms = measure(model, &grid, 3, BLOCK_SIZE, |_, _, _| {}).unwrap();
    fit(&ms, &knots_of(&grid)).unwrap()
}

/// A request's life in the engine, in seconds from the replay's start.
struct Observed {
    submitted: f64,
    first_token: f64,
    finished: f64,
}

/// Submits each request at its arrival time, in trace order from this one thread, and reads
/// each stream on a thread of its own as its events come; records when each request was
/// submitted, got its first token and ended.
fn replay(h: &EngineHandle, trace: &[TraceRequest], offset: usize, vocab: u32) -> Vec<Observed> {
    let t0 = Instant::now() + Duration::from_millis(50);
    let since = move || t0.elapsed().as_secs_f64();
    let mut readers = Vec::new();
    for (i, r) in trace.iter().enumerate() {
        let prompt = prompt_tokens(r, offset + i, vocab);
        let params = SamplingParams {
            max_tokens: r.output_len,
            ignore_eos: true,
            ..Default::default()
        };
        let at = t0 + Duration::from_secs_f64(r.arrival);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let submitted = since();
        let mut s = h.submit(Request::new(prompt, params)).unwrap();
        let want = r.output_len;
        readers.push(std::thread::spawn(move || {
            let mut first = None;
            loop {
                match s.blocking_recv().expect("the stream ends with Finished") {
                    Event::Tokens { .. } => {
                        first.get_or_insert_with(since);
                    }
                    Event::Finished { reason, usage, .. } => {
                        assert_eq!(reason, FinishReason::Length);
                        assert_eq!(usage.completion_tokens, want);
                        return Observed {
                            submitted,
                            first_token: first.expect("a token before the end"),
                            finished: since(),
                        };
                    }
                }
            }
        }));
    }
    readers.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The trace as the engine actually received it: arrivals at the submission instants (a
/// millisecond or so after the nominal ones), so both sides see exactly the same arrivals.
fn as_replayed(trace: &[TraceRequest], obs: &[Observed]) -> Vec<TraceRequest> {
    trace
        .iter()
        .zip(obs)
        .map(|(r, o)| TraceRequest {
            arrival: o.submitted,
            ..r.clone()
        })
        .collect()
}

/// Completed requests per second from the first arrival to the last finish, and median TTFT
/// (the simulator's report defines both the same way).
fn engine_figures(obs: &[Observed]) -> (f64, f64) {
    let end = obs.iter().map(|o| o.finished).fold(0.0, f64::max);
    let mut ttft: Vec<f64> = obs.iter().map(|o| o.first_token - o.submitted).collect();
    ttft.sort_by(f64::total_cmp);
    (
        obs.len() as f64 / (end - obs[0].submitted),
        percentile(&ttft, 50.0),
    )
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b
}

#[test]
fn simulation_predicts_the_engine_within_15_percent() {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipped: default model not found at {}", path.display());
        return;
    }
    let phases = phases();
    // A second copy of the model times the probe shapes while the engine owns the first.
    let mut prober = load();
    let vocab = prober.cfg().vocab_size as u32;
    let mut probe = || -> Vec<f64> {
        let ms = measure(&mut prober, &probes(), 3, BLOCK_SIZE, |_, _, _| {}).unwrap();
        ms.iter().map(|m| m.seconds).collect()
    };
    for attempt in 1..=ATTEMPTS {
        let mut model = load();
        let cost = calibrate(&mut model);
        let before = probe();
        let tokenizer = Arc::new(ModelSource::open(&path).unwrap().tokenizer);
        let engine = start(model, tokenizer, "default".into(), engine_config()).unwrap();
        // Each phase, then the probes again with the engine idle: the worst change counts.
        let mut drift = 0.0f64;
        let mut observed: Vec<Vec<Observed>> = Vec::new();
        for (_, trace, offset) in &phases {
            observed.push(replay(&engine.handle(), trace, *offset, vocab));
            let now = probe();
            let change = now
                .iter()
                .zip(&before)
                .map(|(a, b)| rel(*a, *b))
                .fold(0.0, f64::max);
            drift = drift.max(change);
        }
        engine.handle().shutdown();
        engine.join().unwrap();

        let fit = cost.fit.clone().unwrap_or_default();
        eprintln!(
            "attempt {attempt}: probe drift {:.1}%, fit error mean {:.1}% worst {:.1}%",
            drift * 100.0,
            fit.mean_rel_error * 100.0,
            fit.max_rel_error * 100.0
        );
        let slo = Slo {
            ttft_s: 1.0,
            tpot_s: 0.2,
        };
        let mut worst: (f64, String) = (0.0, String::new());
        for ((name, trace, _), obs) in phases.iter().zip(&observed) {
            let (throughput, ttft) = engine_figures(obs);
            let replayed = as_replayed(trace, obs);
            let sim = Summary::of(
                &simulate(&sim_config(vocab), &cost, &replayed).unwrap(),
                slo,
            );
            let pct = |s: f64, e: f64| (s / e - 1.0) * 100.0;
            eprintln!(
                "  {name:<8} throughput: engine {throughput:.3} req/s, sim {:.3} ({:+.1}%);  \
                 median TTFT: engine {:.1} ms, sim {:.1} ms ({:+.1}%);  sim steps {}",
                sim.request_throughput,
                pct(sim.request_throughput, throughput),
                ttft * 1e3,
                sim.ttft.p50 * 1e3,
                pct(sim.ttft.p50, ttft),
                sim.steps
            );
            for (what, s, e) in [
                ("throughput", sim.request_throughput, throughput),
                ("median TTFT", sim.ttft.p50, ttft),
            ] {
                if rel(s, e) > worst.0 {
                    worst = (
                        rel(s, e),
                        format!("{name} {what}: sim {s:.4} vs engine {e:.4}"),
                    );
                }
            }
        }
        if drift > DRIFT {
            if attempt < ATTEMPTS {
                eprintln!("  the machine's speed drifted during the replays; trying again");
                continue;
            }
            eprintln!(
                "skipped: sim_engine_agreement: the machine's speed drifted by {:.1}% across the \
                 replays in all {ATTEMPTS} attempts (other work running?): inconclusive",
                drift * 100.0
            );
            return;
        }
        assert!(
            worst.0 <= TOLERANCE,
            "off by {:.1}%: {}",
            worst.0 * 100.0,
            worst.1
        );
        return;
    }
}
