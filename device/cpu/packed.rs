//! Weight matrices laid out once, at load time, the way the GEMM reads them.
//!
//! An HF weight is `[n, k]` row-major (one row per output feature). `linear` computes
//! `x[m, k] · wᵀ`; the `gemm` crate solves that as `w · xᵀ` and, with `w` row-major, packs 16-row
//! panels of `w` into a scratch buffer on every call. At decode batch sizes (m ≤ 64) that packing
//! is a second full pass over every weight per step, through a generic strided gather, about as
//! costly as the multiply itself (benches/RESULTS.md, "CPU GEMM: packed weights").
//!
//! [`PackedWeight`] stores the matrix as column groups of [`GROUP`] output features, each group
//! `[k][GROUP]` contiguous. For one group, `wᵀ` is a `k × GROUP` matrix with unit column stride,
//! exactly the panel layout the crate's microkernel reads, so the crate packs nothing and the
//! weights stream from memory once, sequentially; the groups are independent products, which
//! is also the unit of parallelism (one rayon task per group, each a single-threaded GEMM).

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::gemm::{add_bias, check_operands};

/// Output features per group, the fastest of 16/32/64: 16 makes too many calls, 64 rows
/// overflow the microkernel's 16-row panel into a strided read.
pub const GROUP: usize = 32;

/// A `[n, k]` weight stored as `ceil(n / GROUP)` groups of `[k][width]` (width = GROUP, or
/// what is left for the last group).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeight {
    n: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedWeight {
    /// Repacks a row-major `[n, k]` matrix.
    pub fn from_rows(rows: &[f32], n: usize, k: usize) -> Result<Self> {
        ensure!(
            rows.len() == n * k,
            "weight has {} elements, expected {n}x{k}",
            rows.len()
        );
        let mut data = vec![0.0; n * k];
        for g0 in (0..n).step_by(GROUP) {
            let width = GROUP.min(n - g0);
            let group = &mut data[g0 * k..(g0 + width) * k];
            for j in 0..width {
                let row = &rows[(g0 + j) * k..(g0 + j + 1) * k];
                for (p, &v) in row.iter().enumerate() {
                    group[p * width + j] = v;
                }
            }
        }
        Ok(PackedWeight { n, k, data })
    }

    /// Output features (rows of the HF matrix).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of the HF matrix).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Copies row `r` of the original `[n, k]` matrix into `out` (the embedding lookup, for a
    /// table tied to the output projection).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let g0 = r - r % GROUP;
        let width = GROUP.min(self.n - g0);
        let group = &self.data[g0 * self.k..(g0 + width) * self.k];
        for (p, o) in out[..self.k].iter_mut().enumerate() {
            *o = group[p * width + (r - g0)];
        }
    }

    /// The groups: (first output feature, width, `[k][width]` data).
    fn groups(&self) -> impl IndexedParallelIterator<Item = (usize, usize, &[f32])> {
        let (n, k) = (self.n, self.k);
        self.data
            .par_chunks(GROUP * k)
            .enumerate()
            .map(move |(g, d)| (g * GROUP, GROUP.min(n - g * GROUP), d))
    }
}

/// `out[m, n] = x[m, k] · wᵀ (+ bias)`.
pub fn matmul_packed(
    x: &[f32],
    w: &PackedWeight,
    bias: Option<&[f32]>,
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    let (n, k) = (w.n, w.k);
    check_operands(x, bias, m, k, n, out)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if m == 1 {
        gemv_packed(&x[..k], w, &mut out[..n]);
    } else {
        gemm_packed(x, w, m, out);
    }
    add_bias(out, bias, m, n);
    Ok(())
}

/// One token (a single sequence decoding): per group, `out[g] = Σ_p x[p] · group[p]` as a
/// 32-wide multiply-add over the group's contiguous rows, which the compiler vectorises; the
/// weights stream through once. The crate's path is slower for this shape on the packed layout:
/// a GEMM call per group for only 32 outputs.
fn gemv_packed(x: &[f32], w: &PackedWeight, out: &mut [f32]) {
    out.par_chunks_mut(GROUP)
        .zip(w.groups())
        .for_each(|(o, (_, width, wg))| {
            let mut acc = [0.0f32; GROUP];
            for (&xv, wrow) in x.iter().zip(wg.chunks_exact(width)) {
                for (a, &wv) in acc.iter_mut().zip(wrow) {
                    *a += xv * wv;
                }
            }
            o.copy_from_slice(&acc[..width]);
        });
}

/// Two tokens or more: one single-threaded GEMM per group, the groups in parallel.
fn gemm_packed(x: &[f32], w: &PackedWeight, m: usize, out: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    // Each group writes its own columns of every output row: disjoint, but not contiguous, so
    // the tasks share the pointer (as an integer: raw pointers are not Send).
    let out_addr = out.as_mut_ptr() as usize;
    w.groups().for_each(|(g0, width, wg)| {
        // SAFETY: x is read as m×k (row stride k, checked above); wg as the k×width matrix wᵀ of
        // this group (row stride width, column stride 1: exactly its width·k elements); the
        // destination is rows 0..m, columns g0..g0+width of the m×n output (row stride n), inside
        // `out` by the check above. Different groups write disjoint columns, and nothing else
        // touches `out` until every task returns.
        unsafe {
            gemm::gemm(
                m,
                width,
                k,
                (out_addr as *mut f32).add(g0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                wg.as_ptr(),
                1,
                width as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::gemm::matmul_transposed;
    use super::*;

    fn values(len: usize, salt: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 37 + salt * 11) % 101) as f32 - 50.0) / 25.0)
            .collect()
    }

    #[test]
    fn equals_the_row_major_product_over_awkward_shapes() {
        // Group remainders (n % 32 != 0), one group, several, one token, prefill-sized m.
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 64, 96),
            (7, 33, 5),
            (3, 17, 70),
            (32, 576, 960),
            (130, 40, 33),
        ] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            let bias = values(n, 3);
            let packed = PackedWeight::from_rows(&w, n, k).unwrap();
            let mut got = vec![f32::NAN; m * n];
            matmul_packed(&x, &packed, Some(&bias), m, &mut got).unwrap();
            let mut want = vec![0.0; m * n];
            matmul_transposed(&x, &w, Some(&bias), m, k, n, &mut want).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "({m},{k},{n}) [{i}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn rows_come_back_unchanged() {
        let (n, k) = (70, 9);
        let w = values(n * k, 4);
        let packed = PackedWeight::from_rows(&w, n, k).unwrap();
        let mut row = vec![0.0; k];
        for r in [0, 1, 31, 32, 63, 64, 69] {
            packed.row_into(r, &mut row);
            assert_eq!(row, &w[r * k..(r + 1) * k], "row {r}");
        }
    }

    #[test]
    fn rejects_mismatched_sizes() {
        assert!(PackedWeight::from_rows(&[1.0; 5], 2, 3).is_err());
        let w = PackedWeight::from_rows(&[1.0; 6], 2, 3).unwrap();
        let mut out = vec![0.0; 4];
        assert!(matmul_packed(&[1.0; 5], &w, None, 2, &mut out).is_err());
        assert!(matmul_packed(&[1.0; 6], &w, None, 2, &mut out[..3]).is_err());
        assert!(matmul_packed(&[1.0; 6], &w, Some(&[0.0; 3]), 2, &mut out).is_err());
    }
}
