//! Matrix products through the `gemm` crate (packed, SIMD, multithreaded with rayon).

use anyhow::{ensure, Result};
use gemm::Parallelism;

/// `out[m, n] = x[m, k] · wᵀ (+ bias)`, `w` stored row-major as `[n, k]`.
pub fn matmul_transposed(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> Result<()> {
    ensure!(
        w.len() == n * k,
        "matmul: w has {} elements, needs {n}x{k}",
        w.len()
    );
    check_operands(x, bias, m, k, n, out)?;
    if m == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m * n * k >= 1 << 16 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the bounds above guarantee every index the strides reach is inside its slice:
    // x is read as m×k (row stride k), w as the k×n matrix wᵀ (row stride 1, column stride k),
    // out written as m×n (row stride n). The slices do not alias.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    add_bias(out, bias, m, n);
    Ok(())
}

/// The size checks every matmul makes on `x[m, k]`, the `bias[n]` and `out[m, n]`.
pub(super) fn check_operands(
    x: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
    out: &[f32],
) -> Result<()> {
    ensure!(
        x.len() >= m * k,
        "matmul: x has {} elements, needs {m}x{k}",
        x.len()
    );
    ensure!(
        out.len() >= m * n,
        "matmul: out has {} elements, needs {m}x{n}",
        out.len()
    );
    if let Some(b) = bias {
        ensure!(
            b.len() == n,
            "matmul: bias has {} elements, needs {n}",
            b.len()
        );
    }
    Ok(())
}

/// `out[r, :] += bias` for each of the `m` rows of width `n`.
pub(super) fn add_bias(out: &mut [f32], bias: Option<&[f32]>, m: usize, n: usize) {
    if let Some(b) = bias {
        for row in out[..m * n].chunks_exact_mut(n) {
            for (o, bv) in row.iter_mut().zip(b) {
                *o += bv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
            }
        }
        out
    }

    #[test]
    fn matches_naive_product_over_shapes() {
        for &(m, k, n) in &[(1, 1, 1), (1, 64, 96), (7, 33, 5), (64, 128, 200)] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
                .collect();
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
            let mut out = vec![f32::NAN; m * n];
            matmul_transposed(&x, &w, Some(&bias), m, k, n, &mut out).unwrap();
            let want = naive(&x, &w, m, k, n);
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                let b = b + bias[i % n];
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "({m},{k},{n}) [{i}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn rejects_mismatched_sizes() {
        let mut out = vec![0.0; 4];
        assert!(matmul_transposed(&[1.0; 4], &[1.0; 3], None, 2, 2, 2, &mut out).is_err());
    }
}
