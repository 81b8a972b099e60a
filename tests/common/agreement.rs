//! The engine and the simulator on the same requests, compared in ways the machine's speed cannot
//! move (the method is explained in tests/sim_engine_agreement.rs): phases, the gated replay
//! through the real engine, the plan compared step for step, and the simulator rerun on the
//! engine's own measured step times. Included by `#[path]` beside `common/wait.rs` (as `wait`).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::device::cpu::CpuBackend;
use tandem::engine::request::{Event, FinishReason};
use tandem::engine::scheduler::batch::Batch;
use tandem::engine::scheduler::{aging, SchedulerConfig};
use tandem::engine::timeline::StepTiming;
use tandem::engine::{start, EngineConfig, EngineHandle};
use tandem::model::default_model::default_model_path;
use tandem::model::loader::ModelSource;
use tandem::model::weight_format::WeightFormat;
use tandem::model::StepLimits;
use tandem::runner::Runner;
use tandem::sim::calibrate::{knots_of, measure, GridPoint};
use tandem::sim::cost_model::Measurement;
use tandem::sim::fit::fit;
use tandem::sim::report::{percentile, Dist, Slo, Summary};
use tandem::sim::simulator::SimResult;
use tandem::sim::workload::{engine_request, prompt_tokens, Synthetic, TraceRequest};
use tandem::sim::{simulate_with, CostModel, SimConfig};

use crate::wait;

pub const MAX_TOKENS: usize = 128;
pub const BLOCK_SIZE: usize = 16;
/// The gate's prompt: one full 96-token prefill step, tens of milliseconds here, during which
/// the burst is submitted (a few microseconds of channel sends).
pub const GATE_PROMPT: usize = 96;
/// Simulated arrival of the burst: inside the gate's first step, whatever the step's length.
pub const EPSILON: f64 = 1e-6;
/// Goodput targets for the simulator's summaries (goodput is not compared here).
pub const SLO: Slo = Slo {
    ttft_s: 1.0,
    tpot_s: 0.2,
};
/// Passes over the calibration grid.
pub const ROUNDS: usize = 3;
/// Redos of a phase whose burst did not reach the engine within the gate's first step.
pub const GATE_ATTEMPTS: usize = 3;

pub struct Phase {
    pub name: &'static str,
    pub policy: &'static str,
    pub overlap: bool,
    pub max_seqs: usize,
    pub num_blocks: usize,
    pub trace: Vec<TraceRequest>,
}

pub fn engine_config(p: &Phase) -> EngineConfig {
    EngineConfig {
        max_num_seqs: p.max_seqs,
        max_batch_tokens: MAX_TOKENS,
        block_size: BLOCK_SIZE,
        num_blocks: p.num_blocks,
        policy: p.policy.into(),
        max_wait_steps: Some(aging::DEFAULT_MAX_WAIT_STEPS),
        overlap: p.overlap,
        max_queue: 1024,
        enable_prefix_caching: true,
        ..EngineConfig::default()
    }
}

pub fn sim_config(p: &Phase, vocab: u32) -> SimConfig {
    SimConfig {
        sched: SchedulerConfig {
            max_num_seqs: p.max_seqs,
            max_batch_tokens: MAX_TOKENS,
            num_blocks: p.num_blocks,
            block_size: BLOCK_SIZE,
            enable_prefix_caching: true,
            max_wait_steps: Some(aging::DEFAULT_MAX_WAIT_STEPS),
        },
        policy: p.policy.into(),
        overlap: p.overlap,
        max_queue: 1024,
        vocab,
        ..Default::default()
    }
}

/// `synthetic`'s requests as a gated burst: request 0 (the gate) at 0 with a 96-token prompt and
/// enough output for two steps (so with overlap the engine has both its in-flight steps planned
/// before the burst), the rest at `EPSILON`.
pub fn gated(synthetic: Synthetic) -> Vec<TraceRequest> {
    let mut t = synthetic.generate().unwrap();
    for (i, r) in t.iter_mut().enumerate() {
        r.arrival = if i == 0 { 0.0 } else { EPSILON };
    }
    t[0].prompt_len = GATE_PROMPT;
    t[0].prefix_group = None;
    t[0].output_len = t[0].output_len.max(4);
    t
}

/// The default model on the CPU, f32 weights: the step-time model here is a linear fit, which
/// the f32 GEMM's cost follows; the quantised block product switches paths with the batch length
/// (device/cpu/quant_matmul) and is not what the agreement is calibrated for.
pub fn load(max_seqs: usize) -> Runner<CpuBackend> {
    let limits = StepLimits {
        max_tokens: MAX_TOKENS,
        max_seqs,
    };
    ModelSource::open(&default_model_path())
        .map(|s| s.with_weight_format(WeightFormat::F32))
        .and_then(|s| tandem::runner::load(s, CpuBackend::new(), limits))
        .unwrap()
        .0
}

