//! GGML tensor element types and their conversion to `f32`; [`matrix`] keeps a weight in its blocks.
//!
//! GGUF files store weights either as plain floats or in block-quantised formats, where a block of
//! 32 elements shares one scale (and for `Q4_1` one offset). This module knows the byte layout of
//! the types we support, turns raw bytes into `f32`, and has the matching reference quantisers
//! (the same rounding as ggml's `quantize_row_*_ref`) so tests can build quantised files.
//!
//! All reads use `from_le_bytes` on byte slices, never casts: tensor data in a memory-mapped GGUF
//! file sits at arbitrary offsets, so `f16` values need not be 2-byte aligned.

use anyhow::{bail, ensure, Result};
use half::{bf16, f16};

pub mod matrix;

/// Elements per block of the quantised types.
const QK: usize = 32;

/// A GGML tensor element type that tandem can dequantise.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    /// Blocks of 32: an `f16` scale `d`, then 16 bytes of 4-bit values `q`; `x = (q - 8) * d`.
    Q4_0,
    /// Blocks of 32: `f16` scale `d`, `f16` minimum `m`, 16 bytes of 4-bit `q`; `x = q * d + m`.
    Q4_1,
    /// Blocks of 32: an `f16` scale `d`, then 32 signed bytes `q`; `x = q * d`.
    Q8_0,
}

/// Well-known ggml type ids we do not support, so an error can say what the file contains.
const UNSUPPORTED_TYPES: &[(u32, &str)] = &[
    (6, "Q5_0"),
    (7, "Q5_1"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
];

impl GgmlType {
    /// Every supported type, for error messages and tests.
    pub const ALL: [GgmlType; 6] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
    ];

    /// Maps a ggml type id (as stored in GGUF tensor infos) to a supported type.
    pub fn from_u32(id: u32) -> Result<Self> {
        if let Some(t) = Self::ALL.iter().find(|t| t.id() == id) {
            return Ok(*t);
        }
        let known: Vec<String> = Self::ALL
            .iter()
            .map(|t| format!("{t:?}={}", t.id()))
            .collect();
        let known = known.join(", ");
        match UNSUPPORTED_TYPES.iter().find(|(i, _)| *i == id) {
            Some((_, name)) => bail!(
                "ggml tensor type {name} (id {id}) is not supported; supported types: {known} \
                 (re-quantise the model to one of these, e.g. Q8_0 or Q4_0)"
            ),
            None => bail!("unknown ggml tensor type id {id}; supported types: {known}"),
        }
    }

    /// The ggml type id of this type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
        }
    }

    /// Number of elements in one block (1 for the plain float types).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => QK,
        }
    }

    /// Number of bytes one block occupies.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 2 + QK / 2,
            GgmlType::Q4_1 => 4 + QK / 2,
            GgmlType::Q8_0 => 2 + QK,
        }
    }

    /// Bytes needed to store `n_elements` values; an error if `n_elements` is not a whole number
    /// of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: usize) -> Result<usize> {
        let bs = self.block_size();
        ensure!(
            n_elements.is_multiple_of(bs),
            "{n_elements} elements is not a multiple of the {self:?} block size {bs}"
        );
        (n_elements / bs)
            .checked_mul(self.block_bytes())
            .ok_or_else(|| anyhow::anyhow!("{n_elements} {self:?} elements overflow usize bytes"))
    }
}

