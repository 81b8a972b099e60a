//! GGML tensor element types and their conversion to `f32`; [`matrix`] keeps a weight in its blocks.
//!
//! GGUF files store weights either as plain floats or in block-quantised formats: a block of 32
//! elements with one scale ([`legacy`], [`iq4`]'s IQ4_NL) or a 256-element super-block of
//! sub-blocks with their own small scales ([`kquants`], IQ4_XS). This module names the types,
//! knows their block sizes, and dispatches to the per-family decoders; the reference quantisers
//! (ggml's rounding) exist for the types tests and the GGUF writer encode.
//!
//! All reads take bytes from slices, never casts: tensor data in a memory-mapped GGUF file sits at
//! arbitrary offsets, so `f16` values need not be 2-byte aligned.

use anyhow::{bail, ensure, Result};
use half::{bf16, f16};

mod iq4;
mod kquants;
mod legacy;
pub mod matrix;
mod random_blocks;

pub use random_blocks::random_blocks;

/// Elements per block of the 32-element types.
const QK: usize = 32;
/// Elements per super-block of the K-quants and IQ4_XS.
const QK_K: usize = 256;

/// A GGML tensor element type that tandem can dequantise.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ4_NL,
    IQ4_XS,
}

/// Well-known ggml type ids we do not support, so an error can say what the file contains.
const UNSUPPORTED_TYPES: &[(u32, &str)] = &[
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
    (40, "NVFP4"),
];

impl GgmlType {
    /// Every supported type, for error messages and tests.
    pub const ALL: [GgmlType; 17] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ4_NL,
        GgmlType::IQ4_XS,
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
                 (re-quantise the model to one of these, e.g. Q4_K_M, Q6_K or Q8_0)"
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
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q8_1 => 9,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::Q8_K => 15,
            GgmlType::IQ4_NL => 20,
            GgmlType::IQ4_XS => 23,
            GgmlType::BF16 => 30,
        }
    }

    /// Number of elements in one block (1 for the plain float types).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::IQ4_NL => QK,
            GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::Q8_K
            | GgmlType::IQ4_XS => QK_K,
        }
    }

    /// Number of bytes one block occupies.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 | GgmlType::IQ4_NL => 2 + QK / 2,
            GgmlType::Q4_1 => 4 + QK / 2,
            GgmlType::Q5_0 => 2 + 4 + QK / 2,
            GgmlType::Q5_1 => 4 + 4 + QK / 2,
            GgmlType::Q8_0 => 2 + QK,
            GgmlType::Q8_1 => 4 + QK,
            // scales, 2-bit codes, d, dmin
            GgmlType::Q2_K => QK_K / 16 + QK_K / 4 + 4,
            // high bits, 2-bit codes, 12 packed scales, d
            GgmlType::Q3_K => QK_K / 8 + QK_K / 4 + 12 + 2,
            // d, dmin, 12 packed scales, 4-bit codes
            GgmlType::Q4_K => 4 + 12 + QK_K / 2,
            // d, dmin, 12 packed scales, fifth bits, 4-bit codes
            GgmlType::Q5_K => 4 + 12 + QK_K / 8 + QK_K / 2,
            // low nibbles, high pairs, 16 scales, d
            GgmlType::Q6_K => QK_K / 2 + QK_K / 4 + QK_K / 16 + 2,
            // f32 d, codes, 16 i16 partial sums
            GgmlType::Q8_K => 4 + QK_K + 2 * (QK_K / 16),
            // d, high scale bits, low scale bits, 4-bit codes
            GgmlType::IQ4_XS => 2 + 2 + QK_K / 64 + QK_K / 2,
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

    /// The types [`quantize`] can encode.
    pub const QUANTISABLE: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ];
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
    let block_fn: fn(&[u8], &mut [f32]) = match dtype {
        GgmlType::F32 => |b, o| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, o| o[0] = read_f16(b, 0),
        GgmlType::BF16 => |b, o| o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q4_0 => legacy::dequant_q4_0,
        GgmlType::Q4_1 => legacy::dequant_q4_1,
        GgmlType::Q5_0 => legacy::dequant_q5_0,
        GgmlType::Q5_1 => legacy::dequant_q5_1,
        GgmlType::Q8_0 => legacy::dequant_q8_0,
        GgmlType::Q8_1 => legacy::dequant_q8_1,
        GgmlType::Q2_K => kquants::dequant_q2_k,
        GgmlType::Q3_K => kquants::dequant_q3_k,
        GgmlType::Q4_K => kquants::dequant_q4_k,
        GgmlType::Q5_K => kquants::dequant_q5_k,
        GgmlType::Q6_K => kquants::dequant_q6_k,
        GgmlType::Q8_K => kquants::dequant_q8_k,
        GgmlType::IQ4_NL => iq4::dequant_iq4_nl,
        GgmlType::IQ4_XS => iq4::dequant_iq4_xs,
    };
    src.chunks_exact(dtype.block_bytes())
        .zip(out.chunks_exact_mut(dtype.block_size()))
        .for_each(|(b, o)| block_fn(b, o));
    Ok(())
}

