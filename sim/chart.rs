//! Latency-vs-load charts as SVG (plotters' SVG backend writes text as `<text>` elements, so
//! drawing needs no system fonts): six panels, one line per policy.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

use super::compare::SweepPoint;
use super::report::Summary;

type Metric = (&'static str, fn(&Summary) -> f64, bool);

/// (title, value, log scale)
const PANELS: [Metric; 6] = [
    ("TTFT p50 (s)", |s| s.ttft.p50, true),
    ("TTFT p99 (s)", |s| s.ttft.p99, true),
    ("TPOT p50 (s)", |s| s.tpot.p50, true),
    ("TPOT p99 (s)", |s| s.tpot.p99, true),
    ("E2E p50 (s)", |s| s.e2e.p50, true),
    ("goodput (requests/s)", |s| s.goodput, false),
];

/// A tick label with a few significant digits (log axes otherwise print float noise).
fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a >= 0.001 {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// Draws `points` (several policies × rates) to an SVG file.
pub fn draw(path: &Path, points: &[SweepPoint], title: &str) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let mut policies: Vec<&str> = Vec::new();
    for p in points {
        if !policies.contains(&p.policy.as_str()) {
            policies.push(&p.policy);
        }
    }
    let (xmin, xmax) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.rate), b.max(p.rate))
        });
    anyhow::ensure!(xmin.is_finite(), "nothing to draw");
    let xpad = ((xmax - xmin) * 0.05).max(xmin.abs() * 0.05).max(1e-3);
    let xr = (xmin - xpad)..(xmax + xpad);

    let root = SVGBackend::new(path, (1500, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    for (area, (name, value, log)) in root.split_evenly((2, 3)).iter().zip(PANELS) {
        let ys: Vec<f64> = points.iter().map(|p| value(&p.summary)).collect();
        let pos = ys.iter().copied().filter(|y| *y > 0.0 && y.is_finite());
        let (lo, hi) = pos.fold((f64::INFINITY, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
        let mut chart = ChartBuilder::on(area);
        chart
            .caption(name, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60);
        let series = |s: &str| {
            points
                .iter()
                .filter(|p| p.policy == s)
                .map(|p| (p.rate, value(&p.summary)))
                .collect::<Vec<_>>()
        };
        macro_rules! plot {
            ($chart:expr, $keep:expr) => {{
                let mut c = $chart;
                c.configure_mesh()
                    .x_desc("arrival rate (requests/s)")
                    .x_label_formatter(&|x| short(*x))
                    .y_label_formatter(&|y| short(*y))
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(|e| err(&e))?;
                for (i, s) in policies.iter().enumerate() {
                    let color = Palette99::pick(i).to_rgba();
                    let data: Vec<(f64, f64)> = series(s).into_iter().filter($keep).collect();
                    c.draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
                        .map_err(|e| err(&e))?
                        .label(*s)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                        });
                    c.draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| err(&e))?;
                }
                c.configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperLeft)
                    .draw()
                    .map_err(|e| err(&e))?;
            }};
        }
        if log && lo.is_finite() {
            let yr = (lo / 1.5)..(hi * 1.5);
            plot!(
                chart
                    .build_cartesian_2d(xr.clone(), yr.log_scale())
                    .map_err(|e| err(&e))?,
                |&(_, y): &(f64, f64)| y > 0.0
            );
        } else {
            let top = if hi > 0.0 { hi * 1.1 } else { 1.0 };
            plot!(
                chart
                    .build_cartesian_2d(xr.clone(), 0.0..top)
                    .map_err(|e| err(&e))?,
                |_: &(f64, f64)| true
            );
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
