//! Choosing axis ticks a reader can read: round values (1-2-5 steps) on linear axes, and on
//! log axes enough labelled ticks even when the data spans less than a decade (plotters labels
//! only powers of ten there, which leaves a narrow log axis with no values at all).

/// Round values covering `lo..=hi`, about `target` of them, at a step of 1, 2 or 5 times a power
/// of ten.
pub fn linear(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return if lo.is_finite() { vec![lo] } else { Vec::new() };
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let exp = raw.log10().floor() as i32;
    let mag = 10f64.powi(exp);
    // The round step whose tick count comes closest to the target.
    let count = |m: f64| (hi - lo) / (m * mag);
    let m = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .min_by(|a, b| {
            let off = |m: f64| (count(m) - target as f64).abs();
            off(*a).total_cmp(&off(*b))
        })
        .unwrap_or(1.0);
    let step = m * mag;
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    // i·m / 10^k rather than repeated additions keeps float error out of the labels.
    let at = |i: i64| {
        if exp < 0 {
            i as f64 * m / 10f64.powi(-exp)
        } else {
            i as f64 * m * mag
        }
    };
    (first..=last).map(at).collect()
}

/// Ticks for a log axis over `lo..=hi` (both > 0): the coarsest of {1}, {1, 2, 5} and
/// {1, ..., 9} times powers of ten that gives at least three ticks, else (a range narrower
/// than the gap between two such values) round linear ticks.
pub fn log(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return linear(lo, hi, 5);
    }
    let sets: [&[f64]; 3] = [
        &[1.0],
        &[1.0, 2.0, 5.0],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ];
    for mantissas in sets {
        let ticks: Vec<f64> = (lo.log10().floor() as i32..=hi.log10().ceil() as i32)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9))
            .collect();
        if ticks.len() >= 3 {
            return ticks;
        }
    }
    linear(lo, hi, 4)
}

/// A tick value with at most three significant digits and no float noise.
pub fn label(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() < 1e-4 {
        return format!("{v:.1e}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_axis_narrower_than_a_decade_still_gets_several_labelled_ticks() {
        // 0.12..0.45 holds no power of ten; 1-2-5 gives only 0.2, so finer mantissas are used.
        let t = log(0.12, 0.45);
        assert!(t.len() >= 3, "{t:?}");
        assert!(t.iter().all(|v| (0.12..=0.45).contains(v)), "{t:?}");
        // Narrower than 0.3..0.4: linear ticks inside the range.
        let t = log(0.31, 0.36);
        assert!(t.len() >= 3, "{t:?}");
        assert!(t.iter().all(|v| (0.31..=0.360001).contains(v)), "{t:?}");
        let labels: Vec<String> = t.iter().map(|v| label(*v)).collect();
        let mut unique = labels.clone();
        unique.dedup();
        assert_eq!(unique, labels, "labels must tell the ticks apart");
    }

    #[test]
    fn a_log_axis_across_decades_gets_powers_of_ten() {
        assert_eq!(log(0.005, 20.0), vec![0.01, 0.1, 1.0, 10.0]);
        assert_eq!(log(0.15, 3.0), vec![0.2, 0.5, 1.0, 2.0]);
    }

    #[test]
    fn linear_ticks_are_round_and_cover_the_range() {
        assert_eq!(linear(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(linear(3.0, 47.0, 5), vec![10.0, 20.0, 30.0, 40.0]);
        assert_eq!(
            linear(0.0, 125.0, 6),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0]
        );
        assert_eq!(label(0.30000000000000004), "0.3");
        assert_eq!(label(1500.0), "1500");
        assert_eq!(label(0.0125), "0.0125");
    }
}
