//! `report.md`: a sweep's parameters, a table per policy and the charts, for a reader who
//! will not open the CSV.

use std::fmt::Write as _;

use super::chart::policies;
use super::compare::{Spread, SweepPoint};
use super::report::Summary;

type Column = (&'static str, fn(&Summary) -> f64, fn(f64) -> String);

const COLUMNS: [Column; 7] = [
    ("throughput (req/s)", |s| s.request_throughput, two),
    ("output (tok/s)", |s| s.output_throughput, one),
    ("TTFT p50 (s)", |s| s.ttft.p50, three),
    ("TTFT p99 (s)", |s| s.ttft.p99, three),
    ("TPOT p50 (s)", |s| s.tpot.p50, three),
    ("TPOT p99 (s)", |s| s.tpot.p99, three),
    ("SLO attainment (%)", |s| s.slo_attainment * 100.0, one),
];

fn one(v: f64) -> String {
    format!("{v:.1}")
}
fn two(v: f64) -> String {
    format!("{v:.2}")
}
fn three(v: f64) -> String {
    format!("{v:.3}")
}

fn cell(s: Spread, fmt: fn(f64) -> String, seeds: usize) -> String {
    if seeds > 1 {
        format!("{} ({}–{})", fmt(s.mean), fmt(s.min), fmt(s.max))
    } else {
        fmt(s.mean)
    }
}

/// The report: `params` as a list of (name, value), `charts` as (caption, file name) images,
/// then a table per policy with a row per rate.
pub fn render(
    title: &str,
    params: &[(String, String)],
    charts: &[(String, String)],
    points: &[SweepPoint],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n\n## Parameters\n");
    for (k, v) in params {
        let _ = writeln!(s, "- **{k}**: {v}");
    }
    let seeds = points.first().map_or(1, |p| p.runs.len());
    let _ = writeln!(s, "\n## Results per policy\n");
    if seeds > 1 {
        let _ = writeln!(
            s,
            "Each cell: the mean over {seeds} workload seeds, and (min–max) across them.\n"
        );
    }
    for policy in policies(points) {
        let _ = writeln!(s, "### {policy}\n");
        let _ = write!(s, "| rate (req/s) |");
        for (name, ..) in COLUMNS {
            let _ = write!(s, " {name} |");
        }
        let _ = write!(s, "\n|---:|");
        for _ in COLUMNS {
            let _ = write!(s, "---:|");
        }
        let _ = writeln!(s);
        for p in points.iter().filter(|p| p.policy == policy) {
            let _ = write!(s, "| {} |", p.rate);
            for (_, metric, fmt) in COLUMNS {
                let _ = write!(s, " {} |", cell(p.spread(metric), fmt, seeds));
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Charts\n");
    for (caption, file) in charts {
        let _ = writeln!(s, "### {caption}\n\n![{caption}]({file})\n");
    }
    s
}
