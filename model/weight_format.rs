//! In which form a model's weight matrices reach the backend: f32 rows, or GGML blocks.
//!
//! A quantised file's matrices can stay in their blocks all the way to a backend that computes on
//! them, so the model takes about its file size in memory; a float model's matrices can be
//! quantised to Q8_0 at load for the same saving. Norms and biases are always f32.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

use crate::device::backend::Backend;
use crate::device::quant::matrix::QuantMatrix;
use crate::device::quant::{quantize, GgmlType};

/// How weight matrices are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// A quantised tensor stays in its blocks; a float tensor becomes f32.
    #[default]
    Auto,
    /// Every tensor is expanded to f32 (the reference the other formats are checked against).
    F32,
    /// Like `Auto`, and float matrices are quantised to Q8_0 (those whose rows are not a whole
    /// number of Q8_0 blocks stay f32).
    Q8_0,
}

impl FromStr for WeightFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(WeightFormat::Auto),
            "f32" => Ok(WeightFormat::F32),
            "q8_0" => Ok(WeightFormat::Q8_0),
            _ => bail!("unknown weight format '{s}' (expected auto, f32 or q8_0)"),
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightFormat::Auto => "auto",
            WeightFormat::F32 => "f32",
            WeightFormat::Q8_0 => "q8_0",
        })
    }
}

/// A `[n, k]` weight matrix on the host, before it is uploaded.
#[derive(Debug, Clone, PartialEq)]
pub enum HostMatrix {
    F32 { data: Vec<f32>, n: usize, k: usize },
    Blocks(QuantMatrix),
}

impl HostMatrix {
    /// A float matrix in the form `format` asks for: f32, or Q8_0 blocks under
    /// [`WeightFormat::Q8_0`] when `k` is a whole number of blocks. `name` is for the log.
    pub fn from_f32(
        data: Vec<f32>,
        n: usize,
        k: usize,
        format: WeightFormat,
        name: &str,
    ) -> Result<Self> {
        if format != WeightFormat::Q8_0 {
            return Ok(HostMatrix::F32 { data, n, k });
        }
        if !k.is_multiple_of(GgmlType::Q8_0.block_size()) {
            tracing::info!(
                tensor = name,
                k,
                "rows are not whole Q8_0 blocks; the matrix stays f32"
            );
            return Ok(HostMatrix::F32 { data, n, k });
        }
        let bytes = quantize(GgmlType::Q8_0, &data)?;
        Ok(HostMatrix::Blocks(QuantMatrix::new(
            GgmlType::Q8_0,
            bytes,
            n,
            k,
        )?))
    }

    pub fn n(&self) -> usize {
        match self {
            HostMatrix::F32 { n, .. } => *n,
            HostMatrix::Blocks(m) => m.n(),
        }
    }

    /// The matrices one above the other (fused q|k|v, gate|up). All f32 parts give an f32
    /// matrix; otherwise every part becomes a block segment, an f32 part as an F32 segment.
    pub fn stack(parts: Vec<HostMatrix>) -> Result<Self> {
        if parts.iter().all(|p| matches!(p, HostMatrix::F32 { .. })) {
            let (mut all, mut rows, mut cols) = (Vec::new(), 0, None);
            for part in parts {
                if let HostMatrix::F32 { data, n, k } = part {
                    if cols.is_some_and(|c| c != k) {
                        bail!("stacking matrices of {k} and {} columns", cols.unwrap_or(0));
                    }
                    cols = Some(k);
                    rows += n;
                    all.extend(data);
                }
            }
            return Ok(HostMatrix::F32 {
                data: all,
                n: rows,
                k: cols.unwrap_or(0),
            });
        }
        let blocks = parts
            .into_iter()
            .map(HostMatrix::into_blocks)
            .collect::<Result<Vec<_>>>()?;
        Ok(HostMatrix::Blocks(QuantMatrix::stack(blocks)?))
    }

