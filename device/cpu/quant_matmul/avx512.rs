//! AVX-512 VNNI block dot products for Q8_0 (x86-64 with AVX2's set plus AVX-512 F/BW/VL and
//! VNNI, checked at run time before any of these is chosen). The other 32-element types had VNNI
//! forms of this shape too; AVX2's 8-token tile, which pays the float step once per group of
//! eight tokens, beat them (benches/RESULTS.md), so they use AVX2's kernels.
//!
//! Two blocks at a time in one 512-bit register: the 64 weight codes as unsigned bytes (nibbles,
//! or |q| for Q8_0 with the sign moved onto the activation by a masked negate) meet 64
//! activation codes in one `vpdpbusd`, which sums each four u8·i8 products into an i32 lane
//! (at most 4·255·128 in magnitude, exact). Lane `k` of a block holds elements `4k..4k+4`, the
//! same four the AVX2 kernels' `maddubs` + `madd` pair sums, so the integer sums are identical;
//! only the f32 accumulation order differs. Each half is scaled by its own block's
//! `d_w · d_a` (converted exactly: |sum| < 2^24) and accumulated by FMA; an odd last block
//! takes a pair with a zero second half. Offsets (`-8 d`, `-16 d`, Q4_1/Q5_1's `m`) multiply
//! the activation block sums in scalar accumulators, as on AVX2.

use std::arch::x86_64::*;

use super::activations::{Q8Row, QK32};
use super::avx2::f16_at;

/// Upper eight f32 lanes: the second block of a pair.
const SECOND: __mmask16 = 0xFF00;

/// Bytes of a Q8_0 block: the f16 scale, then 32 signed codes (`x = q · d`).
const BLOCK_BYTES: usize = 34;

/// The loop over pairs of Q8_0 blocks, for `N` tokens at once (each weight block decoded once,
/// one accumulator per token). The codes are signed, multiplied as |w| × (a with w's sign)
/// since `vpdpbusd` takes its first operand unsigned.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_blocks<const N: usize>(w: &[u8], a: &[Q8Row<'_>; N]) -> [f32; N] {
    let blocks = a[0].d.len();
    debug_assert!(w.len() >= blocks * BLOCK_BYTES);
    debug_assert!(a
        .iter()
        .all(|r| r.qs.len() >= blocks * QK32 && r.d.len() == blocks));
    let codes = |b: usize| {
        let p = w.as_ptr().add(b * BLOCK_BYTES);
        (_mm256_loadu_si256(p.add(2) as *const __m256i), f16_at(p))
    };
    let mut acc = [[_mm512_setzero_ps(); N]; 2];
    // Blocks `b` and, if `$two`, `b + 1` into one chain of accumulators (per token). Without
    // `$two` the second half is zeros and nothing past block `b` is read.
    macro_rules! pair {
        ($b:expr, $acc:expr, $two:literal) => {{
            let b = $b;
            let (q0, d0) = codes(b);
            let (q1, d1) = if $two {
                codes(b + 1)
            } else {
                (_mm256_setzero_si256(), 0.0)
            };
            let q = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
            let dw = _mm512_mask_blend_ps(SECOND, _mm512_set1_ps(d0), _mm512_set1_ps(d1));
            let (u, negative) = (_mm512_abs_epi8(q), _mm512_movepi8_mask(q));
            for t in 0..N {
                let src = a[t].qs.as_ptr().add(b * QK32);
                let s = if $two {
                    _mm512_loadu_si512(src as *const __m512i)
                } else {
                    _mm512_zextsi256_si512(_mm256_loadu_si256(src as *const __m256i))
                };
                let s = _mm512_mask_sub_epi8(s, negative, _mm512_setzero_si512(), s);
                let dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s));
                let da1 = if $two { a[t].d[b + 1] } else { 0.0 };
                let da =
                    _mm512_mask_blend_ps(SECOND, _mm512_set1_ps(a[t].d[b]), _mm512_set1_ps(da1));
                $acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, da), dot, $acc[t]);
            }
        }};
    }
    let whole = blocks - blocks % 2;
    if N >= 8 {
        // From eight tokens the tokens' own chains hide the add latency.
        for b in (0..whole).step_by(2) {
            pair!(b, acc[0], true);
        }
    } else {
        // Few tokens: two chains, for alternate pairs, or every pair would wait out the
        // previous pair's add latency.
        for b in (0..whole).step_by(4) {
            pair!(b, acc[0], true);
            if b + 2 < whole {
                pair!(b + 2, acc[1], true);
            }
        }
    }
    if whole < blocks {
        pair!(whole, acc[1], false);
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t])))
}

/// `R` weight rows (`row_bytes` apart) against `T` activation rows; the AVX2 tile's signature.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q8_0_tile<const R: usize, const T: usize>(
    w: &[u8],
    row_bytes: usize,
    a: &[Q8Row<'_>; T],
) -> [[f32; T]; R] {
    std::array::from_fn(|r| dot_blocks::<T>(&w[r * row_bytes..], a))
}

/// One weight row against one activation row.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q8_0(w: &[u8], a: Q8Row<'_>) -> f32 {
    dot_blocks::<1>(w, &[a])[0]
}

/// One weight row against four activation rows.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn q8_0_x4(w: &[u8], a: &[Q8Row<'_>; 4]) -> [f32; 4] {
    dot_blocks::<4>(w, a)
}
