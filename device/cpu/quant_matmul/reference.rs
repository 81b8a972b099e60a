//! The slow reference for [`super::matmul_quant`]: one weight row at a time, dequantised.
//!
//! Dequantise a row, take f32 dot products: obviously right, what the block kernels are checked
//! against.

use anyhow::Result;
use rayon::prelude::*;

use super::super::gemm::check_operands;
use crate::device::quant::matrix::QuantMatrix;

/// `out[m, n] = x[m, k] · wᵀ (+ bias)`, dequantising each row of `w` to f32.
pub fn matmul_quant_reference(
    x: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    let (n, k) = (w.n(), w.k());
    check_operands(x, bias, m, k, n, out)?;
    // Columns of `out` (weight rows) in parallel: each task dequantises its rows once and
    // reuses them for every token.
    let columns: Vec<Vec<f32>> = (0..n)
        .into_par_iter()
        .map(|r| -> Result<Vec<f32>> {
            let mut row = vec![0.0; k];
            w.row_into(r, &mut row)?;
            let b = bias.map_or(0.0, |b| b[r]);
            Ok((0..m)
                .map(|t| dot(&x[t * k..(t + 1) * k], &row) + b)
                .collect())
        })
        .collect::<Result<_>>()?;
    for (r, col) in columns.iter().enumerate() {
        for (t, v) in col.iter().enumerate() {
            out[t * n + r] = *v;
        }
    }
    Ok(())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
