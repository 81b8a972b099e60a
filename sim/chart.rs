//! Latency-vs-load charts as SVG (plotters' SVG backend writes text as `<text>` elements, so
//! drawing needs no system fonts): six panels, one line per policy, the mean over the seeds
//! with a min–max band. Also the pieces every simulator chart shares: axes whose ticks carry
//! values ([`Axis`]) and per-policy styles that keep identical curves visible ([`Style`]).

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

use super::compare::SweepPoint;
use super::report::Summary;
use super::ticks;

type Metric = (&'static str, &'static str, fn(&Summary) -> f64);

/// (caption, y-axis description, value)
const PANELS: [Metric; 6] = [
    ("TTFT p50", "time to first token (s)", |s| s.ttft.p50),
    ("TTFT p99", "time to first token (s)", |s| s.ttft.p99),
    ("TPOT p50", "time per output token (s)", |s| s.tpot.p50),
    ("TPOT p99", "time per output token (s)", |s| s.tpot.p99),
    ("E2E p50", "end-to-end latency (s)", |s| s.e2e.p50),
    ("goodput", "requests/s meeting the SLO", |s| s.goodput),
];

pub(super) fn ck<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow!("drawing a chart: {e}"))
}

/// One axis: its description (with units), its range, and whether values are drawn on a log
/// scale. Log axes are drawn as linear axes over log10 of the values, with ticks chosen by
/// [`ticks::log`], so they carry labelled values however narrow the range.
#[derive(Debug, Clone)]
pub(super) struct Axis {
    pub desc: String,
    pub log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    /// An axis covering `values`: logarithmic when they are positive and span at least a
    /// decade (and `log_ok`), else linear, from zero when `from_zero`.
    pub fn fit(
        desc: &str,
        values: impl IntoIterator<Item = f64>,
        log_ok: bool,
        from_zero: bool,
    ) -> Self {
        let (lo, hi) = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        let desc = desc.to_string();
        if !lo.is_finite() {
            return Axis {
                desc,
                log: false,
                lo: 0.0,
                hi: 1.0,
            };
        }
        if log_ok && lo > 0.0 && hi / lo >= 10.0 {
            return Axis {
                desc,
                log: true,
                lo: lo / 1.25,
                hi: hi * 1.25,
            };
        }
        let pad = if hi > lo {
            (hi - lo) * 0.08
        } else {
            hi.abs().max(1.0) * 0.1
        };
        let lo = if from_zero && lo >= 0.0 {
            0.0
        } else if lo >= 0.0 {
            (lo - pad).max(0.0)
        } else {
            lo - pad
        };
        Axis {
            desc,
            log: false,
            lo,
            hi: hi + pad,
        }
    }

    /// A fixed linear range.
    pub fn fixed(desc: &str, lo: f64, hi: f64) -> Self {
        Axis {
            desc: desc.to_string(),
            log: false,
            lo,
            hi,
        }
    }

    /// A value's drawing coordinate.
    pub fn at(&self, v: f64) -> f64 {
        if self.log {
            v.max(self.lo).log10()
        } else {
            v
        }
    }

    fn coord(&self) -> Ticked {
        let ticks = if self.log {
            ticks::log(self.lo, self.hi)
                .into_iter()
                .map(f64::log10)
                .collect()
        } else {
            ticks::linear(self.lo, self.hi, 6)
        };
        Ticked {
            range: self.at(self.lo)..self.at(self.hi),
            ticks,
        }
    }

    fn label(&self, x: f64) -> String {
        ticks::label(if self.log { 10f64.powf(x) } else { x })
    }
}

/// A linear coordinate whose grid lines and labels are exactly the given ticks (plotters'
/// own `WithKeyPoints` loses the label formatter on `f64` axes).
#[derive(Debug, Clone)]
pub(super) struct Ticked {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let r = if span > 0.0 {
            (v - self.range.start) / span
        } else {
            0.5
        };
        limit.0 + (r * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Light (unlabelled) grid lines would only clutter the panel.
        if hint.weight().allow_light_points() || hint.max_num_points() == 0 {
            return Vec::new();
        }
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

pub(super) type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Ticked, Ticked>>;

/// A captioned panel on `area` with labelled ticks and described axes.
pub(super) fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    x: &Axis,
    y: &Axis,
) -> Result<Chart<'a, 'b>> {
    let mut chart = ck(ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(x.coord(), y.coord()))?;
    let (xf, yf) = (|v: &f64| x.label(*v), |v: &f64| y.label(*v));
    ck(chart
        .configure_mesh()
        .x_desc(x.desc.as_str())
        .y_desc(y.desc.as_str())
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .bold_line_style(BLACK.mix(0.12))
        .draw())?;
    Ok(chart)
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// How policy `i` of `n` is drawn: its own color and marker shape, and a line the thinner the
/// later it is drawn, so a curve identical to an earlier one shows as a thin line inside a
/// wide one instead of hiding it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Style {
    pub color: RGBColor,
    pub width: u32,
    shape: usize,
    size: f64,
}

pub(super) const STYLE_NOTE: &str =
    "later policies are drawn thinner on top, so identical curves stay visible";

impl Style {
    pub fn of(i: usize, n: usize) -> Self {
        let rank = (n - 1 - i.min(n - 1)) as u32;
        Style {
            color: COLORS[i % COLORS.len()],
            width: (2 + 2 * rank).min(12),
            shape: i,
            size: 4.0 + 1.5 * rank.min(6) as f64,
        }
    }

