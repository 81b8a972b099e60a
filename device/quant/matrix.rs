//! A weight matrix kept in its GGML blocks: what a backend that computes on quantised weights
//! receives at load time instead of f32 rows.
//!
//! A `[n, k]` matrix is a stack of row segments, each of one element type, because tandem fuses
//! q|k|v and gate|up at load and a quantiser may give those parts different types (llama.cpp's
//! Q4_K_M keeps some `attn_v` in Q6_K beside Q4_K `attn_q`). Row `r` of a segment is the
//! `row_bytes` bytes at `r * row_bytes`: whole blocks, since `k` is a multiple of the block size.

use anyhow::{ensure, Context, Result};

use super::{dequantize, GgmlType};

/// Rows of one element type.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSegment {
    pub dtype: GgmlType,
    pub rows: usize,
    /// `rows * row_bytes(dtype, k)` bytes, row after row.
    pub data: Vec<u8>,
}

/// A `[n, k]` row-major matrix in GGML blocks (HF layout: one row per output feature).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    k: usize,
    segments: Vec<RowSegment>,
}

/// Bytes one row of `k` elements of `dtype` takes; an error if `k` is not a whole number of
/// blocks.
pub fn row_bytes(dtype: GgmlType, k: usize) -> Result<usize> {
    dtype.bytes_for(k)
}

impl QuantMatrix {
    /// `n` rows of `k` elements of `dtype`, from the raw tensor bytes.
    pub fn new(dtype: GgmlType, data: Vec<u8>, n: usize, k: usize) -> Result<Self> {
        let rb = row_bytes(dtype, k).with_context(|| format!("a {n}x{k} {dtype:?} matrix"))?;
        ensure!(
            Some(data.len()) == n.checked_mul(rb),
            "a {n}x{k} {dtype:?} matrix takes {} bytes, got {}",
            n.saturating_mul(rb),
            data.len()
        );
        Ok(QuantMatrix {
            k,
            segments: vec![RowSegment {
                dtype,
                rows: n,
                data,
            }],
        })
    }

    /// The matrices one above the other (`[n1 + n2 + …, k]`); adjacent parts of one type share a
    /// segment.
    pub fn stack(parts: Vec<QuantMatrix>) -> Result<Self> {
        let k = parts.first().map_or(0, |p| p.k);
        let mut segments: Vec<RowSegment> = Vec::new();
        for part in parts {
            ensure!(
                part.k == k,
                "stacking matrices of {} and {k} columns",
                part.k
            );
            for seg in part.segments {
                match segments.last_mut() {
                    Some(last) if last.dtype == seg.dtype => {
                        last.rows += seg.rows;
                        last.data.extend_from_slice(&seg.data);
                    }
                    _ => segments.push(seg),
                }
            }
        }
        Ok(QuantMatrix { k, segments })
    }

    /// Rows (output features).
    pub fn n(&self) -> usize {
        self.segments.iter().map(|s| s.rows).sum()
    }

    /// Columns (input features).
    pub fn k(&self) -> usize {
        self.k
    }

    pub fn segments(&self) -> &[RowSegment] {
        &self.segments
    }

    /// Bytes the blocks take (the resident size of the weight).
    pub fn bytes(&self) -> usize {
        self.segments.iter().map(|s| s.data.len()).sum()
    }

    /// The element type of every row when there is only one.
    pub fn single_dtype(&self) -> Option<GgmlType> {
        match self.segments.as_slice() {
            [only] => Some(only.dtype),
            _ => None,
        }
    }

    /// The segment holding row `r`, and `r`'s index inside it.
    fn locate(&self, mut r: usize) -> Option<(&RowSegment, usize)> {
        for seg in &self.segments {
            if r < seg.rows {
                return Some((seg, r));
            }
            r -= seg.rows;
        }
        None
    }

    /// Row `r` dequantised into `out[..k]`.
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let (seg, i) = self
            .locate(r)
            .with_context(|| format!("row {r} of a matrix of {} rows", self.n()))?;
        ensure!(
            out.len() >= self.k,
            "row buffer of {} < {}",
            out.len(),
            self.k
        );
        let rb = row_bytes(seg.dtype, self.k)?;
        dequantize(
            seg.dtype,
            &seg.data[i * rb..(i + 1) * rb],
            &mut out[..self.k],
        )
    }

    /// The whole matrix in f32, row-major `[n, k]` (for backends that do not compute on blocks).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.n() * self.k];
        let mut at = 0;
        for seg in &self.segments {
            let len = seg.rows * self.k;
            dequantize(seg.dtype, &seg.data, &mut out[at..at + len])?;
            at += len;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::quant::quantize;

    fn values(len: usize, salt: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 37 + salt * 11) % 23) as f32 - 11.0) / 7.0)
            .collect()
    }

    fn matrix(dtype: GgmlType, n: usize, k: usize, salt: usize) -> (QuantMatrix, Vec<f32>) {
        let data = quantize(dtype, &values(n * k, salt)).unwrap();
        let m = QuantMatrix::new(dtype, data, n, k).unwrap();
        let f = m.to_f32().unwrap();
        (m, f)
    }

    #[test]
    fn stacked_rows_dequantise_in_order() {
        let (a, fa) = matrix(GgmlType::Q8_0, 3, 64, 1);
        let (b, fb) = matrix(GgmlType::Q4_1, 2, 64, 2);
        let (c, fc) = matrix(GgmlType::Q4_1, 4, 64, 3);
        let s = QuantMatrix::stack(vec![a, b, c]).unwrap();
        assert_eq!((s.n(), s.k(), s.segments().len()), (9, 64, 2));
        let want: Vec<f32> = [fa, fb, fc].concat();
        assert_eq!(s.to_f32().unwrap(), want);
        let mut row = vec![0.0; 64];
        for r in 0..9 {
            s.row_into(r, &mut row).unwrap();
            assert_eq!(row, want[r * 64..(r + 1) * 64]);
        }
        assert!(s.row_into(9, &mut row).is_err());
    }

    #[test]
    fn rejects_wrong_sizes() {
        assert!(QuantMatrix::new(GgmlType::Q8_0, vec![0; 34], 1, 33).is_err());
        assert!(QuantMatrix::new(GgmlType::Q8_0, vec![0; 33], 1, 32).is_err());
        let (a, _) = matrix(GgmlType::Q8_0, 1, 64, 1);
        let (b, _) = matrix(GgmlType::Q8_0, 1, 32, 1);
        assert!(QuantMatrix::stack(vec![a, b]).is_err());
    }
}