/// The shapes the agreement traces produce: decode batches, short prefills, and their mixes.
pub fn grid() -> Vec<GridPoint> {
    let mut g = Vec::new();
    for seqs in [1, 2, 4, 8, 16, 32] {
        for ctx in [32, 64] {
            g.push(GridPoint::decode(seqs, ctx));
        }
    }
    for tokens in [8, 16, 32, 64, 128] {
        g.push(GridPoint::prefill(tokens, 0));
    }
    g.push(GridPoint::mixed(1, 32, 24));
    g.push(GridPoint::mixed(4, 40, 48));
    g.push(GridPoint::mixed(8, 40, 64));
    g.push(GridPoint::mixed(16, 40, 96));
    g
}

/// The cost model, fitted to each grid shape's median over `ROUNDS` passes over the whole grid.
/// Passes rather than repetitions back to back: a second of contention then slows one
/// measurement of many shapes, which the median drops, instead of every measurement of a few
/// neighbouring shapes (say, all the prefills), which would bend the fitted model.
pub fn calibrate(model: &mut Runner<CpuBackend>) -> (CostModel, Vec<Measurement>) {
    let grid = grid();
    let rounds: Vec<Vec<Measurement>> = (0..ROUNDS)
        .map(|_| measure(model, &grid, 1, BLOCK_SIZE, |_, _, _| {}).unwrap())
        .collect();
    let ms: Vec<Measurement> = (0..grid.len())
        .map(|i| Measurement {
            shape: rounds[0][i].shape,
            seconds: median(rounds.iter().map(|r| r[i].seconds)),
        })
        .collect();
    (fit(&ms, &knots_of(&grid)).unwrap(), ms)
}

/// A request's life in the engine, in seconds from just before the timeline started.
pub struct Observed {
    pub submitted: f64,
    pub first_token: f64,
    pub finished: f64,
}

/// One phase through the engine: what each request saw, the engine's steps (times in the same
/// seconds as `Observed`), its preemptions and prefix-cache hits, and whether the gate held
/// (every burst submission returned before the gate's first step ended).
pub struct Replay {
    pub obs: Vec<Observed>,
    pub steps: Vec<StepTiming>,
    pub preemptions: u64,
    pub prefix_hits: u64,
    pub gate_held: bool,
}

/// Phase `p` through a fresh engine, redone with fresh prompts (up to `GATE_ATTEMPTS` times) when
/// the burst reached the engine after the gate's first step. `n` numbers the phase, so that each
/// attempt of each phase has prompts of its own.
pub fn replay(p: &Phase, n: usize, vocab: u32) -> Replay {
    for attempt in 0..GATE_ATTEMPTS {
        let r = replay_once(p, 1000 * (GATE_ATTEMPTS * n + attempt + 1), vocab);
        if r.gate_held {
            return r;
        }
        eprintln!(
            "  {}: the burst reached the engine after the gate's first step (the test thread \
             was starved); redoing the phase with fresh prompts",
            p.name
        );
    }
    panic!(
        "{}: in {GATE_ATTEMPTS} tries the burst never reached the engine within the gate's first \
         step",
        p.name
    )
}

