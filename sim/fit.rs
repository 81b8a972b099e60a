//! Fitting the cost model: non-negative least squares on relative error.
//!
//! Relative error, because step times span two orders of magnitude (a one-token decode against a
//! 512-token prefill) and a plain fit would sacrifice the small steps that dominate decoding.
//! Non-negative, because a negative cost would let the simulator produce steps that take no
//! time. With a dozen coefficients at most, exact NNLS is cheap: solve every subset of features
//! and keep the best solution whose coefficients are all non-negative.

use anyhow::ensure;

use super::cost_model::{CostModel, FitStats, Measurement};

/// Most features the exhaustive search takes (2^16 small solves, well under a second).
const MAX_FEATURES: usize = 16;

/// Fits a cost model with token knots `knots` to `measurements` (positive times).
pub fn fit(measurements: &[Measurement], knots: &[usize]) -> anyhow::Result<CostModel> {
    ensure!(!measurements.is_empty(), "no measurements to fit");
    ensure!(
        measurements
            .iter()
            .all(|m| m.seconds > 0.0 && m.seconds.is_finite()),
        "step times must be positive"
    );
    let n = knots.len() + 2;
    ensure!(
        !knots.is_empty() && n <= MAX_FEATURES,
        "between 1 and {} token knots",
        MAX_FEATURES - 2
    );
    // Rows scaled by 1/seconds: least squares on relative error, targets all 1.
    let rows: Vec<Vec<f64>> = measurements
        .iter()
        .map(|m| {
            CostModel::features(knots, &m.shape)
                .into_iter()
                .map(|x| x / m.seconds)
                .collect()
        })
        .collect();
    let mut best: Option<(Vec<f64>, f64)> = None;
    for mask in 1u32..(1 << n) {
        let Some(coef) = solve_subset(&rows, n, mask) else {
            continue;
        };
        if coef.iter().any(|&c| c < 0.0) {
            continue;
        }
        let err: f64 = rows
            .iter()
            .map(|r| (r.iter().zip(&coef).map(|(x, c)| x * c).sum::<f64>() - 1.0).powi(2))
            .sum();
        if best.as_ref().is_none_or(|(_, e)| err < *e) {
            best = Some((coef, err));
        }
    }
    let (coef, _) = best.ok_or_else(|| anyhow::anyhow!("no non-negative fit exists"))?;
    let mut model = CostModel::from_coefficients(knots.to_vec(), &coef);
    model.fit = Some(stats(measurements, &model));
    Ok(model)
}

/// Least squares on the features in `mask` (the others fixed at 0); `None` if singular.
fn solve_subset(rows: &[Vec<f64>], n: usize, mask: u32) -> Option<Vec<f64>> {
    let cols: Vec<usize> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
    let k = cols.len();
    // Columns scaled to at most 1 in magnitude: KV reads reach 1e5 while knot weights are ≤ 1.
    let mut scale = vec![0.0f64; k];
    for r in rows {
        for (j, &c) in cols.iter().enumerate() {
            scale[j] = scale[j].max(r[c].abs());
        }
    }
    if scale.contains(&0.0) {
        return None;
    }
    let mut a = vec![vec![0.0f64; k + 1]; k];
    for r in rows {
        let x: Vec<f64> = cols.iter().zip(&scale).map(|(&c, s)| r[c] / s).collect();
        for i in 0..k {
            for j in 0..k {
                a[i][j] += x[i] * x[j];
            }
            a[i][k] += x[i];
        }
    }
    let sol = gauss(a)?;
    let mut coef = vec![0.0; n];
    for (j, &c) in cols.iter().enumerate() {
        coef[c] = sol[j] / scale[j];
    }
    Some(coef)
}

/// Solves the augmented system `a` by Gauss-Jordan elimination with partial pivoting.
fn gauss(mut a: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let k = a.len();
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-10 {
            return None;
        }
        a.swap(col, pivot);
        let p = a[col].clone();
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / p[col];
                for (x, y) in r[col..].iter_mut().zip(&p[col..]) {
                    *x -= f * y;
                }
            }
        }
    }
    Some((0..k).map(|i| a[i][k] / a[i][i]).collect())
}

/// Fit quality of `model` on `ms`.
pub fn stats(ms: &[Measurement], model: &CostModel) -> FitStats {
    let n = ms.len() as f64;
    let mean = ms.iter().map(|m| m.seconds).sum::<f64>() / n;
    let (mut ss_res, mut ss_tot, mut rel_sum, mut rel_max) = (0.0, 0.0, 0.0, 0.0f64);
    for m in ms {
        let p = model.predict(&m.shape);
        ss_res += (p - m.seconds).powi(2);
        ss_tot += (m.seconds - mean).powi(2);
        let rel = (p - m.seconds).abs() / m.seconds;
        rel_sum += rel;
        rel_max = rel_max.max(rel);
    }
    FitStats {
        samples: ms.len(),
        r2: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        },
        mean_rel_error: rel_sum / n,
        max_rel_error: rel_max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::cost_model::StepShape;

    fn m(tokens: f64, samples: f64, kv: f64) -> Measurement {
        Measurement {
            shape: StepShape {
                tokens,
                decode_tokens: samples,
                samples,
                kv_tokens_read: kv,
            },
            seconds: 0.0,
        }
    }

    #[test]
    fn recovers_exact_coefficients() {
        let knots = vec![1, 4, 16, 64];
        let truth =
            CostModel::from_coefficients(knots.clone(), &[0.04, 0.05, 0.09, 0.25, 8e-4, 2e-6]);
        let ms: Vec<Measurement> = [
            m(1.0, 1.0, 100.0),
            m(4.0, 4.0, 400.0),
            m(16.0, 16.0, 4000.0),
            m(64.0, 64.0, 30000.0),
            m(16.0, 1.0, 136.0),
            m(64.0, 1.0, 2080.0),
            m(40.0, 8.0, 9000.0),
            m(100.0, 1.0, 5050.0),
        ]
        .into_iter()
        .map(|mut x| {
            x.seconds = truth.predict(&x.shape);
            x
        })
        .collect();
        let got = fit(&ms, &knots).unwrap();
        for (g, t) in got.coefficients().iter().zip(truth.coefficients()) {
            assert!((g - t).abs() <= 1e-9 + 1e-6 * t, "{g} vs {t}");
        }
        assert!(got.fit.unwrap().max_rel_error < 1e-9);
    }

    #[test]
    fn never_returns_negative_coefficients() {
        // Times that fall as attention reads grow would need a negative KV cost.
        let mut ms = vec![m(4.0, 4.0, 10.0), m(4.0, 4.0, 1000.0), m(4.0, 4.0, 5000.0)];
        for (x, s) in ms.iter_mut().zip([0.05, 0.04, 0.03]) {
            x.seconds = s;
        }
        let got = fit(&ms, &[4]).unwrap();
        assert!(got.coefficients().iter().all(|&c| c >= 0.0));
    }
}
