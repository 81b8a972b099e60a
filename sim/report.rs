//! Turning a simulation into figures: throughput, goodput under latency targets, latency
//! distributions, and the per-request CSV.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

use super::simulator::{Rejection, SimResult};

/// Latency targets a request must meet to count towards goodput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_s: f64,
    pub tpot_s: f64,
}

/// Mean and percentiles of one latency, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Dist {
    pub fn of(mut xs: Vec<f64>) -> Self {
        if xs.is_empty() {
            return Dist::default();
        }
        xs.sort_by(f64::total_cmp);
        Dist {
            mean: xs.iter().sum::<f64>() / xs.len() as f64,
            p50: percentile(&xs, 50.0),
            p90: percentile(&xs, 90.0),
            p99: percentile(&xs, 99.0),
        }
    }
}

/// Linear interpolation between closest ranks (numpy's default) over sorted `xs`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub policy: String,
    pub requests: usize,
    pub completed: usize,
    /// Refused on arrival: the queue was full, or the request needs more KV blocks than exist.
    pub rejected: usize,
    /// Aborted unfinished when their clients went away (a trace's `cancel_after`).
    #[serde(default)]
    pub cancelled: usize,
    pub duration_s: f64,
    pub steps: u64,
    /// Fraction of the duration the executor was busy.
    pub utilization: f64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub slo: Slo,
    /// Completed requests per second that met both latency targets.
    pub goodput: f64,
    /// Fraction of requests that met both targets.
    pub slo_attainment: f64,
    /// Of the requests with a TTFT SLO of their own (`--ttft-slo-ms`, a trace's `ttft_slo_ms`:
    /// what the `deadline` policy schedules by), the fraction whose first token came within it;
    /// refused ones count as misses. `None` when no request has one.
    pub ttft_slo_attainment: Option<f64>,
    /// Refused by the `deadline` policy (`--slo-miss refuse`); part of `rejected`.
    pub slo_refused: usize,
    pub ttft: Dist,
    pub tpot: Dist,
    pub e2e: Dist,
    pub queue_time: Dist,
    pub preemptions: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
}

impl Summary {
    pub fn of(r: &SimResult, slo: Slo) -> Self {
        let done: Vec<_> = r.requests.iter().filter(|q| q.completed()).collect();
        let cancelled = r.requests.iter().filter(|q| q.cancelled).count();
        let out_tokens: usize = done.iter().map(|q| q.output_len).sum();
        let prompt_tokens: usize = done.iter().map(|q| q.prompt_len).sum();
        let per_s = |x: f64| {
            if r.duration > 0.0 {
                x / r.duration
            } else {
                0.0
            }
        };
        let good = done
            .iter()
            .filter(|q| q.ttft() <= slo.ttft_s && q.tpot().is_none_or(|t| t <= slo.tpot_s))
            .count();
        let with_slo: Vec<bool> = r.requests.iter().filter_map(|q| q.met_ttft_slo()).collect();
        let ttft_slo_attainment = (!with_slo.is_empty())
            .then(|| with_slo.iter().filter(|&&met| met).count() as f64 / with_slo.len() as f64);
        Summary {
            policy: r.policy.clone(),
            requests: r.requests.len(),
            completed: done.len(),
            rejected: r.requests.len() - done.len() - cancelled,
            cancelled,
            duration_s: r.duration,
            steps: r.steps,
            utilization: if r.duration > 0.0 {
                r.busy / r.duration
            } else {
                0.0
            },
            request_throughput: per_s(done.len() as f64),
            output_throughput: per_s(out_tokens as f64),
            total_token_throughput: per_s((out_tokens + prompt_tokens) as f64),
            slo,
            goodput: per_s(good as f64),
            slo_attainment: if r.requests.is_empty() {
                0.0
            } else {
                good as f64 / r.requests.len() as f64
            },
            ttft_slo_attainment,
            slo_refused: r
                .requests
                .iter()
                .filter(|q| q.rejected == Some(Rejection::SloMissed))
                .count(),
            ttft: Dist::of(done.iter().map(|q| q.ttft()).collect()),
            tpot: Dist::of(done.iter().filter_map(|q| q.tpot()).collect()),
            e2e: Dist::of(done.iter().map(|q| q.e2e()).collect()),
            queue_time: Dist::of(done.iter().map(|q| q.queue_time()).collect()),
            preemptions: r.preemptions,
            prefix_cache_queries: r.prefix_queries,
            prefix_cache_hits: r.prefix_hits,
        }
    }