/// Decodes `src` (raw little-endian tensor bytes of type `dtype`) into `out`.
///
/// `out.len()` is the element count; `src` must hold exactly that many elements' bytes.
pub fn dequantize(dtype: GgmlType, src: &[u8], out: &mut [f32]) -> Result<()> {
    let need = dtype.bytes_for(out.len())?;
    ensure!(
        src.len() == need,
        "{dtype:?} data for {} elements should be {need} bytes, got {}",
        out.len(),
        src.len()
    );
    let blocks = src.chunks_exact(dtype.block_bytes());
    match dtype {
        GgmlType::F32 => blocks
            .zip(out)
            .for_each(|(b, o)| *o = f32::from_le_bytes(arr(b))),
        GgmlType::F16 => blocks.zip(out).for_each(|(b, o)| *o = read_f16(b, 0)),
        GgmlType::BF16 => blocks
            .zip(out)
            .for_each(|(b, o)| *o = bf16::from_le_bytes(arr(b)).to_f32()),
        GgmlType::Q8_0 => blocks
            .zip(out.chunks_exact_mut(QK))
            .for_each(|(b, o)| dequant_q8_0(b, o)),
        GgmlType::Q4_0 => blocks
            .zip(out.chunks_exact_mut(QK))
            .for_each(|(b, o)| dequant_q4(b, read_f16(b, 0), -8.0 * read_f16(b, 0), 2, o)),
        GgmlType::Q4_1 => blocks
            .zip(out.chunks_exact_mut(QK))
            .for_each(|(b, o)| dequant_q4(b, read_f16(b, 0), read_f16(b, 2), 4, o)),
    }
    Ok(())
}

/// Encodes `values` as `dtype` with ggml's reference rounding (the inverse of [`dequantize`],
/// up to quantisation error). An error if `values.len()` is not a whole number of blocks.
pub fn quantize(dtype: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(dtype.bytes_for(values.len())?);
    match dtype {
        GgmlType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => values
            .chunks_exact(QK)
            .for_each(|b| quant_q8_0(b, &mut out)),
        GgmlType::Q4_0 => values
            .chunks_exact(QK)
            .for_each(|b| quant_q4_0(b, &mut out)),
        GgmlType::Q4_1 => values
            .chunks_exact(QK)
            .for_each(|b| quant_q4_1(b, &mut out)),
    }
    Ok(out)
}

/// Copies a slice into a fixed-size array, zero-padding if it is short (callers pass slices of
/// exactly the right length, checked by `bytes_for`, so the padding never applies).
fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.iter_mut().zip(b).for_each(|(d, s)| *d = *s);
    a
}

/// Reads the little-endian `f16` at byte `at` of `b` as `f32`.
fn read_f16(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes(arr(b.get(at..).unwrap_or_default())).to_f32()
}

fn dequant_q8_0(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, 0);
    let qs = block.get(2..).unwrap_or_default();
    out.iter_mut()
        .zip(qs)
        .for_each(|(o, q)| *o = f32::from(*q as i8) * d);
}

/// Shared by Q4_0 (`m = -8 d`) and Q4_1: `x = q * d + m`; nibbles start at byte `header`.
fn dequant_q4(block: &[u8], d: f32, m: f32, header: usize, out: &mut [f32]) {
    let qs = block.get(header..).unwrap_or_default();
    let (lo, hi) = out.split_at_mut(QK / 2);
    for ((q, l), h) in qs.iter().zip(lo).zip(hi) {
        *l = f32::from(q & 0x0F) * d + m;
        *h = f32::from(q >> 4) * d + m;
    }
}

fn quant_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

fn quant_q4_0(x: &[f32], out: &mut Vec<u8>) {
    // The value with the largest magnitude, sign kept, maps to -8.
    let max = x
        .iter()
        .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
    push_nibbles(x, f16::from_f32(d).to_le_bytes().to_vec(), q, out);
}

fn quant_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let min = x.iter().fold(f32::INFINITY, |a, v| a.min(*v));
    let max = x.iter().fold(f32::NEG_INFINITY, |a, v| a.max(*v));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
    let mut header = f16::from_f32(d).to_le_bytes().to_vec();
    header.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    push_nibbles(x, header, q, out);
}

