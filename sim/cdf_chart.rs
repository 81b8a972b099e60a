//! TTFT and TPOT distributions per policy at one load, as cumulative distribution charts.

use anyhow::{ensure, Result};
use plotters::prelude::*;
use std::path::Path;

use super::chart::{ck, legend, line, panel, policies, Axis, Style, STYLE_NOTE};
use super::compare::SweepPoint;

/// Most points drawn per curve (quantiles of the requests), which keeps the SVG small.
const MAX_POINTS: usize = 400;

/// `(value, fraction of values <= it)` for sorted `xs`, at most [`MAX_POINTS`] of them.
pub fn cdf(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let stride = n.div_ceil(MAX_POINTS).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(stride)
        .map(|i| (sorted[i], (i + 1) as f64 / n as f64))
        .collect();
    if n > 0 && out.last().map(|p| p.1) != Some(1.0) {
        out.push((sorted[n - 1], 1.0));
    }
    out
}

/// Draws the TTFT and TPOT CDFs of every policy's points at `rate`.
pub fn draw(path: &Path, points: &[SweepPoint], rate: f64, title: &str) -> Result<()> {
    let at: Vec<&SweepPoint> = points.iter().filter(|p| p.rate == rate).collect();
    ensure!(
        !at.is_empty(),
        "no simulations at rate {rate} to draw CDFs of"
    );
    let policies = policies(points);
    let seeds = at[0].runs.len();
    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    ck(root.fill(&WHITE))?;
    let root = ck(root.titled(title, ("sans-serif", 22)))?;
    let (note, root) = root.split_vertically(22);
    ck(note.draw_text(
        &format!(
            "{rate} requests/s; every completed request of {seeds} seed(s) pooled; {STYLE_NOTE}"
        ),
        &("sans-serif", 14).into_text_style(&note),
        (12, 2),
    ))?;
    type Pick = fn(&SweepPoint) -> &[f64];
    let kinds: [(&str, &str, Pick); 2] = [
        ("TTFT CDF", "time to first token (s)", |p| &p.ttft),
        ("TPOT CDF", "time per output token (s)", |p| &p.tpot),
    ];
    for (area, (caption, desc, pick)) in root.split_evenly((1, 2)).iter().zip(kinds) {
        let x = Axis::fit(
            desc,
            at.iter().flat_map(|p| pick(p).iter().copied()),
            true,
            false,
        );
        let y = Axis::fixed("fraction of requests", 0.0, 1.0);
        let mut chart = panel(area, caption, &x, &y)?;
        for (i, policy) in policies.iter().enumerate() {
            let Some(p) = at.iter().find(|p| &p.policy == policy) else {
                continue;
            };
            let pts: Vec<_> = cdf(pick(p))
                .into_iter()
                .map(|(v, f)| (x.at(v), f))
                .collect();
            line(
                &mut chart,
                &pts,
                Style::of(i, policies.len()),
                policy,
                false,
            )?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }
    ck(root.present())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_rises_to_one_and_thins_long_inputs() {
        let xs: Vec<f64> = (0..10_000).map(f64::from).collect();
        let c = cdf(&xs);
        assert!(c.len() <= MAX_POINTS + 1, "{}", c.len());
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(*c.last().unwrap(), (9999.0, 1.0));
        assert_eq!(cdf(&[2.0, 3.0]), vec![(2.0, 0.5), (3.0, 1.0)]);
    }
}
