//! AVX2 block dot products for the 32-element types (x86-64 with AVX2, FMA and F16C, checked
//! at run time before any of these is chosen).
//!
//! Per block: the 32 weight codes as unsigned bytes (nibbles, or |q| for Q8_0 with the sign
//! moved onto the activation) meet the 32 activation codes in `maddubs` (u8·i8 pairs summed to
//! i16, at most 2·255·127 in magnitude for 5-bit codes, so no saturation), then `madd` with ones
//! to eight i32 lanes, converted exactly to f32 (|sum| < 2^24) and accumulated with the block's
//! scale by FMA. The offsets (`-8 d`, `-16 d`, Q4_1/Q5_1's `m`) multiply the activation block sum
//! in a scalar accumulator.

use std::arch::x86_64::*;

use super::activations::{Q8Row, GROUP, GROUP_STRIDE, QK32};

/// The `f16` at `p` as `f32` (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Eight f32 partial sums of `u[i] · s[i]` over 32 unsigned × signed byte pairs.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(u, s);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// 16 bytes of nibbles as 32 bytes: low nibbles (elements 0..16), then high (16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_nibbles(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let mask = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(raw, mask);
    let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    _mm256_set_m128i(hi, lo)
}

/// 0x10 in byte `j` where bit `j` of the little-endian `u32` at `p` is set (Q5's fifth bits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn high_bits(p: *const u8) -> __m256i {
    let bits = u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]);
    // Byte j takes byte j / 8 of the word (shuffles stay inside each 128-bit lane; the word is
    // broadcast to both), then is tested against its own bit j % 8.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The shared loop over blocks, for `N` tokens at once (each weight block decoded once, one
/// accumulator per token): `codes(block)` gives the 32 codes, the block's scale and offset. With
/// `SIGNED` the codes are signed bytes, multiplied as |w| × (a with w's sign) since `maddubs`
/// takes its first operand unsigned. Without `OFFSET` the offset is not applied (Q8_0 has none,
/// and a multiply by a constant 0.0 is not one the compiler may drop).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_blocks<const N: usize, const SIGNED: bool, const OFFSET: bool>(
    w: &[u8],
    block_bytes: usize,
    a: &[Q8Row<'_>; N],
    codes: impl Fn(*const u8) -> (__m256i, f32, f32),
) -> [f32; N] {
    let blocks = a[0].d.len();
    debug_assert!(w.len() >= blocks * block_bytes);
    debug_assert!(a
        .iter()
        .all(|r| r.qs.len() >= blocks * QK32 && r.d.len() == blocks));
    let mut acc = [[_mm256_setzero_ps(); N]; 2];
    let mut offsets = [[0f32; N]; 2];
    // Block `b` into one chain of accumulators (vector and offset, per token).
    macro_rules! block {
        ($b:expr, $acc:expr, $offsets:expr) => {{
            let b = $b;
            let (q, d, offset) = codes(w.as_ptr().add(b * block_bytes));
            let u = if SIGNED { _mm256_abs_epi8(q) } else { q };
            for t in 0..N {
                let s = _mm256_loadu_si256(a[t].qs.as_ptr().add(b * QK32) as *const __m256i);
                let s = if SIGNED { _mm256_sign_epi8(s, q) } else { s };
                $acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[t].d[b]), dot_u8_i8(u, s), $acc[t]);
                if OFFSET {
                    $offsets[t] += offset * a[t].sum[b];
                }
            }
        }};
    }
    // Two chains, for even and odd blocks, or every block would wait out the previous block's
    // add latency (the forms here take four tokens at most; eight go to `dot_blocks_group`).
    for pair in (0..blocks).step_by(2) {
        block!(pair, acc[0], offsets[0]);
        if pair + 1 < blocks {
            block!(pair + 1, acc[1], offsets[1]);
        }
    }
    let mut out = [0f32; N];
    for t in 0..N {
        out[t] = hsum(_mm256_add_ps(acc[0][t], acc[1][t])) + (offsets[0][t] + offsets[1][t]);
    }
    out
}

