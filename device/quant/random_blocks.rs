//! Random but valid blocks of any supported type, for tests of code that consumes quantised
//! weights (dequantisers, block kernels) without a quantiser for that type.

use half::{bf16, f16};

use super::GgmlType;

/// `n_blocks` blocks of `dtype` from `seed`: random codes and scale bits, with every floating
/// field a finite value of moderate size (scales `|d|` in [1e-3, 1e-1], plain floats in
/// [-2, 2]) so that dequantised values and their products stay finite.
pub fn random_blocks(dtype: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(n_blocks * dtype.block_bytes());
    for _ in 0..n_blocks {
        let start = out.len();
        out.extend((0..dtype.block_bytes()).map(|_| rng.next() as u8));
        fix_floats(dtype, &mut out[start..], &mut rng);
    }
    out
}

/// Overwrites the floating-point fields of one block with finite values.
fn fix_floats(dtype: GgmlType, block: &mut [u8], rng: &mut SplitMix64) {
    match dtype {
        GgmlType::F32 => block.copy_from_slice(&rng.plain().to_le_bytes()),
        GgmlType::F16 => block.copy_from_slice(&f16::from_f32(rng.plain()).to_le_bytes()),
        GgmlType::BF16 => block.copy_from_slice(&bf16::from_f32(rng.plain()).to_le_bytes()),
        GgmlType::Q8_K => {
            block[..4].copy_from_slice(&rng.scale().to_le_bytes());
            // The partial sums are what a valid block carries: sums of 16 codes each.
            for g in 0..16 {
                let sum: i16 = block[4 + 16 * g..4 + 16 * (g + 1)]
                    .iter()
                    .map(|q| i16::from(*q as i8))
                    .sum();
                block[260 + 2 * g..262 + 2 * g].copy_from_slice(&sum.to_le_bytes());
            }
        }
        GgmlType::Q8_1 => {
            let d = f16::from_f32(rng.scale());
            let sum: i32 = block[4..].iter().map(|q| i32::from(*q as i8)).sum();
            block[..2].copy_from_slice(&d.to_le_bytes());
            let s = f16::from_f32(d.to_f32() * sum as f32);
            block[2..4].copy_from_slice(&s.to_le_bytes());
        }
        _ => {
            for &at in f16_fields(dtype) {
                block[at..at + 2].copy_from_slice(&f16::from_f32(rng.scale()).to_le_bytes());
            }
        }
    }
}

/// Byte offsets of the `f16` scale fields (`d`, and `m` or `dmin`) in one block.
fn f16_fields(dtype: GgmlType) -> &'static [usize] {
    match dtype {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_1 | GgmlType::Q8_K => &[],
    }
}

/// Steele, Lea and Flood's SplitMix64: tiny, dependency-free, and good enough for test data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A scale of either sign with magnitude in [1e-3, 1e-1].
    fn scale(&mut self) -> f32 {
        let magnitude = 1e-3 + self.unit() * (1e-1 - 1e-3);
        if self.next() & 1 == 0 {
            magnitude
        } else {
            -magnitude
        }
    }

    /// A plain float in [-2, 2).
    fn plain(&mut self) -> f32 {
        self.unit() * 4.0 - 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::{dequantize, GgmlType};
    use super::*;

    #[test]
    fn every_type_gives_finite_varied_values() {
        for t in GgmlType::ALL {
            let bytes = random_blocks(t, 3, 7);
            assert_eq!(bytes.len(), 3 * t.block_bytes(), "{t:?}");
            let mut out = vec![0.0; 3 * t.block_size()];
            dequantize(t, &bytes, &mut out).unwrap();
            assert!(out.iter().all(|v| v.is_finite()), "{t:?}");
            let distinct = out.iter().any(|v| *v != out[0]);
            assert!(distinct, "{t:?}: all values equal");
            let max = out.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max < 1e3, "{t:?}: |x| up to {max}");
        }
    }

    #[test]
    fn scales_are_in_range() {
        for t in GgmlType::ALL {
            let bytes = random_blocks(t, 20, 3);
            for block in bytes.chunks_exact(t.block_bytes()) {
                for &at in f16_fields(t) {
                    let d = f16::from_le_bytes([block[at], block[at + 1]])
                        .to_f32()
                        .abs();
                    assert!((9.9e-4..=0.1001).contains(&d), "{t:?}: |d| = {d}");
                }
            }
        }
    }

    #[test]
    fn seeds_matter_and_repeat() {
        let a = random_blocks(GgmlType::Q4_K, 2, 1);
        assert_eq!(a, random_blocks(GgmlType::Q4_K, 2, 1));
        assert_ne!(a, random_blocks(GgmlType::Q4_K, 2, 2));
    }

    #[test]
    fn q8_k_sums_match_codes() {
        let b = random_blocks(GgmlType::Q8_K, 1, 5);
        let first: i16 = b[4..20].iter().map(|q| i16::from(*q as i8)).sum();
        assert_eq!(i16::from_le_bytes([b[260], b[261]]), first);
    }
}
