//! `tandem sim`: replay a synthetic workload or a trace through the real scheduler with
//! a calibrated step-time model; `--compare` sweeps policies over loads and draws charts.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

use crate::cli::engine_args::{AgingArgs, SloArgs};
use crate::cli::trace_args::TraceArgs;
use crate::engine::scheduler::SchedulerConfig;
use crate::sim::compare::{sweep, write_csv};
use crate::sim::report::{write_requests_csv, Slo, Summary};
use crate::sim::workload::{mean_rate, write_trace, Synthetic, TraceRequest};
use crate::sim::{chart, simulate, CostModel, SimConfig};

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

    fn synthetic(&self, rate: f64) -> Synthetic {
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
    let result = simulate(&args.config(&args.policy), cost, &workload)?;
    let wall = started.elapsed().as_secs_f64();
    let summary = Summary::of(&result, slo);
    print!("{}", summary.render());
    let csv = args.out.join("requests.csv");
    let json = args.out.join("summary.json");
    write_requests_csv(&csv, &result)?;
    std::fs::write(&json, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
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
    let workload = |rate: f64| -> Result<Vec<TraceRequest>> {
        match (&trace, trace_rate) {
            (Some(t), Some(tr)) => Ok(t
                .iter()
                .map(|r| TraceRequest {
                    arrival: r.arrival * tr / rate,
                    ..r.clone()
                })
                .collect()),
            _ => args.synthetic(rate).generate(),
        }
    };
    let started = Instant::now();
    let points = sweep(
        &args.config("fcfs"),
        cost,
        &args.compare,
        &args.rates,
        slo,
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
        let s = &p.summary;
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
    let csv = args.out.join("compare.csv");
    let svg = args.out.join("compare.svg");
    write_csv(&csv, &points)?;
    let source = match &args.trace.trace {
        Some(t) => format!("trace {}", t.display()),
        None => format!("{} synthetic requests", args.num_requests),
    };
    chart::draw(&svg, &points, &format!("latency vs load: {source}"))?;
    println!(
        "{} simulations in {wall:.2} s; wrote {} and {}",
        points.len(),
        csv.display(),
        svg.display()
    );
    Ok(())
}