/// One weight row against a group of [`GROUP`] tokens, the tokens' results in the lanes of one
/// vector: per block the eight tokens' integer sums are reduced across lanes with `hadd` into one
/// vector of eight block dots, so the float step (convert, scale, FMA, offset) is one vector op
/// for all eight tokens instead of a scalar-and-broadcast step per token. The tokens' scales and
/// sums come token-minor from the group's first row ([`Q8Row::group`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_blocks_group<const SIGNED: bool, const OFFSET: bool>(
    w: &[u8],
    block_bytes: usize,
    a: &[Q8Row<'_>; GROUP],
    codes: impl Fn(*const u8) -> (__m256i, f32, f32),
) -> __m256 {
    let blocks = a[0].d.len();
    debug_assert!(w.len() >= blocks * block_bytes);
    debug_assert!(a[0].group.len() >= blocks * GROUP_STRIDE);
    debug_assert!(a.iter().all(|r| r.qs.len() >= blocks * QK32));
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut offsets = _mm256_setzero_ps();
    for b in 0..blocks {
        let (q, d, offset) = codes(w.as_ptr().add(b * block_bytes));
        let u = if SIGNED { _mm256_abs_epi8(q) } else { q };
        // Eight i32 partial sums of token t's block dot.
        let part = |t: usize| {
            let s = _mm256_loadu_si256(a[t].qs.as_ptr().add(b * QK32) as *const __m256i);
            let s = if SIGNED { _mm256_sign_epi8(s, q) } else { s };
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones)
        };
        // Per 128-bit half: [t0, t1, t2, t3] and [t4, t5, t6, t7] summed over that half's lanes.
        let low4 = _mm256_hadd_epi32(
            _mm256_hadd_epi32(part(0), part(1)),
            _mm256_hadd_epi32(part(2), part(3)),
        );
        let high4 = _mm256_hadd_epi32(
            _mm256_hadd_epi32(part(4), part(5)),
            _mm256_hadd_epi32(part(6), part(7)),
        );
        let sums = _mm256_add_epi32(
            _mm256_permute2x128_si256(low4, high4, 0x20),
            _mm256_permute2x128_si256(low4, high4, 0x31),
        );
        let scales = a[0].group.as_ptr().add(b * GROUP_STRIDE);
        let ds = _mm256_mul_ps(_mm256_loadu_ps(scales), _mm256_set1_ps(d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), ds, acc);
        if OFFSET {
            let act_sums = _mm256_loadu_ps(scales.add(GROUP));
            offsets = _mm256_fmadd_ps(_mm256_set1_ps(offset), act_sums, offsets);
        }
    }
    _mm256_add_ps(acc, offsets)
}

/// Weight rows (`row_bytes` apart, `out.len()` of them) against one token, two rows at a time:
/// the two rows are independent accumulator chains sharing each activation block's load, and
/// the whole run of rows is one call.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_one_token<const SIGNED: bool, const OFFSET: bool>(
    w: &[u8],
    row_bytes: usize,
    block_bytes: usize,
    a: Q8Row<'_>,
    out: &mut [f32],
    codes: impl Fn(*const u8) -> (__m256i, f32, f32) + Copy,
) {
    let blocks = a.d.len();
    debug_assert!(out.is_empty() || w.len() >= (out.len() - 1) * row_bytes + blocks * block_bytes);
    debug_assert!(a.qs.len() >= blocks * QK32 && a.sum.len() == blocks);
    let last_row = out.len().saturating_sub(1);
    // The rows stream from L3 or memory: each pair asks for the bytes of the pair two ahead, so
    // they are in flight while this one computes (the run of rows is too short for the hardware
    // prefetcher to get ahead on its own).
    let fetch = |from: usize, to: usize| {
        for at in (from..to.min(w.len())).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().wrapping_add(at) as *const i8);
        }
    };
    fetch(0, 4 * row_bytes);
    let mut pairs = out.chunks_exact_mut(2);
    for (i, pair) in (&mut pairs).enumerate() {
        fetch((2 * i + 4) * row_bytes, (2 * i + 6) * row_bytes);
        let w0 = w.as_ptr().add(2 * i * row_bytes);
        let w1 = w0.add(row_bytes);
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut offsets = [0f32; 2];
        for b in 0..blocks {
            let s = _mm256_loadu_si256(a.qs.as_ptr().add(b * QK32) as *const __m256i);
            let da = *a.d.get_unchecked(b);
            for (r, wr) in [w0, w1].into_iter().enumerate() {
                let (q, d, offset) = codes(wr.add(b * block_bytes));
                let (u, s) = if SIGNED {
                    (_mm256_abs_epi8(q), _mm256_sign_epi8(s, q))
                } else {
                    (q, s)
                };
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * da), dot_u8_i8(u, s), acc[r]);
                if OFFSET {
                    offsets[r] += offset * *a.sum.get_unchecked(b);
                }
            }
        }
        pair[0] = hsum(acc[0]) + offsets[0];
        pair[1] = hsum(acc[1]) + offsets[1];
    }
    if let [last] = pairs.into_remainder() {
        let w = &w[last_row * row_bytes..];
        *last = dot_blocks::<1, SIGNED, OFFSET>(w, block_bytes, &[a], codes)[0];
    }
}