    fn into_blocks(self) -> Result<QuantMatrix> {
        match self {
            HostMatrix::Blocks(m) => Ok(m),
            HostMatrix::F32 { data, n, k } => {
                QuantMatrix::new(GgmlType::F32, quantize(GgmlType::F32, &data)?, n, k)
            }
        }
    }

    /// Counts the matrix into `footprint` and hands it to the backend.
    pub fn upload<B: Backend>(self, b: &B, footprint: &mut WeightFootprint) -> Result<B::Weight> {
        match self {
            HostMatrix::F32 { data, n, k } => {
                footprint.add_f32(data.len());
                b.upload_weight(&data, n, k)
            }
            HostMatrix::Blocks(m) => {
                for seg in m.segments() {
                    *footprint
                        .blocks
                        .entry(format!("{:?}", seg.dtype))
                        .or_default() += seg.data.len();
                }
                b.upload_quant_weight(m)
            }
        }
    }
}

/// What the loaded weights take on the host side, for the load log: bytes kept in blocks by
/// element type, and bytes in f32 (matrices, norms and biases).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightFootprint {
    pub blocks: BTreeMap<String, usize>,
    pub f32_bytes: usize,
}

impl WeightFootprint {
    pub fn add_f32(&mut self, elements: usize) {
        self.f32_bytes += elements * std::mem::size_of::<f32>();
    }

    pub fn total(&self) -> usize {
        self.f32_bytes + self.blocks.values().sum::<usize>()
    }
}

impl fmt::Display for WeightFootprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        for (dtype, bytes) in &self.blocks {
            write!(f, "{dtype} {:.1} MiB, ", mib(*bytes))?;
        }
        write!(
            f,
            "f32 {:.1} MiB; {:.1} MiB in all",
            mib(self.f32_bytes),
            mib(self.total())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 % 19) as f32 - 9.0) / 5.0)
            .collect()
    }

    #[test]
    fn parses_the_three_formats_and_rejects_others() {
        for f in [WeightFormat::Auto, WeightFormat::F32, WeightFormat::Q8_0] {
            assert_eq!(f.to_string().parse::<WeightFormat>().unwrap(), f);
        }
        assert!("q4_0".parse::<WeightFormat>().is_err());
    }

    #[test]
    fn q8_0_quantises_only_whole_blocks() {
        let m = HostMatrix::from_f32(values(4 * 64), 4, 64, WeightFormat::Q8_0, "w").unwrap();
        assert!(matches!(&m, HostMatrix::Blocks(q) if q.single_dtype() == Some(GgmlType::Q8_0)));
        let odd = HostMatrix::from_f32(values(4 * 40), 4, 40, WeightFormat::Q8_0, "w").unwrap();
        assert!(matches!(odd, HostMatrix::F32 { n: 4, k: 40, .. }));
        let auto = HostMatrix::from_f32(values(4 * 64), 4, 64, WeightFormat::Auto, "w").unwrap();
        assert!(matches!(auto, HostMatrix::F32 { .. }));
    }

    #[test]
    fn stacking_mixed_parts_keeps_every_row() {
        let f = values(2 * 64);
        let q = HostMatrix::from_f32(values(3 * 64), 3, 64, WeightFormat::Q8_0, "q").unwrap();
        let HostMatrix::Blocks(qm) = &q else {
            panic!("expected blocks")
        };
        let want: Vec<f32> = [qm.to_f32().unwrap(), f.clone()].concat();
        let fpart = HostMatrix::F32 {
            data: f,
            n: 2,
            k: 64,
        };
        let HostMatrix::Blocks(s) = HostMatrix::stack(vec![q, fpart]).unwrap() else {
            panic!("a mixed stack is blocks")
        };
        assert_eq!((s.n(), s.segments().len()), (5, 2));
        assert_eq!(s.to_f32().unwrap(), want);
        let a = HostMatrix::F32 {
            data: values(64),
            n: 1,
            k: 64,
        };
        let b = HostMatrix::F32 {
            data: values(32),
            n: 1,
            k: 32,
        };
        assert!(HostMatrix::stack(vec![a, b]).is_err());
    }
}
