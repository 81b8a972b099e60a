//! AVX2 block dot products for Q4_K and Q6_K, the bulk of a Q4_K_M file (the other K-quants use
//! the portable kernels). Same integer sums as [`super::portable_k`]: codes × activation codes
//! by `maddubs` (at most 2·63·127 per i16 pair), weighted by the sub-block scales in `madd`,
//! summed in i32 per super-block, then scaled in f32.

use std::arch::x86_64::*;

use super::activations::{Q8KRow, QKK};
use super::avx2::{f16_at, hsum};
use super::portable_k::k4_scale_min;

/// Q4_K: 144-byte super-blocks (`d`, `dmin`, 12 scale bytes, 128 code bytes).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    let blocks = a.d.len();
    debug_assert!(w.len() >= blocks * 144 && a.qs.len() >= blocks * QKK);
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut minus = 0f32;
    for b in 0..blocks {
        let p = w.as_ptr().add(b * 144);
        let packed = std::slice::from_raw_parts(p.add(4), 12);
        let qa = a.qs.as_ptr().add(b * QKK);
        let bs = &a.bsums[b * 16..b * 16 + 16];
        let mut sumi = _mm256_setzero_si256();
        let mut mins = 0i32;
        for c in 0..4 {
            let (sc_lo, mn_lo) = k4_scale_min(packed, 2 * c);
            let (sc_hi, mn_hi) = k4_scale_min(packed, 2 * c + 1);
            let raw = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
            let lo = _mm256_and_si256(raw, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
            let a_lo = _mm256_loadu_si256(qa.add(64 * c) as *const __m256i);
            let a_hi = _mm256_loadu_si256(qa.add(64 * c + 32) as *const __m256i);
            let p_lo = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, a_lo),
                _mm256_set1_epi16(i16::from(sc_lo)),
            );
            let p_hi = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, a_hi),
                _mm256_set1_epi16(i16::from(sc_hi)),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
            mins += i32::from(mn_lo) * (i32::from(bs[4 * c]) + i32::from(bs[4 * c + 1]))
                + i32::from(mn_hi) * (i32::from(bs[4 * c + 2]) + i32::from(bs[4 * c + 3]));
        }
        let da = a.d[b];
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(f16_at(p) * da),
            _mm256_cvtepi32_ps(sumi),
            acc,
        );
        minus += f16_at(p.add(2)) * da * mins as f32;
    }
    hsum(acc) - minus
}

/// Q6_K: 210-byte super-blocks (128 bytes low nibbles, 64 bytes 2-bit high parts, 16 signed
/// scales, `d`). Codes are taken unsigned (0..64) and the `-32` applied through the activation
/// sums.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    let blocks = a.d.len();
    debug_assert!(w.len() >= blocks * 210 && a.qs.len() >= blocks * QKK);
    let mask4 = _mm256_set1_epi8(0x0F);
    let mask2 = _mm256_set1_epi8(0x03);
    let mut acc = _mm256_setzero_ps();
    for b in 0..blocks {
        let p = w.as_ptr().add(b * 210);
        let scales = std::slice::from_raw_parts(p.add(192) as *const i8, 16);
        let qa = a.qs.as_ptr().add(b * QKK);
        let bs = &a.bsums[b * 16..b * 16 + 16];
        let mut sumi = _mm256_setzero_si256();
        let mut offset = 0i32;
        for (&sc, &bsum) in scales.iter().zip(bs) {
            offset += i32::from(sc) * i32::from(bsum);
        }
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
            let lows = [
                _mm256_and_si256(ql0, mask4),
                _mm256_and_si256(ql1, mask4),
                _mm256_and_si256(_mm256_srli_epi16(ql0, 4), mask4),
                _mm256_and_si256(_mm256_srli_epi16(ql1, 4), mask4),
            ];
            let highs = [
                _mm256_and_si256(qh, mask2),
                _mm256_and_si256(_mm256_srli_epi16(qh, 2), mask2),
                _mm256_and_si256(_mm256_srli_epi16(qh, 4), mask2),
                _mm256_and_si256(_mm256_srli_epi16(qh, 6), mask2),
            ];
            for s in 0..4 {
                let q = _mm256_or_si256(lows[s], _mm256_slli_epi16(highs[s], 4));
                let av = _mm256_loadu_si256(qa.add(128 * h + 32 * s) as *const __m256i);
                let sub = 8 * h + 2 * s;
                let sc = _mm256_set_m128i(
                    _mm_set1_epi16(i16::from(scales[sub + 1])),
                    _mm_set1_epi16(i16::from(scales[sub])),
                );
                let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(q, av), sc);
                sumi = _mm256_add_epi32(sumi, prod);
            }
        }
        // Σ (q - 32) a = Σ q a - 32 Σ a, per scale.
        sumi = _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * offset, 0, 0, 0, 0, 0, 0, 0));
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(f16_at(p.add(208)) * a.d[b]),
            _mm256_cvtepi32_ps(sumi),
            acc,
        );
    }
    hsum(acc)
}