/// Defines `$one(w, a) -> f32` and `$four(w, [a; 4]) -> [f32; 4]` over [`dot_blocks`], the rows
/// × tokens tile `$tile::<R>(w, row_bytes, [a; GROUP]) -> [[f32; GROUP]; R]` over
/// [`dot_blocks_group`] (rows one after another; the tokens' blocks stay in L1 from one row to
/// the next), and `$rows(w, row_bytes, a, out)`, a run of rows against one token, over
/// [`rows_one_token`].
macro_rules! kernels {
    (
        $one:ident,
        $four:ident,
        $tile:ident,
        $rows:ident,
        $block_bytes:expr,
        $signed:expr,
        $offset:expr,
        $codes:expr
    ) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $tile<const R: usize>(
            w: &[u8],
            row_bytes: usize,
            a: &[Q8Row<'_>; GROUP],
        ) -> [[f32; GROUP]; R] {
            let mut out = [[0f32; GROUP]; R];
            for (r, o) in out.iter_mut().enumerate() {
                let v = dot_blocks_group::<$signed, $offset>(
                    &w[r * row_bytes..],
                    $block_bytes,
                    a,
                    $codes,
                );
                _mm256_storeu_ps(o.as_mut_ptr(), v);
            }
            out
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $rows(w: &[u8], row_bytes: usize, a: Q8Row<'_>, out: &mut [f32]) {
            rows_one_token::<$signed, $offset>(w, row_bytes, $block_bytes, a, out, $codes)
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $one(w: &[u8], a: Q8Row<'_>) -> f32 {
            dot_blocks::<1, $signed, $offset>(w, $block_bytes, &[a], $codes)[0]
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $four(w: &[u8], a: &[Q8Row<'_>; 4]) -> [f32; 4] {
            dot_blocks::<4, $signed, $offset>(w, $block_bytes, a, $codes)
        }
    };
}

// Q8_0: `x = q · d`, signed codes.
kernels!(
    q8_0,
    q8_0_x4,
    q8_0_tile,
    q8_0_rows,
    34,
    true,
    false,
    |p| unsafe {
        let q = _mm256_loadu_si256(p.add(2) as *const __m256i);
        (q, f16_at(p), 0.0)
    }
);

// Q4_0: `x = (q - 8) · d`.
kernels!(
    q4_0,
    q4_0_x4,
    q4_0_tile,
    q4_0_rows,
    18,
    false,
    true,
    |p| unsafe {
        let d = f16_at(p);
        (unpack_nibbles(p.add(2)), d, -8.0 * d)
    }
);

// Q4_1: `x = q · d + m`.
kernels!(
    q4_1,
    q4_1_x4,
    q4_1_tile,
    q4_1_rows,
    20,
    false,
    true,
    |p| unsafe { (unpack_nibbles(p.add(4)), f16_at(p), f16_at(p.add(2))) }
);

// Q5_0: `x = (q - 16) · d`, the fifth bits in 4 bytes before the nibbles.
kernels!(
    q5_0,
    q5_0_x4,
    q5_0_tile,
    q5_0_rows,
    22,
    false,
    true,
    |p| unsafe {
        let d = f16_at(p);
        let q = _mm256_or_si256(unpack_nibbles(p.add(6)), high_bits(p.add(2)));
        (q, d, -16.0 * d)
    }
);

// Q5_1: `x = q · d + m`.
kernels!(
    q5_1,
    q5_1_x4,
    q5_1_tile,
    q5_1_rows,
    24,
    false,
    true,
    |p| unsafe {
        let q = _mm256_or_si256(unpack_nibbles(p.add(8)), high_bits(p.add(4)));
        (q, f16_at(p), f16_at(p.add(2)))
    }
);