/// Appends `header` then the 4-bit codes: element `j` in the low nibble of byte `j`, element
/// `j + 16` in its high nibble.
fn push_nibbles(x: &[f32], header: Vec<u8>, q: impl Fn(f32) -> u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&header);
    let (lo, hi) = x.split_at(QK / 2);
    out.extend(lo.iter().zip(hi).map(|(l, h)| q(*l) | (q(*h) << 4)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deq(dtype: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![0.0; n];
        dequantize(dtype, src, &mut out).unwrap();
        out
    }

    #[test]
    fn type_ids_round_trip() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_u32(t.id()).unwrap(), t);
        }
        assert_eq!(GgmlType::from_u32(30).unwrap(), GgmlType::BF16);
    }

    #[test]
    fn unknown_types_are_named() {
        let e = GgmlType::from_u32(12).unwrap_err().to_string();
        assert!(
            e.contains("Q4_K") && e.contains("12") && e.contains("Q8_0"),
            "{e}"
        );
        let e = GgmlType::from_u32(999).unwrap_err().to_string();
        assert!(e.contains("999") && e.contains("F32=0"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::Q8_0.bytes_for(64).unwrap(), 68);
        assert_eq!(GgmlType::Q4_0.bytes_for(32).unwrap(), 18);
        assert_eq!(GgmlType::Q4_1.bytes_for(32).unwrap(), 20);
        assert_eq!(GgmlType::BF16.bytes_for(3).unwrap(), 6);
        assert!(GgmlType::Q4_0.bytes_for(33).is_err());
        assert!(GgmlType::F32.bytes_for(usize::MAX).is_err());
    }

    #[test]
    fn plain_floats() {
        let src: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(deq(GgmlType::F32, &src, 2), [1.5, -2.0]);
        // f16 0x3C00 = 1.0, 0xC000 = -2.0; bf16 0x3FC0 = 1.5.
        assert_eq!(
            deq(GgmlType::F16, &[0x00, 0x3C, 0x00, 0xC0], 2),
            [1.0, -2.0]
        );
        assert_eq!(deq(GgmlType::BF16, &[0xC0, 0x3F], 1), [1.5]);
    }

    #[test]
    fn q8_0_block() {
        let mut src = vec![0x00, 0x38]; // f16 0.5
        src.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let want: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        assert_eq!(deq(GgmlType::Q8_0, &src, 32), want);
    }

    #[test]
    fn q4_0_block() {
        let mut src = vec![0x00, 0x40]; // f16 2.0
        src.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = deq(GgmlType::Q4_0, &src, 32);
        for j in 0..16 {
            assert_eq!(got[j], (j as f32 - 8.0) * 2.0);
            assert_eq!(got[j + 16], (7.0 - j as f32) * 2.0);
        }
    }

    #[test]
    fn q4_1_block() {
        let mut src = vec![0x00, 0x38, 0x00, 0xBC]; // d = 0.5, m = -1.0
        src.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = deq(GgmlType::Q4_1, &src, 32);
        for j in 0..16 {
            assert_eq!(got[j], j as f32 * 0.5 - 1.0);
            assert_eq!(got[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn unaligned_source_is_fine() {
        let mut buf = vec![0u8];
        buf.extend_from_slice(&quantize(GgmlType::F16, &[3.0, -0.25]).unwrap());
        assert_eq!(deq(GgmlType::F16, &buf[1..], 2), [3.0, -0.25]);
    }

    #[test]
    fn quantize_round_trips_within_error() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 30.0) / 7.0)
            .collect();
        for (t, tol) in [
            (GgmlType::F32, 0.0),
            (GgmlType::F16, 3e-3),
            (GgmlType::BF16, 3e-2),
            (GgmlType::Q8_0, 0.04),
            (GgmlType::Q4_0, 0.6),
            (GgmlType::Q4_1, 0.3),
        ] {
            let bytes = quantize(t, &x).unwrap();
            let y = deq(t, &bytes, x.len());
            let err = x
                .iter()
                .zip(&y)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= tol, "{t:?}: max error {err} > {tol}");
        }
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let mut out = vec![0.0; 32];
        let e = dequantize(GgmlType::Q8_0, &[0; 33], &mut out).unwrap_err();
        assert!(e.to_string().contains("34 bytes, got 33"), "{e}");
        assert!(dequantize(GgmlType::Q4_0, &[0; 18], &mut out[..31]).is_err());
        assert!(quantize(GgmlType::Q4_1, &[0.0; 31]).is_err());
    }
}