    /// The report as people read it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let ms = |d: &Dist| {
            format!(
                "{:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                d.mean * 1e3,
                d.p50 * 1e3,
                d.p90 * 1e3,
                d.p99 * 1e3
            )
        };
        let _ = writeln!(
            s,
            "policy: {}  requests: {} ({} rejected{})  simulated: {:.2} s  steps: {}  executor busy: {:.0}%",
            self.policy,
            self.requests,
            self.rejected,
            if self.cancelled > 0 {
                format!(", {} cancelled", self.cancelled)
            } else {
                String::new()
            },
            self.duration_s,
            self.steps,
            self.utilization * 100.0
        );
        let _ = writeln!(
            s,
            "throughput: {:.2} requests/s, {:.1} output tokens/s, {:.1} total tokens/s",
            self.request_throughput, self.output_throughput, self.total_token_throughput
        );
        let _ = writeln!(
            s,
            "goodput: {:.2} requests/s ({:.1}% of requests with TTFT <= {} ms and TPOT <= {} ms)",
            self.goodput,
            self.slo_attainment * 100.0,
            self.slo.ttft_s * 1e3,
            self.slo.tpot_s * 1e3
        );
        if let Some(a) = self.ttft_slo_attainment {
            let _ = writeln!(
                s,
                "TTFT SLO attainment: {:.1}% of the requests with a TTFT SLO ({} refused for \
                 missing it)",
                a * 100.0,
                self.slo_refused
            );
        }
        let _ = writeln!(
            s,
            "{:<12} {:>9} {:>9} {:>9} {:>9}",
            "(ms)", "mean", "p50", "p90", "p99"
        );
        let _ = writeln!(s, "{:<12} {}", "TTFT", ms(&self.ttft));
        let _ = writeln!(s, "{:<12} {}", "TPOT", ms(&self.tpot));
        let _ = writeln!(s, "{:<12} {}", "E2E", ms(&self.e2e));
        let _ = writeln!(s, "{:<12} {}", "queue", ms(&self.queue_time));
        let hit = if self.prefix_cache_queries > 0 {
            self.prefix_cache_hits as f64 / self.prefix_cache_queries as f64 * 100.0
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "preemptions: {}  prefix cache: {} of {} prompt tokens hit ({hit:.1}%)",
            self.preemptions, self.prefix_cache_hits, self.prefix_cache_queries
        );
        s
    }
}

/// One CSV row per request (times in seconds; latencies empty for rejected requests).
#[derive(Serialize)]
struct Row {
    id: usize,
    arrival: f64,
    prompt_len: usize,
    output_len: usize,
    prefix_group: Option<u32>,
    priority: i32,
    /// Empty, `queue_full`, `too_large` or `slo_missed`.
    rejected: &'static str,
    /// Aborted unfinished when its client went away (then it has no latencies).
    cancelled: bool,
    queue_time: Option<f64>,
    ttft: Option<f64>,
    tpot: Option<f64>,
    e2e: Option<f64>,
    cached_tokens: usize,
    preemptions: u32,
}

pub fn write_requests_csv(path: &Path, r: &SimResult) -> Result<()> {
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    for (id, q) in r.requests.iter().enumerate() {
        let ok = q.completed();
        w.serialize(Row {
            id,
            arrival: q.arrival,
            prompt_len: q.prompt_len,
            output_len: q.output_len,
            prefix_group: q.prefix_group,
            priority: q.priority,
            rejected: q.rejected.map_or("", |r| r.as_str()),
            cancelled: q.cancelled,
            queue_time: ok.then(|| q.queue_time()),
            ttft: ok.then(|| q.ttft()),
            tpot: q.tpot().filter(|_| ok),
            e2e: ok.then(|| q.e2e()),
            cached_tokens: q.cached_tokens,
            preemptions: q.preemptions,
        })?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 5.5);
        assert!((percentile(&xs, 90.0) - 9.1).abs() < 1e-12);
        assert_eq!(percentile(&xs, 100.0), 10.0);
        let d = Dist::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((d.mean, d.p50), (2.0, 2.0));
    }
}