/// Encodes `values` as `dtype` with ggml's reference rounding (the inverse of [`dequantize`],
/// up to quantisation error). An error if `dtype` has no reference quantiser here (see
/// [`GgmlType::QUANTISABLE`]) or `values.len()` is not a whole number of blocks.
pub fn quantize(dtype: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    let block_fn: fn(&[f32], &mut Vec<u8>) = match dtype {
        GgmlType::F32 => |v, out| out.extend_from_slice(&v[0].to_le_bytes()),
        GgmlType::F16 => |v, out| out.extend_from_slice(&f16::from_f32(v[0]).to_le_bytes()),
        GgmlType::BF16 => |v, out| out.extend_from_slice(&bf16::from_f32(v[0]).to_le_bytes()),
        GgmlType::Q4_0 => legacy::quant_q4_0,
        GgmlType::Q4_1 => legacy::quant_q4_1,
        GgmlType::Q5_0 => legacy::quant_q5_0,
        GgmlType::Q5_1 => legacy::quant_q5_1,
        GgmlType::Q8_0 => legacy::quant_q8_0,
        GgmlType::Q8_1
        | GgmlType::Q2_K
        | GgmlType::Q3_K
        | GgmlType::Q4_K
        | GgmlType::Q5_K
        | GgmlType::Q6_K
        | GgmlType::Q8_K
        | GgmlType::IQ4_NL
        | GgmlType::IQ4_XS => bail!(
            "tandem has no {dtype:?} quantiser (it only decodes {dtype:?}); it can encode {:?}",
            GgmlType::QUANTISABLE
        ),
    };
    let mut out = Vec::with_capacity(dtype.bytes_for(values.len())?);
    values
        .chunks_exact(dtype.block_size())
        .for_each(|b| block_fn(b, &mut out));
    Ok(out)
}

/// Reads the little-endian `f16` at byte `at` of `b` as `f32` (callers pass whole blocks, so the
/// two bytes are always there).
fn read_f16(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn deq(dtype: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
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
        let e = GgmlType::from_u32(16).unwrap_err().to_string();
        assert!(
            e.contains("IQ2_XXS") && e.contains("16") && e.contains("Q4_K=12"),
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
            (GgmlType::Q5_0, 0.3),
            (GgmlType::Q5_1, 0.15),
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

    #[test]
    fn types_without_a_quantiser_say_so() {
        for t in GgmlType::ALL {
            let r = quantize(t, &vec![0.5; t.block_size()]);
            if GgmlType::QUANTISABLE.contains(&t) {
                assert_eq!(r.unwrap().len(), t.block_bytes(), "{t:?}");
            } else {
                let e = r.unwrap_err().to_string();
                assert!(e.contains(&format!("no {t:?} quantiser")), "{e}");
            }
        }
    }

    #[test]
    fn block_sizes_match_the_format() {
        let bytes_per_block: Vec<(GgmlType, usize, usize)> = GgmlType::ALL
            .iter()
            .map(|t| (*t, t.block_size(), t.block_bytes()))
            .collect();
        // Sizes from the format's description (ggml's block structs).
        for (t, n, b) in [
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q8_1, 32, 36),
            (GgmlType::Q2_K, 256, 84),
            (GgmlType::Q3_K, 256, 110),
            (GgmlType::Q4_K, 256, 144),
            (GgmlType::Q5_K, 256, 176),
            (GgmlType::Q6_K, 256, 210),
            (GgmlType::Q8_K, 256, 292),
            (GgmlType::IQ4_NL, 32, 18),
            (GgmlType::IQ4_XS, 256, 136),
        ] {
            assert!(bytes_per_block.contains(&(t, n, b)), "{t:?}");
        }
    }
}
