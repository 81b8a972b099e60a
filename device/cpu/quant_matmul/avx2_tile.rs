//! Register-tiled AVX2 kernels for batches of tokens: `R` weight rows × `T` tokens per pass over
//! the super-blocks, for Q4_K and Q6_K.
//!
//! Per super-block and row the codes are unpacked and the scales decoded once, then meet the `T`
//! tokens' activation blocks, which stay in L1 for the `R` rows of the tile. The per-token terms
//! that the one-row kernels of [`super::avx2_k`] take in scalar code (Q4_K's minimums, Q6_K's
//! `-32`, both through the activation's per-16 sums) are one `madd` of the 16 sums against the
//! 16 per-sub-block factors here, which is what a batch spends most of its time on otherwise.
//! The integer sums are the same as the portable kernels'; only f32 rounding differs.

use std::arch::x86_64::*;

use super::activations::{Q8KRow, QKK};
use super::avx2::{f16_at, hsum};
use super::avx2_k::q4_k_chunk;

/// Q4_K's eight 6-bit scales and eight 6-bit minimums, one per byte, from the 12 packed bytes
/// at `p`: sub-blocks 0..4 hold them in the low six bits of bytes 0..4 (scales) and 4..8
/// (minimums); sub-blocks 4..8 take their low four bits from the nibbles of bytes 8..12 and
/// their top two from the top bits of bytes 0..4 (scales) and 4..8 (minimums).
#[inline(always)]
unsafe fn k4_scales_mins(p: *const u8) -> (u64, u64) {
    let word =
        |i: usize| u32::from_le_bytes([*p.add(i), *p.add(i + 1), *p.add(i + 2), *p.add(i + 3)]);
    let (w0, w1, w2) = (word(0), word(4), word(8));
    let low6 = 0x3F3F_3F3F;
    let (low4, top2) = (0x0F0F_0F0F, 0x0303_0303);
    let sc_lo = w0 & low6;
    let mn_lo = w1 & low6;
    let sc_hi = (w2 & low4) | (((w0 >> 6) & top2) << 4);
    let mn_hi = ((w2 >> 4) & low4) | (((w1 >> 6) & top2) << 4);
    (
        u64::from(sc_lo) | (u64::from(sc_hi) << 32),
        u64::from(mn_lo) | (u64::from(mn_hi) << 32),
    )
}

/// Byte `j` of `bytes` as an `i16` broadcast to every lane.
#[inline(always)]
unsafe fn splat_byte(bytes: u64, j: usize) -> __m256i {
    _mm256_set1_epi16(((bytes >> (8 * j)) & 0xFF) as i16)
}

/// `R` rows of Q4_K (rows `row_bytes` apart in `w`) against `T` tokens.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` must hold `R` rows of `a[0].d.len()` 144-byte
/// super-blocks, and every `a[t]` that many super-blocks of codes and 16 sums each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_k_tile<const R: usize, const T: usize>(
    w: &[u8],
    row_bytes: usize,
    a: &[Q8KRow<'_>; T],
) -> [[f32; T]; R] {
    let blocks = a[0].d.len();
    debug_assert!(w.len() >= (R - 1) * row_bytes + blocks * 144);
    debug_assert!(a
        .iter()
        .all(|r| r.qs.len() >= blocks * QKK && r.bsums.len() >= blocks * 16));
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..blocks {
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = w.as_ptr().add(r * row_bytes + b * 144);
            let (sc, mn) = k4_scales_mins(p.add(4));
            let mut sumi = [_mm256_setzero_si256(); T];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(raw, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
                let (s_lo, s_hi) = (splat_byte(sc, 2 * c), splat_byte(sc, 2 * c + 1));
                for t in 0..T {
                    let qa = a[t].qs.as_ptr().add(b * QKK + 64 * c);
                    sumi[t] = _mm256_add_epi32(sumi[t], q4_k_chunk(lo, hi, s_lo, s_hi, qa));
                }
            }
            // Each minimum twice, matching the two 16-element sums of its sub-block.
            let m8 = _mm_cvtsi64_si128(mn as i64);
            let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
            let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
            for t in 0..T {
                let bs = _mm256_loadu_si256(a[t].bsums.as_ptr().add(b * 16) as *const __m256i);
                let msum = _mm256_madd_epi16(bs, mins);
                let da = a[t].d[b];
                let v =
                    _mm256_fmadd_ps(_mm256_set1_ps(d * da), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
                acc[t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * da), _mm256_cvtepi32_ps(msum), v);
            }
        }
    }
    let mut out = [[0f32; T]; R];
    for (o, acc) in out.iter_mut().zip(&acc) {
        for (v, a) in o.iter_mut().zip(acc) {
            *v = hsum(*a);
        }
    }
    out
}

/// `R` rows of Q6_K (rows `row_bytes` apart in `w`) against `T` tokens. Codes are taken
/// unsigned (0..64) and the `-32` applied as `32 Σ_s scale_s · bsum_s`.
///
/// # Safety
/// As [`q4_k_tile`], with 210-byte super-blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k_tile<const R: usize, const T: usize>(
    w: &[u8],
    row_bytes: usize,
    a: &[Q8KRow<'_>; T],
) -> [[f32; T]; R] {
    let blocks = a[0].d.len();
    debug_assert!(w.len() >= (R - 1) * row_bytes + blocks * 210);
    debug_assert!(a
        .iter()
        .all(|r| r.qs.len() >= blocks * QKK && r.bsums.len() >= blocks * 16));
    let mask4 = _mm256_set1_epi8(0x0F);
    let mask2 = _mm256_set1_epi8(0x03);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..blocks {
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = w.as_ptr().add(r * row_bytes + b * 210);
            let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
            let mut sumi = [_mm256_setzero_si256(); T];
            for h in 0..2 {
                let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
                let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
                for s in 0..4 {
                    // Run s of this half: low nibbles of ql0 / ql1, then their high nibbles;
                    // its high parts are bits 2s, 2s+1 of qh.
                    let ql = if s % 2 == 0 { ql0 } else { ql1 };
                    let low = if s < 2 {
                        _mm256_and_si256(ql, mask4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(ql, 4), mask4)
                    };
                    let shift = _mm_cvtsi32_si128(2 * s as i32);
                    let high = _mm256_and_si256(_mm256_srl_epi16(qh, shift), mask2);
                    let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                    let sub = 8 * h + 2 * s;
                    let sc = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(*p.add(192 + sub + 1) as i8)),
                        _mm_set1_epi16(i16::from(*p.add(192 + sub) as i8)),
                    );
                    for t in 0..T {
                        let qa = a[t].qs.as_ptr().add(b * QKK + 128 * h + 32 * s);
                        let av = _mm256_loadu_si256(qa as *const __m256i);
                        let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(q, av), sc);
                        sumi[t] = _mm256_add_epi32(sumi[t], prod);
                    }
                }
            }
            let d = f16_at(p.add(208));
            for t in 0..T {
                let bs = _mm256_loadu_si256(a[t].bsums.as_ptr().add(b * 16) as *const __m256i);
                let offset = _mm256_slli_epi32(_mm256_madd_epi16(bs, scales), 5);
                let s = _mm256_sub_epi32(sumi[t], offset);
                acc[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(d * a[t].d[b]), _mm256_cvtepi32_ps(s), acc[t]);
            }
        }
    }
    let mut out = [[0f32; T]; R];
    for (o, acc) in out.iter_mut().zip(&acc) {
        for (v, a) in o.iter_mut().zip(acc) {
            *v = hsum(*a);
        }
    }
    out
}