    /// The marker's outline, relative to its centre: circle, triangle, square, diamond,
    /// inverted triangle, hexagon, then again.
    fn marker_points(&self) -> Vec<(i32, i32)> {
        let (sides, turn) = match self.shape % 6 {
            0 => (12, 0.0),
            1 => (3, -90.0),
            2 => (4, 45.0),
            3 => (4, 0.0),
            4 => (3, 90.0),
            _ => (6, 0.0),
        };
        (0..sides)
            .map(|k| {
                let a = (turn + 360.0 * k as f64 / sides as f64).to_radians();
                (
                    (self.size * a.cos()).round() as i32,
                    (self.size * a.sin()).round() as i32,
                )
            })
            .collect()
    }

    fn marker_outline(&self) -> Vec<(i32, i32)> {
        let mut p = self.marker_points();
        p.push(p[0]);
        p
    }
}

/// Draws a policy's line (already in drawing coordinates), with markers when `markers`, and
/// gives it a legend entry.
pub(super) fn line<'a, 'b: 'a>(
    c: &mut Chart<'a, 'b>,
    pts: &[(f64, f64)],
    st: Style,
    name: &str,
    markers: bool,
) -> Result<()> {
    let color = st.color;
    let width = st.width;
    let legend = ck(c.draw_series(LineSeries::new(pts.to_vec(), color.stroke_width(width))))?;
    // The legend shows a marker only where the line has them.
    let mark = if markers {
        st.marker_points()
    } else {
        Vec::new()
    };
    legend.label(name).legend(move |(x, y)| {
        EmptyElement::at((x + 10, y))
            + PathElement::new(vec![(-10, 0), (10, 0)], color.stroke_width(width.min(6)))
            + Polygon::new(mark.clone(), color.filled())
    });
    if markers {
        ck(c.draw_series(pts.iter().map(|&p| {
            EmptyElement::at(p)
                + Polygon::new(st.marker_points(), color.filled())
                + PathElement::new(st.marker_outline(), WHITE.stroke_width(1))
        })))?;
    }
    Ok(())
}

pub(super) fn legend<'a, 'b: 'a>(c: &mut Chart<'a, 'b>, at: SeriesLabelPosition) -> Result<()> {
    ck(c.configure_series_labels()
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(at)
        .draw())
}

/// Draws `points` (several policies × rates, each over one or more seeds) to an SVG file.
pub fn draw(path: &Path, points: &[SweepPoint], title: &str) -> Result<()> {
    let policies = policies(points);
    anyhow::ensure!(!points.is_empty(), "nothing to draw");
    let seeds = points[0].runs.len();
    let x = Axis::fit(
        "arrival rate (requests/s)",
        points.iter().map(|p| p.rate),
        false,
        false,
    );
    let root = SVGBackend::new(path, (1500, 960)).into_drawing_area();
    ck(root.fill(&WHITE))?;
    let band = if seeds > 1 {
        format!("lines: mean over {seeds} workload seeds, bands: min–max; ")
    } else {
        String::new()
    };
    let root = ck(root.titled(&format!("{title}\n"), ("sans-serif", 22)))?;
    let (note, root) = root.split_vertically(22);
    ck(note.draw_text(
        &format!("{band}{STYLE_NOTE}"),
        &("sans-serif", 14).into_text_style(&note),
        (12, 2),
    ))?;
    for (n, (area, (name, desc, value))) in root.split_evenly((2, 3)).iter().zip(PANELS).enumerate()
    {
        let spreads: Vec<_> = points.iter().map(|p| p.spread(value)).collect();
        let y = Axis::fit(
            desc,
            spreads.iter().flat_map(|s| [s.min, s.max]),
            true,
            name == "goodput",
        );
        let mut chart = panel(area, name, &x, &y)?;
        for (i, policy) in policies.iter().enumerate() {
            let st = Style::of(i, policies.len());
            let mine: Vec<_> = points
                .iter()
                .zip(&spreads)
                .filter(|(p, _)| &p.policy == policy)
                .map(|(p, s)| (x.at(p.rate), *s))
                .collect();
            if seeds > 1 {
                let upper = mine.iter().map(|(r, s)| (*r, y.at(s.max)));
                let lower = mine.iter().rev().map(|(r, s)| (*r, y.at(s.min)));
                ck(chart.draw_series(std::iter::once(Polygon::new(
                    upper.chain(lower).collect::<Vec<_>>(),
                    st.color.mix(0.15).filled(),
                ))))?;
            }
            let pts: Vec<_> = mine.iter().map(|(r, s)| (*r, y.at(s.mean))).collect();
            line(&mut chart, &pts, st, policy, true)?;
        }
        if n == 0 {
            legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        }
    }
    ck(root.present())?;
    Ok(())
}

/// The policies in `points`, in their first appearance order.
pub(super) fn policies(points: &[SweepPoint]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in points {
        if !out.contains(&p.policy) {
            out.push(p.policy.clone());
        }
    }
    out
}
