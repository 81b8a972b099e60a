//! A weight matrix as the CPU backend holds it: f32 packed for the GEMM, or still in its GGML
//! blocks, so a quantised model takes about its file size in memory instead of 4 bytes a value.

use anyhow::{ensure, Result};

use super::packed::{matmul_packed, PackedWeight};
use super::quant_matmul::matmul_quant;
use crate::device::quant::matrix::QuantMatrix;

#[derive(Debug, Clone, PartialEq)]
pub enum CpuWeight {
    F32(PackedWeight),
    Blocks(QuantMatrix),
}

impl CpuWeight {
    /// Output features (rows of the HF matrix).
    pub fn n(&self) -> usize {
        match self {
            CpuWeight::F32(w) => w.n(),
            CpuWeight::Blocks(w) => w.n(),
        }
    }

    /// Input features (columns of the HF matrix).
    pub fn k(&self) -> usize {
        match self {
            CpuWeight::F32(w) => w.k(),
            CpuWeight::Blocks(w) => w.k(),
        }
    }

    /// Bytes the weight occupies in memory.
    pub fn bytes(&self) -> usize {
        match self {
            CpuWeight::F32(w) => w.n() * w.k() * std::mem::size_of::<f32>(),
            CpuWeight::Blocks(w) => w.bytes(),
        }
    }

    /// Row `r` in f32 into `out[..k]` (an embedding lookup dequantises only the rows it reads).
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        ensure!(
            r < self.n(),
            "row {r} is outside the table of {} rows",
            self.n()
        );
        match self {
            CpuWeight::F32(w) => {
                ensure!(
                    out.len() >= w.k(),
                    "row buffer of {} < {}",
                    out.len(),
                    w.k()
                );
                w.row_into(r, out);
                Ok(())
            }
            CpuWeight::Blocks(w) => w.row_into(r, out),
        }
    }

    /// `out[m, n] = x[m, k] · wᵀ (+ bias)`.
    pub fn matmul(&self, x: &[f32], bias: Option<&[f32]>, m: usize, out: &mut [f32]) -> Result<()> {
        match self {
            CpuWeight::F32(w) => matmul_packed(x, w, bias, m, out),
            CpuWeight::Blocks(w) => matmul_quant(x, w, bias, m, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::quant::{quantize, GgmlType};

    fn values(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect()
    }

    #[test]
    fn both_kinds_agree_on_rows_and_products() {
        let (n, k, m) = (40, 64, 3);
        let q = quantize(GgmlType::Q8_0, &values(n * k)).unwrap();
        let blocks = QuantMatrix::new(GgmlType::Q8_0, q, n, k).unwrap();
        let dense = blocks.to_f32().unwrap();
        let f32w = CpuWeight::F32(PackedWeight::from_rows(&dense, n, k).unwrap());
        let qw = CpuWeight::Blocks(blocks);
        assert_eq!(f32w.bytes(), n * k * 4);
        assert_eq!(qw.bytes(), n * k / 32 * 34);
        let (mut a, mut b) = (vec![0.0; k], vec![0.0; k]);
        for r in [0, 17, n - 1] {
            f32w.row_into(r, &mut a).unwrap();
            qw.row_into(r, &mut b).unwrap();
            assert_eq!(a, b);
            assert_eq!(a, dense[r * k..(r + 1) * k]);
        }
        assert!(qw.row_into(n, &mut b).is_err());
        assert!(f32w.row_into(n, &mut a).is_err());
        let x = values(m * k);
        let (mut oa, mut ob) = (vec![0.0; m * n], vec![0.0; m * n]);
        f32w.matmul(&x, None, m, &mut oa).unwrap();
        qw.matmul(&x, None, m, &mut ob).unwrap();
        // The block product quantises each activation row to int8 per 32-block, so an output
        // may move by up to half a step (max|x| / 254) times Σ|w| per block: bounded here by 1%
        // of Σ|w·x|, far below what a wrong row or scale would cost.
        for (i, (p, q)) in oa.iter().zip(&ob).enumerate() {
            let (t, r) = (i / n, i % n);
            let mass: f32 = (0..k)
                .map(|j| (x[t * k + j] * dense[r * k + j]).abs())
                .sum();
            assert!((p - q).abs() <= 1e-2 * mass + 1e-4, "{p} vs {q}");
        }
    }
}
