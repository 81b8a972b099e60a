//! Elementwise and row-wise CPU ops: embedding gather, RMSNorm, q/k norm, RoPE, SiLU·mul.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use crate::device::backend::QkvLayout;

/// Rows per rayon task: below this, threading costs more than it saves.
const ROWS_PER_TASK: usize = 8;

/// `out[i] = table[ids[i]]` for rows of width `dim`.
pub fn embed(table: &[f32], ids: &[u32], dim: usize, out: &mut [f32]) -> Result<()> {
    let vocab = table.len() / dim;
    ensure!(out.len() >= ids.len() * dim, "embed: output too small");
    for (row, &id) in out.chunks_exact_mut(dim).zip(ids) {
        let id = id as usize;
        ensure!(
            id < vocab,
            "token id {id} is outside the table of {vocab} rows"
        );
        row.copy_from_slice(&table[id * dim..(id + 1) * dim]);
    }
    Ok(())
}

/// `Σ a[i]·b[i]` over eight independent partial sums. A single running sum is a chain of
/// dependent adds the compiler must keep in order (no reassociation of floats), so it stays
/// scalar; eight lanes let it use vector registers, and the scalar form (attention
/// scores, RMS sums) is a visible share of a CPU decode step in a profile. `#[inline]`: its
/// callers are in other codegen units, where a call per key costs as much as the short sum.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let split = n - n % 8;
    let mut acc = [0.0f32; 8];
    for (x, y) in a[..split].chunks_exact(8).zip(b[..split].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a[split..n]
        .iter()
        .zip(&b[split..n])
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mean_sq = dot(x, x) / x.len() as f32;
    1.0 / (mean_sq + eps).sqrt()
}

fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let inv = inv_rms(x, eps);
    for ((o, xv), wv) in out.iter_mut().zip(x).zip(w) {
        *o = xv * inv * wv;
    }
}

/// `out = x / sqrt(mean(x²) + eps) * w`, row by row (row width = `w.len()`).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    out.par_chunks_mut(dim * ROWS_PER_TASK)
        .zip(x.par_chunks(dim * ROWS_PER_TASK))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                rms_norm_row(x, w, eps, o);
            }
        });
}

/// `residual += delta; out = rms_norm(residual) * w`.
pub fn add_rms_norm(residual: &mut [f32], delta: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    let chunk = dim * ROWS_PER_TASK;
    residual
        .par_chunks_mut(chunk)
        .zip(delta.par_chunks(chunk))
        .zip(out.par_chunks_mut(chunk))
        .for_each(|((r, d), o)| {
            for (rv, dv) in r.iter_mut().zip(d) {
                *rv += dv;
            }
            for (r, o) in r.chunks_exact(dim).zip(o.chunks_exact_mut(dim)) {
                rms_norm_row(r, w, eps, o);
            }
        });
}

/// RMSNorm of each q head with `q_w` and each k head with `k_w`, in place; v is untouched.
pub fn qk_norm(qkv: &mut [f32], q_w: &[f32], k_w: &[f32], eps: f32, layout: QkvLayout) {
    let hd = layout.head_dim;
    let (q_end, k_end) = (layout.q_width(), layout.q_width() + layout.kv_width());
    qkv.par_chunks_mut(layout.row_width()).for_each(|row| {
        for (start, w) in [(0, q_w), (q_end, k_w)] {
            let end = if start == 0 { q_end } else { k_end };
            for head in row[start..end].chunks_exact_mut(hd) {
                let inv = inv_rms(head, eps);
                for (x, wv) in head.iter_mut().zip(w) {
                    *x *= inv * wv;
                }
            }
        }
    });
}

/// Rotates q and k heads in place: for `i < half`, `(x[i], x[i+half])` turns by `pos · inv_freq[i]`.
/// `cos_sin` rows are `[cos(pos·f_0..f_half) | sin(pos·f_0..f_half)]`.
pub fn rope(qkv: &mut [f32], cos_sin: &[f32], positions: &[u32], layout: QkvLayout) -> Result<()> {
    let hd = layout.head_dim;
    let half = hd / 2;
    let max_pos = cos_sin.len() / hd;
    let rotated = layout.q_width() + layout.kv_width();
    if let Some(&p) = positions.iter().find(|&&p| p as usize >= max_pos) {
        anyhow::bail!("position {p} is beyond the model's RoPE table of {max_pos} positions");
    }
    qkv.par_chunks_mut(layout.row_width())
        .zip(positions.par_iter())
        .for_each(|(row, &pos)| {
            let table = &cos_sin[pos as usize * hd..(pos as usize + 1) * hd];
            let (cos, sin) = table.split_at(half);
            for head in row[..rotated].chunks_exact_mut(hd) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (x, y) = (a[i], b[i]);
                    a[i] = x * cos[i] - y * sin[i];
                    b[i] = y * cos[i] + x * sin[i];
                }
            }
        });
    Ok(())
}

/// `out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i]`.
pub fn silu_mul(gate_up: &[f32], inter: usize, out: &mut [f32]) {
    out.par_chunks_mut(inter)
        .zip(gate_up.par_chunks(2 * inter))
        .for_each(|(o, gu)| {
            let (gate, up) = gu.split_at(inter);
            for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_equals_the_plain_sum_at_every_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.25).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-3, "n = {n}");
        }
    }

    #[test]
    fn rms_norm_of_a_known_row() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let w = [1.0, 1.0, 2.0, 0.5];
        let mut out = [0.0; 4];
        rms_norm(&x, &w, 0.0, &mut out);
        let inv = 1.0 / (30.0f32 / 4.0).sqrt();
        assert_eq!(out, [inv, 2.0 * inv, 6.0 * inv, 2.0 * inv]);
    }

    #[test]
    fn add_rms_norm_updates_the_residual() {
        let mut residual = vec![1.0, 1.0, 0.0, 0.0];
        let mut out = vec![0.0; 4];
        add_rms_norm(
            &mut residual,
            &[0.0, 0.0, 1.0, 1.0],
            &[1.0, 1.0],
            0.0,
            &mut out,
        );
        assert_eq!(residual, vec![1.0; 4]);
        assert_eq!(out, vec![1.0; 4]);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let layout = QkvLayout {
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 4,
        };
        // cos/sin table for 2 positions, half = 2: pos 0 → angle 0, pos 1 → angles (π/2, 0).
        let table = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0];
        let mut row = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0, 9.0, 9.0];
        let orig = row.clone();
        rope(&mut row, &table, &[0], layout).unwrap();
        assert_eq!(row, orig);
        rope(&mut row, &table, &[1], layout).unwrap();
        // pair (x0, x2) turns by 90°: (1, 3) → (-3, 1); pair (x1, x3) by 0°.
        assert_eq!(&row[..4], &[-3.0, 2.0, 1.0, 4.0]);
        assert_eq!(&row[8..], &[9.0; 4], "v must not be rotated");
        assert!(rope(&mut row, &table, &[2], layout).is_err());
    }

    #[test]
    fn silu_mul_matches_formula() {
        let mut out = [0.0; 2];
        silu_mul(&[0.0, 1.0, 3.0, 2.0], 2, &mut out);
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 2.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn embed_rejects_out_of_range_ids() {
        let mut out = vec![0.0; 2];
        assert!(embed(&[1.0, 2.0, 3.0, 4.0], &[2], 2, &mut out).is_err());
        embed(&[1.0, 2.0, 3.0, 4.0], &[1], 2, &mut out).unwrap();
        assert_eq!(out, vec![3.0, 4.0]);
    }
}
