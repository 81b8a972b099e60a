//! `out = x · wᵀ` with `w` kept in its GGML blocks ([`QuantMatrix`]).
//!
//! This version dequantises one weight row at a time and takes f32 dot products: obviously right,
//! the reference the block kernels are checked against.

use anyhow::Result;
use rayon::prelude::*;

use super::gemm::check_operands;
use crate::device::quant::matrix::QuantMatrix;

/// `out[m, n] = x[m, k] · wᵀ (+ bias)` for a `[n, k]` block-quantised `w`.
pub fn matmul_quant(
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

#[cfg(test)]
mod tests {
    use super::super::gemm::matmul_transposed;
    use super::*;
    use crate::device::quant::{quantize, GgmlType};

    #[test]
    fn equals_the_product_of_the_dequantised_matrix() {
        let (m, n, k) = (3, 70, 96);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 19) as f32 - 9.0) / 5.0)
            .collect();
        let wf: Vec<f32> = (0..n * k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 / 10.0).collect();
        for dtype in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let w = QuantMatrix::new(dtype, quantize(dtype, &wf).unwrap(), n, k).unwrap();
            let mut got = vec![0.0; m * n];
            matmul_quant(&x, &w, Some(&bias), m, &mut got).unwrap();
            let mut want = vec![0.0; m * n];
            let deq = w.to_f32().unwrap();
            matmul_transposed(&x, &deq, Some(&bias), m, k, n, &mut want).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{dtype:?}: {g} vs {w}"
                );
            }
        }
    }
}
