//! Sweeping policies over loads: one simulation per (policy, rate, workload seed), run in
//! parallel, with the same requests at every rate for a seed (only the arrival spacing changes
//! with the rate) so that the curves differ by policy and load alone, and the seeds give each
//! point its spread.

use anyhow::{ensure, Context, Result};
use rayon::prelude::*;
use std::path::Path;

use super::cost_model::CostModel;
use super::report::{Slo, Summary};
use super::simulator::{simulate, SimConfig};
use super::timeline::StepRecord;
use super::workload::TraceRequest;

#[derive(Debug, Clone)]
pub struct SweepPoint {
    pub policy: String,
    pub rate: f64,
    /// One summary per workload seed, in the sweep's seed order.
    pub runs: Vec<Summary>,
    /// TTFT and TPOT (seconds) of every completed request, pooled over the seeds, sorted: the
    /// latency distributions the CDF charts draw.
    pub ttft: Vec<f64>,
    pub tpot: Vec<f64>,
    /// The first seed's per-step record at the sweep's `record_rate`, else empty.
    pub timeline: Vec<StepRecord>,
}

/// A metric's mean and range over a point's seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl SweepPoint {
    pub fn spread(&self, metric: impl Fn(&Summary) -> f64) -> Spread {
        // A metric a run does not have (NaN) is left out; with none, all three are NaN.
        let xs: Vec<f64> = self
            .runs
            .iter()
            .map(metric)
            .filter(|x| !x.is_nan())
            .collect();
        if xs.is_empty() {
            return Spread {
                mean: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        Spread {
            mean: xs.iter().sum::<f64>() / xs.len() as f64,
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Runs every policy at every rate under every seed; `workload(rate, seed)` gives the trace.
/// At `record_rate` the first seed's run keeps its per-step timeline.
#[allow(clippy::too_many_arguments)]
pub fn sweep<W>(
    cfg: &SimConfig,
    cost: &CostModel,
    policies: &[String],
    rates: &[f64],
    seeds: &[u64],
    slo: Slo,
    record_rate: Option<f64>,
    workload: W,
) -> Result<Vec<SweepPoint>>
where
    W: Fn(f64, u64) -> Result<Vec<TraceRequest>> + Sync,
{
    ensure!(!seeds.is_empty(), "a sweep needs at least one seed");
    let traces: Vec<Vec<Vec<TraceRequest>>> = rates
        .iter()
        .map(|&r| seeds.iter().map(|&s| workload(r, s)).collect())
        .collect::<Result<_>>()?;
    let jobs: Vec<(&String, usize, usize)> = policies
        .iter()
        .flat_map(|p| (0..rates.len()).flat_map(move |i| (0..seeds.len()).map(move |k| (p, i, k))))
        .collect();
    let results = jobs
        .par_iter()
        .map(|&(policy, i, k)| {
            let cfg = SimConfig {
                policy: policy.clone(),
                length_error_seed: seeds[k],
                record_steps: k == 0 && record_rate == Some(rates[i]),
                ..cfg.clone()
            };
            simulate(&cfg, cost, &traces[i][k]).with_context(|| {
                format!(
                    "policy {policy} at rate {} with seed {}",
                    rates[i], seeds[k]
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Jobs are in (policy, rate, seed) order, so each point's runs are consecutive.
    Ok(jobs
        .chunks(seeds.len())
        .zip(results.chunks(seeds.len()))
        .map(|(job, runs)| {
            let (policy, i, _) = job[0];
            let done = || {
                runs.iter()
                    .flat_map(|r| &r.requests)
                    .filter(|q| q.rejected.is_none())
            };
            let mut ttft: Vec<f64> = done().map(|q| q.ttft()).collect();
            let mut tpot: Vec<f64> = done().filter_map(|q| q.tpot()).collect();
            ttft.sort_by(f64::total_cmp);
            tpot.sort_by(f64::total_cmp);
            SweepPoint {
                policy: policy.clone(),
                rate: rates[i],
                runs: runs.iter().map(|r| Summary::of(r, slo)).collect(),
                ttft,
                tpot,
                timeline: runs[0].timeline.clone(),
            }
        })
        .collect())
}

type Column = (&'static str, fn(&Summary) -> f64);

/// The CSV's metrics, each written as its mean over the seeds and its min and max.
const COLUMNS: [Column; 21] = [
    ("request_throughput", |s| s.request_throughput),
    ("output_throughput", |s| s.output_throughput),
    ("goodput", |s| s.goodput),
    ("slo_attainment", |s| s.slo_attainment),
    // NaN where no request had a TTFT SLO.
    ("ttft_slo_attainment", |s| {
        s.ttft_slo_attainment.unwrap_or(f64::NAN)
    }),
    ("ttft_mean", |s| s.ttft.mean),
    ("ttft_p50", |s| s.ttft.p50),
    ("ttft_p90", |s| s.ttft.p90),
    ("ttft_p99", |s| s.ttft.p99),
    ("tpot_mean", |s| s.tpot.mean),
    ("tpot_p50", |s| s.tpot.p50),
    ("tpot_p90", |s| s.tpot.p90),
    ("tpot_p99", |s| s.tpot.p99),
    ("e2e_mean", |s| s.e2e.mean),
    ("e2e_p50", |s| s.e2e.p50),
    ("e2e_p90", |s| s.e2e.p90),
    ("e2e_p99", |s| s.e2e.p99),
    ("queue_p50", |s| s.queue_time.p50),
    ("queue_p99", |s| s.queue_time.p99),
    ("preemptions", |s| s.preemptions as f64),
    ("prefix_cache_hits", |s| s.prefix_cache_hits as f64),
];

/// One row per (policy, rate), latencies in seconds: each metric's mean over the seeds, then
/// its `_min` and `_max`.
pub fn write_csv(path: &Path, points: &[SweepPoint]) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    let mut header = vec!["policy".to_string(), "rate".into(), "seeds".into()];
    for (name, _) in COLUMNS {
        header.extend([
            name.to_string(),
            format!("{name}_min"),
            format!("{name}_max"),
        ]);
    }
    w.write_record(&header)?;
    for p in points {
        let mut row = vec![
            p.policy.clone(),
            p.rate.to_string(),
            p.runs.len().to_string(),
        ];
        for (_, metric) in COLUMNS {
            let s = p.spread(metric);
            row.extend([s.mean, s.min, s.max].map(|v| v.to_string()));
        }
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Synthetic;

    #[test]
    fn each_point_runs_every_seed_and_its_spread_brackets_the_mean() {
        let seeds = [1, 2, 3];
        let points = sweep(
            &SimConfig::default(),
            &CostModel::default_cpu(),
            &["fcfs".to_string()],
            &[2.0],
            &seeds,
            Slo {
                ttft_s: 1.0,
                tpot_s: 0.1,
            },
            None,
            |rate, seed| {
                Synthetic {
                    num_requests: 40,
                    rate,
                    seed,
                    ..Default::default()
                }
                .generate()
            },
        )
        .unwrap();
        assert_eq!(points.len(), 1);
        let p = &points[0];
        assert_eq!(p.runs.len(), seeds.len());
        assert!(p.timeline.is_empty(), "no timeline was asked for");
        let ttft = p.spread(|s| s.ttft.p50);
        assert!(ttft.min <= ttft.mean && ttft.mean <= ttft.max, "{ttft:?}");
        assert!(
            ttft.min < ttft.max,
            "different seeds must give different runs: {ttft:?}"
        );
        let n: usize = p.runs.iter().map(|s| s.completed).sum();
        assert_eq!(p.ttft.len(), n, "the CDF pools every seed's requests");
        assert!(p.ttft.windows(2).all(|w| w[0] <= w[1]));
    }
}
