//! `tandem sim`: replay a synthetic workload or a trace through the real scheduler with
//! a calibrated step-time model; `--compare` sweeps policies over loads and draws charts.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

use crate::cli::engine_args::{AgingArgs, SloArgs};
use crate::cli::trace_args::TraceArgs;
use crate::engine::scheduler::SchedulerConfig;
use crate::sim::compare::{sweep, write_csv, SweepPoint};
use crate::sim::report::{write_requests_csv, Slo, Summary};
use crate::sim::reseed::shuffle_gaps;
use crate::sim::run_record::RunRecord;
use crate::sim::workload::{mean_rate, write_trace, Synthetic, TraceRequest};
use crate::sim::{
    cdf_chart, chart, markdown_report, simulate, timeline_chart, CostModel, SimConfig,
};

#[derive(clap::Args)]
pub struct SimArgs {
    /// Scheduling policy: fcfs, prefill-first, decode-first, shortest-prompt-first, priority,
    /// shortest-job-first, vtc, deadline.
    #[arg(long, default_value = "fcfs")]
    pub policy: String,
    #[command(flatten)]
    pub aging: AgingArgs,
    /// The TTFT SLO the scheduler sees (and the report's TTFT SLO attainment); --goodput-ttft is
    /// only the goodput target.
    #[command(flatten)]
    pub slo: SloArgs,
    /// shortest-job-first's length predictor: σ of its lognormal error on each request's true
    /// output length (0 = an oracle; 1 = off by a factor of e one time in three).
    #[arg(long, default_value_t = 0.0)]
    pub length_error: f64,
    /// Sweep these policies (comma-separated) over --rates and draw latency-vs-load charts.
    #[arg(long, value_delimiter = ',', requires = "rates")]
    pub compare: Vec<String>,
    /// Arrival rates (requests/s, comma-separated) for --compare. With --trace, each rate
    /// rescales the trace's arrival times to that mean rate.
    #[arg(long, value_delimiter = ',', requires = "compare")]
    pub rates: Vec<f64>,
    /// --compare: run each (policy, rate) point under this many workload seeds (--seed,
    /// --seed + 1, ...) and chart the mean with a min–max band. A trace's arrival gaps are
    /// shuffled per seed when there are several.
    #[arg(long, default_value_t = 1, requires = "compare")]
    pub seeds: usize,
    /// --compare: the rate (one of --rates) whose TTFT/TPOT CDFs and per-step timelines are
    /// drawn; the highest by default.
    #[arg(long, requires = "compare")]
    pub cdf_rate: Option<f64>,
    /// A single run: also draw its per-step timeline (batch composition, KV-cache use) here.
    #[arg(long, conflicts_with = "compare")]
    pub timeline: Option<PathBuf>,
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Also write the workload as a JSONL trace.
    #[arg(long)]
    pub save_trace: Option<PathBuf>,
    /// A cost model from `tandem calibrate`; the shipped one for the CPU default model if absent.
    #[arg(long)]
    pub cost_model: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// KV-cache blocks.
    #[arg(long, alias = "num-kv-blocks", default_value_t = 1024)]
    pub num_blocks: usize,
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Plan each step only after the previous one returns (the engine's --no-overlap).
    #[arg(long)]
    pub no_overlap: bool,
    /// Most requests waiting for admission; more are refused, as by the engine (0 = unbounded).
    #[arg(long, default_value_t = 1024)]
    pub max_queue: usize,
    /// Synthetic workload: number of requests.
    #[arg(long, default_value_t = 1000)]
    pub num_requests: usize,
    /// Synthetic workload: mean arrivals per second (Poisson); `inf` = all at once. The default
    /// keeps the CPU default model (shipped cost model) about half busy.
    #[arg(long, default_value_t = 0.25)]
    pub rate: f64,
    /// Synthetic workload: median prompt length (lognormal).
    #[arg(long, default_value_t = 128.0)]
    pub prompt_len: f64,
    #[arg(long, default_value_t = 0.8)]
    pub prompt_sigma: f64,
    #[arg(long, default_value_t = 1024)]
    pub max_prompt_len: usize,
    /// Synthetic workload: median output length (lognormal).
    #[arg(long, default_value_t = 64.0)]
    pub output_len: f64,
    #[arg(long, default_value_t = 0.8)]
    pub output_sigma: f64,
    #[arg(long, default_value_t = 512)]
    pub max_output_len: usize,
    /// Synthetic workload: groups of requests sharing a prompt prefix (0 = none).
    #[arg(long, default_value_t = 0)]
    pub prefix_groups: u32,
    /// Synthetic workload: tokens of the shared prefix (added before the request's own prompt).
    #[arg(long, default_value_t = 256)]
    pub prefix_len: usize,
    /// Synthetic workload: fraction of requests in a prefix group.
    #[arg(long, default_value_t = 1.0)]
    pub prefix_share: f64,
    /// Synthetic workload: priorities drawn from 0..N (for the priority policy).
    #[arg(long, default_value_t = 1)]
    pub priority_levels: u32,
    /// Synthetic workload: clients sending the requests (for the vtc policy; 0 = none named),
    /// client k sending a share proportional to 1 / (k + 1).
    #[arg(long, default_value_t = 0)]
    pub clients: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Goodput target: time to first token, seconds (a request counts toward goodput when it
    /// meets both targets; the scheduler never sees them: that is --ttft-slo-ms).
    #[arg(long, alias = "slo-ttft", default_value_t = 5.0)]
    pub goodput_ttft: f64,
    /// Goodput target: time per output token, seconds.
    #[arg(long, alias = "slo-tpot", default_value_t = 0.5)]
    pub goodput_tpot: f64,
    /// Where to write the CSV, JSON and SVG files.
    #[arg(long, default_value = "sim-out")]
    pub out: PathBuf,
}

impl SimArgs {
    fn config(&self, policy: &str) -> SimConfig {
        SimConfig {
            sched: SchedulerConfig {
                max_num_seqs: self.max_num_seqs,
                max_batch_tokens: self.max_batch_tokens,
                num_blocks: self.num_blocks,
                block_size: self.block_size,
                enable_prefix_caching: !self.no_prefix_caching,
                max_wait_steps: self.aging.max_wait_steps(),
            },
            policy: policy.into(),
            overlap: !self.no_overlap,
            max_queue: self.max_queue,
            length_error: self.length_error,
            length_error_seed: self.seed,
            ttft_slo: self.slo.ttft_slo_ms,
            slo_miss: self.slo.slo_miss,
            ..Default::default()
        }
    }

    pub(crate) fn synthetic(&self, rate: f64) -> Synthetic {
        Synthetic {
            num_requests: self.num_requests,
            rate,
            prompt_median: self.prompt_len,
            prompt_sigma: self.prompt_sigma,
            max_prompt: self.max_prompt_len,
            output_median: self.output_len,
            output_sigma: self.output_sigma,
            max_output: self.max_output_len,
            prefix_groups: self.prefix_groups,
            prefix_len: self.prefix_len,
            prefix_share: self.prefix_share,
            priority_levels: self.priority_levels,
            clients: self.clients,
            seed: self.seed,
        }
    }
}

pub fn run(args: SimArgs) -> Result<()> {
    let cost = match &args.cost_model {
        Some(p) => CostModel::load(p)?,
        None => CostModel::default_cpu(),
    };
    let slo = Slo {
        ttft_s: args.goodput_ttft,
        tpot_s: args.goodput_tpot,
    };
    let trace = args.trace.load()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.compare.is_empty() {
        run_one(&args, &cost, slo, trace)
    } else {
        run_compare(&args, &cost, slo, trace)
    }
}

fn run_one(
    args: &SimArgs,
    cost: &CostModel,
    slo: Slo,
    trace: Option<Vec<TraceRequest>>,
) -> Result<()> {
    let workload = match trace {
        Some(t) => t,
        None => args.synthetic(args.rate).generate()?,
    };
    if let Some(p) = &args.save_trace {
        write_trace(p, &workload)?;
    }
    let started = Instant::now();
    let cfg = SimConfig {
        record_steps: args.timeline.is_some(),
        ..args.config(&args.policy)
    };
    let result = simulate(&cfg, cost, &workload)?;
    let wall = started.elapsed().as_secs_f64();
    let summary = Summary::of(&result, slo);
    print!("{}", summary.render());
    let csv = args.out.join("requests.csv");
    let json = args.out.join("summary.json");
    write_requests_csv(&csv, &result)?;
    let record = args.record(cost, slo, std::slice::from_ref(&args.policy), &[args.seed]);
    write_json(
        &json,
        &SummaryWithRun {
            summary: &summary,
            run: &record,
        },
    )?;
    if let Some(path) = &args.timeline {
        let title = format!(
            "{} steps of {}: {}",
            result.steps,
            args.policy,
            source(args)
        );
        timeline_chart::draw(path, &result.timeline, args.num_blocks, &title)?;
        println!("wrote {}", path.display());
    }
    println!(
        "simulated {} requests in {wall:.2} s; wrote {} and {}",
        workload.len(),
        csv.display(),
        json.display()
    );
    Ok(())
}

fn run_compare(
    args: &SimArgs,
    cost: &CostModel,
    slo: Slo,
    trace: Option<Vec<TraceRequest>>,
) -> Result<()> {
    anyhow::ensure!(
        args.rates.iter().all(|r| *r > 0.0),
        "--rates must be positive"
    );
    let trace_rate = trace.as_deref().map(mean_rate);
    if let Some(r) = trace_rate {
        anyhow::ensure!(
            r.is_finite(),
            "the trace's requests all arrive at once, so it cannot be rescaled to --rates"
        );
    }
    anyhow::ensure!(args.seeds >= 1, "--seeds must be at least 1");
    let seeds: Vec<u64> = (0..args.seeds as u64).map(|k| args.seed + k).collect();
    let highest = args.rates.iter().copied().fold(f64::NAN, f64::max);
    let cdf_rate = args.cdf_rate.unwrap_or(highest);
    anyhow::ensure!(
        args.rates.contains(&cdf_rate),
        "--cdf-rate {cdf_rate} is not one of --rates"
    );
    let workload = |rate: f64, seed: u64| -> Result<Vec<TraceRequest>> {
        match (&trace, trace_rate) {
            (Some(t), Some(tr)) => {
                let t = if seeds.len() > 1 {
                    shuffle_gaps(t, seed)
                } else {
                    t.clone()
                };
                Ok(t.into_iter()
                    .map(|r| TraceRequest {
                        arrival: r.arrival * tr / rate,
                        ..r
                    })
                    .collect())
            }
            _ => Synthetic {
                seed,
                ..args.synthetic(rate)
            }
            .generate(),
        }
    };
    let started = Instant::now();
    let points = sweep(
        &args.config("fcfs"),
        cost,
        &args.compare,
        &args.rates,
        &seeds,
        slo,
        Some(cdf_rate),
        workload,
    )?;
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{:<22} {:>7} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "policy",
        "rate",
        "req/s",
        "goodput",
        "TTFT SLO",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "E2E p50",
        "preempt"
    );
    for p in &points {
        let s = &mean_summary(p);
        let attained = s
            .ttft_slo_attainment
            .map_or("-".into(), |a| format!("{:.1}%", a * 100.0));
        println!(
            "{:<22} {:>7.2} {:>9.2} {:>9.2} {:>9} {:>9.0}ms {:>9.0}ms {:>9.0}ms {:>9.0}ms {:>8}",
            p.policy,
            p.rate,
            s.request_throughput,
            s.goodput,
            attained,
            s.ttft.p50 * 1e3,
            s.ttft.p99 * 1e3,
            s.tpot.p50 * 1e3,
            s.e2e.p50 * 1e3,
            s.preemptions
        );
    }
    let source = source(args);
    write_csv(&args.out.join("compare.csv"), &points)?;
    let mut charts = vec![("latency vs load".to_string(), "compare.svg".to_string())];
    chart::draw(
        &args.out.join("compare.svg"),
        &points,
        &format!("latency vs load: {source}"),
    )?;
    charts.push((
        format!("TTFT and TPOT CDFs at {cdf_rate} requests/s"),
        "cdf.svg".into(),
    ));
    cdf_chart::draw(
        &args.out.join("cdf.svg"),
        &points,
        cdf_rate,
        &format!("latency distributions: {source}"),
    )?;
    for p in points.iter().filter(|p| p.rate == cdf_rate) {
        let file = format!("timeline-{}.svg", p.policy);
        let title = format!(
            "{} at {cdf_rate} requests/s, seed {}: {source}",
            p.policy, seeds[0]
        );
        timeline_chart::draw(&args.out.join(&file), &p.timeline, args.num_blocks, &title)?;
        charts.push((
            format!("{}: per-step timeline at {cdf_rate} requests/s", p.policy),
            file,
        ));
    }
    let record = args.record(cost, slo, &args.compare, &seeds);
    write_json(
        &args.out.join("compare.json"),
        &CompareJson {
            run: &record,
            points: points
                .iter()
                .map(|p| PointJson {
                    policy: &p.policy,
                    rate: p.rate,
                    runs: &p.runs,
                })
                .collect(),
        },
    )?;
    let report = args.out.join("report.md");
    let md = markdown_report::render(
        &format!("tandem sim: {source}"),
        &crate::sim::run_record::params(&record),
        &charts,
        &points,
    );
    std::fs::write(&report, md).with_context(|| format!("writing {}", report.display()))?;
    println!(
        "{} simulations in {wall:.2} s; wrote {}: report.md, compare.csv, compare.json and {} charts",
        points.len() * seeds.len(),
        args.out.display(),
        charts.len()
    );
    Ok(())
}

fn source(args: &SimArgs) -> String {
    match &args.trace.trace {
        Some(t) => format!("trace {}", t.display()),
        None => format!("{} synthetic requests", args.num_requests),
    }
}

/// A point's summary for the console table: its single run, or the mean over its seeds of
/// the columns printed.
fn mean_summary(p: &SweepPoint) -> Summary {
    let mut s = p.runs[0].clone();
    s.request_throughput = p.spread(|s| s.request_throughput).mean;
    s.goodput = p.spread(|s| s.goodput).mean;
    s.ttft.p50 = p.spread(|s| s.ttft.p50).mean;
    s.ttft.p99 = p.spread(|s| s.ttft.p99).mean;
    s.tpot.p50 = p.spread(|s| s.tpot.p50).mean;
    s.e2e.p50 = p.spread(|s| s.e2e.p50).mean;
    s.preemptions = p.spread(|s| s.preemptions as f64).mean.round() as u64;
    s.ttft_slo_attainment = s
        .ttft_slo_attainment
        .map(|_| p.spread(|s| s.ttft_slo_attainment.unwrap_or(f64::NAN)).mean);
    s
}

#[derive(serde::Serialize)]
struct SummaryWithRun<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    run: &'a RunRecord,
}

#[derive(serde::Serialize)]
struct CompareJson<'a> {
    run: &'a RunRecord,
    points: Vec<PointJson<'a>>,
}

#[derive(serde::Serialize)]
struct PointJson<'a> {
    policy: &'a str,
    rate: f64,
    /// One summary per seed, in `run.seeds` order.
    runs: &'a [Summary],
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