fn replay_once(p: &Phase, offset: usize, vocab: u32) -> Replay {
    let path = default_model_path();
    let tokenizer = Arc::new(ModelSource::open(&path).unwrap().tokenizer);
    let engine = start(
        load(p.max_seqs),
        tokenizer,
        "default".into(),
        engine_config(p),
    )
    .unwrap();
    let h: EngineHandle = engine.handle();
    // Built before anything is submitted, so the burst is only channel sends. Shared prefixes
    // depend on the group alone, so an offset moves only each request's own tokens.
    let mut requests: Vec<_> = p
        .trace
        .iter()
        .enumerate()
        .map(|(i, r)| engine_request(r, prompt_tokens(r, offset + i, vocab)))
        .collect();
    // The timeline's zero is at or after t0 (microseconds apart): its step times are at most
    // that much earlier than on this clock, which only makes the gate check stricter.
    let t0 = Instant::now();
    h.timeline().start();
    let since = move |t: Instant| t.duration_since(t0).as_secs_f64();
    let mut submitted = Vec::new();
    let mut streams = Vec::new();
    let rest = requests.split_off(1);
    submitted.push(since(Instant::now()));
    streams.push(h.submit(requests.pop().unwrap()).unwrap());
    // The engine publishes its stats only when it can plan nothing more: the gate is running
    // and its in-flight steps are planned.
    let waited = Instant::now();
    while h.stats().running == 0 {
        assert!(
            waited.elapsed() < wait::LIMIT,
            "the engine never admitted the gate request"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
    for r in rest {
        streams.push(h.submit(r).unwrap());
        submitted.push(since(Instant::now()));
    }
    let last_submit = *submitted.last().unwrap();
    let mut readers = Vec::new();
    for ((mut s, sub), r) in streams.into_iter().zip(submitted).zip(&p.trace) {
        let want = r.output_len;
        readers.push(std::thread::spawn(move || {
            let mut first = None;
            loop {
                match wait::next_event(&mut s).expect("the stream ends with Finished") {
                    Event::Tokens { .. } => {
                        first.get_or_insert_with(|| since(Instant::now()));
                    }
                    Event::Finished { reason, usage, .. } => {
                        assert_eq!(reason, FinishReason::Length);
                        assert_eq!(usage.completion_tokens, want);
                        return Observed {
                            submitted: sub,
                            first_token: first.expect("a token before the end"),
                            finished: since(Instant::now()),
                        };
                    }
                }
            }
        }));
    }
    let obs: Vec<Observed> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    wait::stop_engine(engine);
    // Read once the engine has stopped (it publishes its counters when idle).
    let steps = h.timeline().take();
    let stats = h.stats();
    Replay {
        gate_held: steps.first().is_some_and(|s| last_submit < s.end),
        obs,
        steps,
        preemptions: stats.preemptions,
        prefix_hits: stats.prefix_cache_hits,
    }
}

/// A step's tokens and sequences: what the engine's timeline and the simulator both record.
pub type Shape = (usize, usize);

/// What the simulator planned: each step's shape and the time it was given.
pub struct Plan {
    pub shapes: Vec<Shape>,
    pub times: Vec<f64>,
    pub sim: SimResult,
}

/// The simulation of `trace`, each step taking `step_time` of its batch.
pub fn plan(
    cfg: &SimConfig,
    trace: &[TraceRequest],
    mut step_time: impl FnMut(&Batch) -> f64,
) -> Plan {
    let mut shapes = Vec::new();
    let mut times = Vec::new();
    let sim = simulate_with(cfg, trace, |b| {
        shapes.push((b.step.num_tokens(), b.step.num_seqs()));
        let t = step_time(b);
        times.push(t);
        t
    })
    .unwrap();
    assert_eq!(sim.steps as usize, shapes.len());
    Plan { shapes, times, sim }
}

/// The engine's run against the simulator's plan, exactly: the same steps one for one, the same
/// preemptions and prefix-cache hits, and each request's first token after the same number of
/// steps. Returns the failures, and whether the steps matched (nothing that compares step
/// times is meaningful otherwise).
pub fn check_structure(p: &Phase, run: &Replay, planned: &Plan) -> (Vec<String>, bool) {
    let mut failures = Vec::new();
    let engine_steps: Vec<Shape> = run.steps.iter().map(|s| (s.tokens, s.seqs)).collect();
    let waves = |steps: &[Shape]| steps.iter().filter(|s| s.0 > s.1).count();
    eprintln!(
        "{:<22} steps: engine {}, sim {};  with a prefill chunk: engine {}, sim {};  \
         preemptions: engine {}, sim {};  prefix-cache hits: engine {}, sim {}",
        p.name,
        engine_steps.len(),
        planned.shapes.len(),
        waves(&engine_steps),
        waves(&planned.shapes),
        run.preemptions,
        planned.sim.preemptions,
        run.prefix_hits,
        planned.sim.prefix_hits,
    );
    if let Some(k) = (0..engine_steps.len().max(planned.shapes.len()))
        .find(|&k| engine_steps.get(k) != planned.shapes.get(k))
    {
        failures.push(format!(
            "{}: step {k} (tokens, seqs): engine {:?}, sim {:?} ({} engine steps, {} simulated)",
            p.name,
            engine_steps.get(k),
            planned.shapes.get(k),
            engine_steps.len(),
            planned.shapes.len()
        ));
        return (failures, false);
    }
    for (what, e, s) in [
        ("preemptions", run.preemptions, planned.sim.preemptions),
        (
            "prefix-cache hits",
            run.prefix_hits,
            planned.sim.prefix_hits,
        ),
    ] {
        if e != s {
            failures.push(format!("{}: {what}: engine {e}, sim {s}", p.name));
        }
    }

    // Time to first token in steps: the number of steps that had ended when the request's first
    // token came. The simulator stamps the token at a step's end; the engine's reader thread
    // sees it some time after that step's recorded end, normally before the next one ends,
    // later only if that thread was starved for a whole step. So the engine's count may exceed
    // the simulator's, never fall short, and for most requests equals it.
    let mut sim_ends = Vec::with_capacity(planned.times.len());
    planned.times.iter().fold(0.0, |t, d| {
        sim_ends.push(t + d);
        t + d
    });
    let mut late = Vec::new();
    for (i, (r, o)) in planned.sim.requests.iter().zip(&run.obs).enumerate() {
        let s = sim_ends.partition_point(|&e| e <= r.first_token * (1.0 + 1e-12));
        let e = run.steps.partition_point(|st| st.end < o.first_token);
        late.push((i, e as i64 - s as i64));
    }
    let exact = late.iter().filter(|l| l.1 == 0).count();
    eprintln!(
        "  TTFT in steps: equal for {exact} of {} requests, engine later by {:?} for the rest",
        late.len(),
        late.iter()
            .filter(|l| l.1 != 0)
            .map(|l| l.1)
            .collect::<Vec<_>>()
    );
    if let Some((i, d)) = late.iter().find(|l| l.1 < 0) {
        failures.push(format!(
            "{}: request {i} got its first token {} steps before the simulator says",
            p.name, -d
        ));
    }
    if 2 * exact <= late.len() {
        failures.push(format!(
            "{}: time to first token in steps agrees for only {exact} of {} requests",
            p.name,
            late.len()
        ));
    }
    (failures, true)
}

/// Throughput (completed requests per second, first arrival to last finish), and the TTFT and
/// TPOT distributions: the simulator's report defines them the same way.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub throughput: f64,
    pub ttft: Dist,
    pub tpot: Dist,
}

impl Figures {
    pub fn of_engine(obs: &[Observed], trace: &[TraceRequest]) -> Figures {
        let end = obs.iter().map(|o| o.finished).fold(0.0, f64::max);
        let tpot = obs
            .iter()
            .zip(trace)
            .filter(|(_, r)| r.output_len > 1)
            .map(|(o, r)| (o.finished - o.first_token) / (r.output_len - 1) as f64);
        Figures {
            throughput: obs.len() as f64 / (end - obs[0].submitted),
            ttft: Dist::of(obs.iter().map(|o| o.first_token - o.submitted).collect()),
            tpot: Dist::of(tpot.collect()),
        }
    }

    pub fn of_sim(s: &Summary) -> Figures {
        Figures {
            throughput: s.request_throughput,
            ttft: s.ttft,
            tpot: s.tpot,
        }
    }

    /// Each figure of `self` (the simulator's) against `engine`'s, in percent.
    pub fn errors(&self, engine: &Figures) -> [(&'static str, f64); 5] {
        [
            ("throughput", pct(self.throughput, engine.throughput)),
            ("p50 TTFT", pct(self.ttft.p50, engine.ttft.p50)),
            ("p99 TTFT", pct(self.ttft.p99, engine.ttft.p99)),
            ("p50 TPOT", pct(self.tpot.p50, engine.tpot.p50)),
            ("p99 TPOT", pct(self.tpot.p99, engine.tpot.p99)),
        ]
    }
}

/// The simulator rerun on one clock with the engine: each step takes exactly the time the engine
/// measured for it, and the burst arrives when the engine received it (relative to the start of
/// its first step). The plan must come out as before.
pub fn one_clock(p: &Phase, cfg: &SimConfig, run: &Replay, planned: &Plan) -> Summary {
    let measured: Vec<f64> = run.steps.iter().map(|s| s.end - s.start).collect();
    let zero = run.steps[0].start;
    let arrived: Vec<TraceRequest> = p
        .trace
        .iter()
        .zip(&run.obs)
        .enumerate()
        .map(|(i, (r, o))| TraceRequest {
            arrival: if i == 0 {
                0.0
            } else {
                (o.submitted - zero).max(EPSILON)
            },
            ..r.clone()
        })
        .collect();
    let mut k = 0;
    let clocked = plan(cfg, &arrived, |_| {
        k += 1;
        measured.get(k - 1).copied().unwrap_or(0.0)
    });
    assert_eq!(
        clocked.shapes, planned.shapes,
        "{}: the arrivals as replayed changed the plan",
        p.name
    );
    Summary::of(&clocked.sim, SLO)
}

pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b
}

pub fn pct(s: f64, e: f64) -> f64 {
    (s / e - 1.0) * 100.0
}

pub fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        percentile(&v, 50.0)
    }
}
