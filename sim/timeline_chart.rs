//! One run's steps against simulated time: prefill and decode tokens per step (stacked), and
//! the KV-cache blocks in use against the cache's size.

use anyhow::{ensure, Result};
use plotters::prelude::*;
use std::path::Path;

use super::chart::{ck, legend, panel, Axis};
use super::timeline::StepRecord;

/// Most bars drawn; longer runs are shown as means over runs of consecutive steps.
const MAX_BARS: usize = 1000;

/// Consecutive steps drawn as one bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    pub start: f64,
    pub end: f64,
    /// Mean prefill and decode tokens per step.
    pub prefill: f64,
    pub decode: f64,
    /// Most KV blocks in use in any of the steps.
    pub kv_blocks: usize,
}

/// The steps per bar, and the bars.
pub fn bins(steps: &[StepRecord]) -> (usize, Vec<Bar>) {
    let per = steps.len().div_ceil(MAX_BARS).max(1);
    let bars = steps
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            Bar {
                start: c[0].start,
                end: c[c.len() - 1].end,
                prefill: c.iter().map(|s| s.prefill_tokens as f64).sum::<f64>() / n,
                decode: c.iter().map(|s| s.decode_tokens as f64).sum::<f64>() / n,
                kv_blocks: c.iter().map(|s| s.kv_blocks_used).max().unwrap_or(0),
            }
        })
        .collect();
    (per, bars)
}

/// Draws `steps` (one run of `num_blocks` KV blocks) to an SVG file.
pub fn draw(path: &Path, steps: &[StepRecord], num_blocks: usize, title: &str) -> Result<()> {
    ensure!(!steps.is_empty(), "the run has no steps to draw");
    let (per, bars) = bins(steps);
    let root = SVGBackend::new(path, (1400, 820)).into_drawing_area();
    ck(root.fill(&WHITE))?;
    let root = ck(root.titled(title, ("sans-serif", 22)))?;
    let (top, bottom) = root.split_vertically(430);
    let x = Axis::fit(
        "simulated time (s)",
        [steps[0].start, steps[steps.len() - 1].end],
        false,
        false,
    );
    let tokens = Axis::fit(
        "tokens per step",
        bars.iter().map(|b| b.prefill + b.decode),
        false,
        true,
    );
    let caption = if per > 1 {
        format!("batch composition (each bar: mean of {per} consecutive steps)")
    } else {
        "batch composition (one bar per step)".to_string()
    };
    let mut chart = panel(&top, &caption, &x, &tokens)?;
    let prefill = RGBColor(31, 119, 180);
    let decode = RGBColor(255, 127, 14);
    ck(chart.draw_series(
        bars.iter()
            .map(|b| Rectangle::new([(b.start, 0.0), (b.end, b.prefill)], prefill.filled())),
    ))?
    .label("prefill tokens")
    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], prefill.filled()));
    ck(chart.draw_series(bars.iter().map(|b| {
        Rectangle::new(
            [(b.start, b.prefill), (b.end, b.prefill + b.decode)],
            decode.filled(),
        )
    })))?
    .label("decode tokens (stacked on prefill)")
    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], decode.filled()));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;

    let kv = Axis::fixed("KV-cache blocks in use", 0.0, num_blocks as f64 * 1.3);
    let mut chart = panel(&bottom, "KV-cache use", &x, &kv)?;
    let green = RGBColor(44, 160, 44);
    ck(chart.draw_series(LineSeries::new(
        bars.iter()
            .flat_map(|b| [(b.start, b.kv_blocks as f64), (b.end, b.kv_blocks as f64)]),
        green.stroke_width(2),
    )))?
    .label(if per > 1 {
        "blocks in use (most in each bar's steps)"
    } else {
        "blocks in use"
    })
    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], green.stroke_width(2)));
    let cap = num_blocks as f64;
    ck(chart.draw_series(LineSeries::new(
        [(steps[0].start, cap), (steps[steps.len() - 1].end, cap)],
        BLACK.stroke_width(1),
    )))?
    .label(format!("cache size: {num_blocks} blocks"))
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(1)));
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    ck(root.present())?;
    Ok(())
}
