//! What a simulation run needs to be reproduced, written beside its results: the command line,
//! and, spelled out, the policies and scheduler knobs, the workload, the seeds, the cost model
//! and the tandem version that ran it.

use serde::Serialize;

use super::cost_model::CostModel;
use super::report::Slo;
use super::workload::Synthetic;

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// `tandem` version (and `git describe` of the build, when it was built from a checkout).
    pub tandem_version: String,
    /// The arguments after `tandem`: running `tandem` with them again reproduces the run.
    pub command: Vec<String>,
    pub policies: Vec<String>,
    pub scheduler: SchedulerKnobs,
    pub workload: Workload,
    /// Arrival rates swept (requests/s); empty for a single run at the workload's own rate.
    pub rates: Vec<f64>,
    /// Workload seeds: each point of a sweep runs once per seed.
    pub seeds: Vec<u64>,
    pub slo: Slo,
    pub cost_model: CostModelUsed,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulerKnobs {
    pub max_num_seqs: usize,
    pub max_batch_tokens: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub prefix_caching: bool,
    /// Aging: steps after which a request is served first (`None`: aging off).
    pub max_wait_steps: Option<u64>,
    pub overlap: bool,
    pub max_queue: usize,
    /// σ of shortest-job-first's output-length prediction error.
    pub length_error: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    Trace {
        path: String,
        format: String,
        /// The replayed window, seconds after the trace's first arrival.
        start: f64,
        duration: Option<f64>,
        /// With several seeds, each seed replays the trace with its arrival gaps shuffled.
        gaps_shuffled_per_seed: bool,
    },
    /// The generator's parameters (its `rate` and `seed` are replaced by the sweep's).
    Synthetic(Synthetic),
}

#[derive(Debug, Clone, Serialize)]
pub struct CostModelUsed {
    /// The file given with --cost-model; `None` for the shipped CPU model.
    pub path: Option<String>,
    pub model: CostModel,
}

/// `tandem`'s version, with the checkout's `git describe` when the build saw one.
pub fn version() -> String {
    match option_env!("TANDEM_GIT_DESCRIBE") {
        Some(d) if !d.is_empty() => format!("{} ({d})", env!("CARGO_PKG_VERSION")),
        _ => env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The record as `report.md`'s parameter list.
pub fn params(r: &RunRecord) -> Vec<(String, String)> {
    let k = &r.scheduler;
    let workload = match &r.workload {
        Workload::Trace {
            path,
            format,
            start,
            duration,
            gaps_shuffled_per_seed,
        } => format!(
            "trace `{path}` ({format}), from {start} s{}{}",
            duration.map_or(String::new(), |d| format!(" for {d} s")),
            if *gaps_shuffled_per_seed {
                "; each seed shuffles its arrival gaps"
            } else {
                ""
            }
        ),
        Workload::Synthetic(s) => format!(
            "synthetic: {} requests, prompt median {} (σ {}, max {}), output median {} (σ {}, max {}), \
             {} prefix groups, {} priority levels, {} clients",
            s.num_requests,
            s.prompt_median,
            s.prompt_sigma,
            s.max_prompt,
            s.output_median,
            s.output_sigma,
            s.max_output,
            s.prefix_groups,
            s.priority_levels,
            s.clients
        ),
    };
    let list = |xs: &[String]| xs.join(", ");
    vec![
        ("tandem".into(), r.tandem_version.clone()),
        ("command".into(), format!("`tandem {}`", r.command.join(" "))),
        ("policies".into(), list(&r.policies)),
        ("workload".into(), workload),
        (
            "rates (requests/s)".into(),
            list(&r.rates.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
        ),
        (
            "seeds".into(),
            list(&r.seeds.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
        ),
        (
            "scheduler".into(),
            format!(
                "max_num_seqs {}, max_batch_tokens {}, {} KV blocks of {} tokens, prefix caching {}, \
                 aging {}, overlap {}, max_queue {}, length error σ {}",
                k.max_num_seqs,
                k.max_batch_tokens,
                k.num_blocks,
                k.block_size,
                if k.prefix_caching { "on" } else { "off" },
                k.max_wait_steps
                    .map_or("off".to_string(), |s| format!("after {s} steps")),
                if k.overlap { "on" } else { "off" },
                k.max_queue,
                k.length_error
            ),
        ),
        (
            "SLO".into(),
            format!("TTFT ≤ {} s and TPOT ≤ {} s", r.slo.ttft_s, r.slo.tpot_s),
        ),
        (
            "cost model".into(),
            r.cost_model
                .path
                .clone()
                .unwrap_or_else(|| "the shipped CPU model".into()),
        ),
        (
            "reproduce".into(),
            "`compare.json` holds all of the above, with the cost model's parameters".into(),
        ),
    ]
}
