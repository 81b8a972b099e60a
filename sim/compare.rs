//! Sweeping policies over loads: one simulation per (policy, rate), run in parallel, with the
//! same requests at every point (only the arrival spacing changes with the rate) so that the
//! curves differ by policy and load alone.

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

use super::cost_model::CostModel;
use super::report::{Slo, Summary};
use super::simulator::{simulate, SimConfig};
use super::workload::TraceRequest;

#[derive(Debug, Clone)]
pub struct SweepPoint {
    pub policy: String,
    pub rate: f64,
    pub summary: Summary,
}

/// Runs every policy at every rate; `workload(rate)` gives the trace for a rate.
pub fn sweep<W>(
    cfg: &SimConfig,
    cost: &CostModel,
    policies: &[String],
    rates: &[f64],
    slo: Slo,
    workload: W,
) -> Result<Vec<SweepPoint>>
where
    W: Fn(f64) -> Result<Vec<TraceRequest>> + Sync,
{
    let traces: Vec<Vec<TraceRequest>> =
        rates.iter().map(|&r| workload(r)).collect::<Result<_>>()?;
    let jobs: Vec<(&String, usize)> = policies
        .iter()
        .flat_map(|p| (0..rates.len()).map(move |i| (p, i)))
        .collect();
    jobs.par_iter()
        .map(|&(policy, i)| {
            let cfg = SimConfig {
                policy: policy.clone(),
                ..cfg.clone()
            };
            let result = simulate(&cfg, cost, &traces[i])
                .with_context(|| format!("policy {policy} at rate {}", rates[i]))?;
            Ok(SweepPoint {
                policy: policy.clone(),
                rate: rates[i],
                summary: Summary::of(&result, slo),
            })
        })
        .collect()
}

#[derive(Serialize)]
struct Row<'a> {
    policy: &'a str,
    rate: f64,
    request_throughput: f64,
    output_throughput: f64,
    goodput: f64,
    slo_attainment: f64,
    ttft_slo_attainment: Option<f64>,
    ttft_mean: f64,
    ttft_p50: f64,
    ttft_p90: f64,
    ttft_p99: f64,
    tpot_mean: f64,
    tpot_p50: f64,
    tpot_p90: f64,
    tpot_p99: f64,
    e2e_mean: f64,
    e2e_p50: f64,
    e2e_p90: f64,
    e2e_p99: f64,
    queue_p50: f64,
    queue_p99: f64,
    preemptions: u64,
    prefix_cache_hits: u64,
}

/// One row per (policy, rate), latencies in seconds.
pub fn write_csv(path: &Path, points: &[SweepPoint]) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    for p in points {
        let s = &p.summary;
        w.serialize(Row {
            policy: &p.policy,
            rate: p.rate,
            request_throughput: s.request_throughput,
            output_throughput: s.output_throughput,
            goodput: s.goodput,
            slo_attainment: s.slo_attainment,
            ttft_slo_attainment: s.ttft_slo_attainment,
            ttft_mean: s.ttft.mean,
            ttft_p50: s.ttft.p50,
            ttft_p90: s.ttft.p90,
            ttft_p99: s.ttft.p99,
            tpot_mean: s.tpot.mean,
            tpot_p50: s.tpot.p50,
            tpot_p90: s.tpot.p90,
            tpot_p99: s.tpot.p99,
            e2e_mean: s.e2e.mean,
            e2e_p50: s.e2e.p50,
            e2e_p90: s.e2e.p90,
            e2e_p99: s.e2e.p99,
            queue_p50: s.queue_time.p50,
            queue_p99: s.queue_time.p99,
            preemptions: s.preemptions,
            prefix_cache_hits: s.prefix_cache_hits,
        })?;
    }
    w.flush()?;
    Ok(())
}
