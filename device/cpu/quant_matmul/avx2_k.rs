//! AVX2 block dot products for Q4_K and Q6_K, the bulk of a Q4_K_M file (the other K-quants use
//! the portable kernels). Same integer sums as [`super::portable_k`]: codes × activation codes
//! by `maddubs` (at most 2·63·127 per i16 pair), weighted by the sub-block scales in `madd`,
//! summed in i32 per super-block, then scaled in f32. Each has a one-token and a four-token form
//! (the codes of a super-block unpacked once for four activation rows).

use std::arch::x86_64::*;

use super::activations::{Q8KRow, QKK};
use super::avx2::{f16_at, hsum};
use super::portable_k::k4_scale_min;

/// One 64-code chunk of a Q4_K super-block against its activations at `qa`: the low nibbles
/// times the first 32 activation bytes and the high nibbles times the next 32, each pair summed
/// and weighted by its sub-block scale (`s_lo`, `s_hi`, as i16 lanes), as eight i32 lanes.
///
/// # Safety
/// AVX2 must be available and `qa` must point at 64 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_k_chunk(
    lo: __m256i,
    hi: __m256i,
    s_lo: __m256i,
    s_hi: __m256i,
    qa: *const i8,
) -> __m256i {
    let a_lo = _mm256_loadu_si256(qa as *const __m256i);
    let a_hi = _mm256_loadu_si256(qa.add(32) as *const __m256i);
    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), s_lo);
    let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), s_hi);
    _mm256_add_epi32(p_lo, p_hi)
}

/// Q4_K over `N` tokens: 144-byte super-blocks (`d`, `dmin`, 12 scale bytes, 128 code bytes).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_n<const N: usize>(w: &[u8], a: &[Q8KRow<'_>; N]) -> [f32; N] {
    let blocks = a[0].d.len();
    debug_assert!(w.len() >= blocks * 144);
    debug_assert!(a
        .iter()
        .all(|r| r.qs.len() >= blocks * QKK && r.bsums.len() >= blocks * 16));
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut minus = [0f32; N];
    for b in 0..blocks {
        let p = w.as_ptr().add(b * 144);
        let packed = std::slice::from_raw_parts(p.add(4), 12);
        let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
        let mut sc = [0i16; 8];
        let mut mn = [0i32; 8];
        for j in 0..8 {
            let (s, m) = k4_scale_min(packed, j);
            sc[j] = i16::from(s);
            mn[j] = i32::from(m);
        }
        let mut sumi = [_mm256_setzero_si256(); N];
        for c in 0..4 {
            let raw = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
            let lo = _mm256_and_si256(raw, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
            let (s_lo, s_hi) = (
                _mm256_set1_epi16(sc[2 * c]),
                _mm256_set1_epi16(sc[2 * c + 1]),
            );
            for t in 0..N {
                let qa = a[t].qs.as_ptr().add(b * QKK + 64 * c);
                sumi[t] = _mm256_add_epi32(sumi[t], q4_k_chunk(lo, hi, s_lo, s_hi, qa));
            }
        }
        for t in 0..N {
            let bs = &a[t].bsums[b * 16..b * 16 + 16];
            let mins: i32 = (0..8)
                .map(|j| mn[j] * (i32::from(bs[2 * j]) + i32::from(bs[2 * j + 1])))
                .sum();
            let da = a[t].d[b];
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            minus[t] += dmin * da * mins as f32;
        }
    }
    let mut out = [0f32; N];
    for t in 0..N {
        out[t] = hsum(acc[t]) - minus[t];
    }
    out
}

/// Q6_K over `N` tokens: 210-byte super-blocks (128 bytes low nibbles, 64 bytes 2-bit high
/// parts, 16 signed scales, `d`). Codes are taken unsigned (0..64) and the `-32` applied through
/// the activation sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_n<const N: usize>(w: &[u8], a: &[Q8KRow<'_>; N]) -> [f32; N] {
    let blocks = a[0].d.len();
    debug_assert!(w.len() >= blocks * 210);
    debug_assert!(a
        .iter()
        .all(|r| r.qs.len() >= blocks * QKK && r.bsums.len() >= blocks * 16));
    let mask4 = _mm256_set1_epi8(0x0F);
    let mask2 = _mm256_set1_epi8(0x03);
    let mut acc = [_mm256_setzero_ps(); N];
    for b in 0..blocks {
        let p = w.as_ptr().add(b * 210);
        let scales = std::slice::from_raw_parts(p.add(192) as *const i8, 16);
        let d = f16_at(p.add(208));
        let mut sumi = [_mm256_setzero_si256(); N];
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
            for (s, (low, high)) in lows.into_iter().zip(highs).enumerate() {
                let q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
                let sub = 8 * h + 2 * s;
                let sc = _mm256_set_m128i(
                    _mm_set1_epi16(i16::from(scales[sub + 1])),
                    _mm_set1_epi16(i16::from(scales[sub])),
                );
                for t in 0..N {
                    let qa = a[t].qs.as_ptr().add(b * QKK + 128 * h + 32 * s);
                    let av = _mm256_loadu_si256(qa as *const __m256i);
                    let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(q, av), sc);
                    sumi[t] = _mm256_add_epi32(sumi[t], prod);
                }
            }
        }
        for t in 0..N {
            // Σ (q - 32) a = Σ q a - 32 Σ a, per scale.
            let bs = &a[t].bsums[b * 16..b * 16 + 16];
            let offset: i32 = scales
                .iter()
                .zip(bs)
                .map(|(&sc, &bsum)| i32::from(sc) * i32::from(bsum))
                .sum();
            let s = _mm256_sub_epi32(sumi[t], _mm256_setr_epi32(32 * offset, 0, 0, 0, 0, 0, 0, 0));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t].d[b]), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    let mut out = [0f32; N];
    for t in 0..N {
        out[t] = hsum(acc[t]);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    q4_k_n::<1>(w, &[a])[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4_k_x4(w: &[u8], a: &[Q8KRow<'_>; 4]) -> [f32; 4] {
    q4_k_n::<4>(w, a)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    q6_k_n::<1>(w, &[a])[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6_k_x4(w: &[u8], a: &[Q8KRow<'_>; 4]) -> [f32; 4] {
    q6_k_n::<4>(w, a)
}
