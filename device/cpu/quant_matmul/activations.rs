//! The activation rows quantised to int8, once per product, in the layout the block kernels read.
//!
//! Weights of the 32-element types meet 32-element activation blocks ([`Q8Rows`]); the K-quants
//! (256-element super-blocks with 16- or 32-element sub-blocks) meet 256-element blocks that also
//! carry the sum of every 16 codes ([`Q8KRows`]), which is what turns a sub-block's minimum or
//! offset into one multiply instead of a pass over the codes.
//!
//! Each block keeps an `f32` scale `d = max|x| / 127` and codes `round(x / d)` in [-127, 127]:
//! the rounding error is at most `d / 2` per element, a relative error of about 1/254 of the
//! block's largest magnitude, which bounds how far a product here can be from the f32 one.

use super::isa::Isa;

/// Elements per block of the 32-element types (and of their activation blocks).
pub const QK32: usize = 32;
/// Elements per super-block of the K-quants.
pub const QKK: usize = 256;

/// `m` rows of `k` activations as 32-element int8 blocks.
#[derive(Debug, Clone, Default)]
pub struct Q8Rows {
    k: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    /// `d * Σ codes` per block: the factor of a weight block's offset (Q4_1/Q5_1 minimum,
    /// the `-8`/`-16` of Q4_0/Q5_0).
    sum: Vec<f32>,
    /// For each whole group of [`GROUP`] tokens and each block: the group's `d` then its `sum`
    /// ([`GROUP_STRIDE`] values), so a tile of eight tokens loads a block's scales as vectors.
    group: Vec<f32>,
}

/// Tokens per group of [`Q8Rows`]'s block scales laid out token-minor.
pub const GROUP: usize = 8;
/// Values per block in a group's scales: `GROUP` scales, then `GROUP` sums.
pub const GROUP_STRIDE: usize = 2 * GROUP;

/// One row of [`Q8Rows`].
#[derive(Debug, Clone, Copy)]
pub struct Q8Row<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub sum: &'a [f32],
    /// The scales of the [`GROUP`] tokens from this one, `GROUP_STRIDE` values per block, where
    /// this token starts a whole group (empty otherwise).
    pub group: &'a [f32],
}

impl Q8Rows {
    /// Quantises `m` rows of `k` (a multiple of 32) values from `x`, compiled for `isa` (the
    /// codes are the same on every one).
    pub fn new(isa: Isa, x: &[f32], m: usize, k: usize) -> Self {
        match isa {
            Isa::Portable => Self::quantize(x, m, k),
            // SAFETY: Isa::Avx2 and above are only used where they were detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => unsafe { Self::quantize_avx2(x, m, k) },
        }
    }

    /// [`Self::quantize`] compiled with AVX2, so the rounding and maximum vectorise.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn quantize_avx2(x: &[f32], m: usize, k: usize) -> Self {
        Self::quantize(x, m, k)
    }

    #[inline(always)]
    fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        debug_assert!(k.is_multiple_of(QK32) && x.len() >= m * k);
        let blocks = m * k / QK32;
        let mut rows = Q8Rows {
            k,
            qs: vec![0; m * k],
            d: Vec::with_capacity(blocks),
            sum: Vec::with_capacity(blocks),
            group: Vec::new(),
        };
        for (src, dst) in x[..m * k]
            .chunks_exact(QK32)
            .zip(rows.qs.chunks_exact_mut(QK32))
        {
            let d = quantize_block(src, dst);
            let s: i32 = dst.iter().map(|&q| i32::from(q)).sum();
            rows.d.push(d);
            rows.sum.push(d * s as f32);
        }
        let per_row = k / QK32;
        rows.group = vec![0.0; m / GROUP * per_row * GROUP_STRIDE];
        for (g, scales) in rows
            .group
            .chunks_exact_mut(per_row * GROUP_STRIDE)
            .enumerate()
        {
            for (b, block) in scales.chunks_exact_mut(GROUP_STRIDE).enumerate() {
                for i in 0..GROUP {
                    let at = (g * GROUP + i) * per_row + b;
                    block[i] = rows.d[at];
                    block[GROUP + i] = rows.sum[at];
                }
            }
        }
        rows
    }

    pub fn row(&self, t: usize) -> Q8Row<'_> {
        let b = self.k / QK32;
        let group_len = b * GROUP_STRIDE;
        let group = if t.is_multiple_of(GROUP) && (t / GROUP + 1) * group_len <= self.group.len() {
            &self.group[t / GROUP * group_len..(t / GROUP + 1) * group_len]
        } else {
            &[]
        };
        Q8Row {
            qs: &self.qs[t * self.k..(t + 1) * self.k],
            d: &self.d[t * b..(t + 1) * b],
            sum: &self.sum[t * b..(t + 1) * b],
            group,
        }
    }
}

/// `m` rows of `k` activations as 256-element int8 blocks with per-16 code sums.
#[derive(Debug, Clone, Default)]
pub struct Q8KRows {
    k: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    /// Σ codes of every 16 elements.
    bsums: Vec<i16>,
}

/// One row of [`Q8KRows`].
#[derive(Debug, Clone, Copy)]
pub struct Q8KRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub bsums: &'a [i16],
}

impl Q8KRows {
    /// Quantises `m` rows of `k` (a multiple of 256) values from `x`, compiled for `isa`.
    pub fn new(isa: Isa, x: &[f32], m: usize, k: usize) -> Self {
        match isa {
            Isa::Portable => Self::quantize(x, m, k),
            // SAFETY: Isa::Avx2 and above are only used where they were detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512Vnni => unsafe { Self::quantize_avx2(x, m, k) },
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn quantize_avx2(x: &[f32], m: usize, k: usize) -> Self {
        Self::quantize(x, m, k)
    }

    #[inline(always)]
    fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        debug_assert!(k.is_multiple_of(QKK) && x.len() >= m * k);
        let mut rows = Q8KRows {
            k,
            qs: vec![0; m * k],
            d: Vec::with_capacity(m * k / QKK),
            bsums: Vec::with_capacity(m * k / 16),
        };
        for (src, dst) in x[..m * k]
            .chunks_exact(QKK)
            .zip(rows.qs.chunks_exact_mut(QKK))
        {
            rows.d.push(quantize_block(src, dst));
            // 16 codes of at most 127 in magnitude: the sum fits an i16.
            rows.bsums.extend(
                dst.chunks_exact(16)
                    .map(|c| c.iter().map(|&q| i16::from(q)).sum::<i16>()),
            );
        }
        rows
    }

    pub fn row(&self, t: usize) -> Q8KRow<'_> {
        let b = self.k / QKK;
        Q8KRow {
            qs: &self.qs[t * self.k..(t + 1) * self.k],
            d: &self.d[t * b..(t + 1) * b],
            bsums: &self.bsums[t * self.k / 16..(t + 1) * self.k / 16],
        }
    }
}

/// Codes for one block into `dst`; returns the block's scale.
#[inline(always)]
fn quantize_block(src: &[f32], dst: &mut [i8]) -> f32 {
    // A plain comparison, not `f32::max` (whose NaN rule keeps it from vectorising).
    let amax = src
        .iter()
        .fold(0f32, |a, v| if v.abs() > a { v.abs() } else { a });
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in dst.iter_mut().zip(src) {
        // In [-127, 127] by the choice of d (the cast saturates a NaN to 0). Ties to even, not
        // away from zero: the same error bound, and one instruction where `round` is a call.
        *q = (v * id).round_ties_even() as i8;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reconstruct_within_half_a_step() {
        let x: Vec<f32> = (0..2 * 512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0)
            .collect();
        let isa = super::super::isa::detected_isa();
        let a = Q8Rows::new(isa, &x, 2, 512);
        let b = Q8KRows::new(isa, &x, 2, 512);
        // Every instruction set rounds the same.
        let p = Q8Rows::new(Isa::Portable, &x, 2, 512);
        assert_eq!((&a.qs, &a.d, &a.sum), (&p.qs, &p.d, &p.sum));
        for t in 0..2 {
            let (ra, rb) = (a.row(t), b.row(t));
            for i in 0..512 {
                let v = x[t * 512 + i];
                let da = ra.d[i / QK32];
                let db = rb.d[i / QKK];
                assert!((f32::from(ra.qs[i]) * da - v).abs() <= da * 0.5 + 1e-6);
                assert!((f32::from(rb.qs[i]) * db - v).abs() <= db * 0.5 + 1e-6);
            }
            for (j, s) in rb.bsums.iter().enumerate() {
                let want: i16 = rb.qs[j * 16..(j + 1) * 16]
                    .iter()
                    .map(|&q| i16::from(q))
                    .sum();
                assert_eq!(*s, want);
            }
            for (j, s) in ra.sum.iter().enumerate() {
                let codes: i32 = ra.qs[j * 32..(j + 1) * 32]
                    .iter()
                    .map(|&q| i32::from(q))
                    .sum();
                assert_eq!(*s, ra.d[j] * codes as f32);
            }
        }
    }

    #[test]
    fn groups_hold_each_tokens_scales_and_sums() {
        let (m, k) = (17, 96);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 5.0)
            .collect();
        let a = Q8Rows::new(Isa::Portable, &x, m, k);
        for t in 0..m {
            let group = a.row(t).group;
            // Groups start at tokens 0 and 8; token 16 has no whole group after it.
            if t % GROUP != 0 || t + GROUP > m {
                assert!(group.is_empty(), "token {t}");
                continue;
            }
            assert_eq!(group.len(), k / QK32 * GROUP_STRIDE);
            for i in 0..GROUP {
                let row = a.row(t + i);
                for b in 0..k / QK32 {
                    assert_eq!(
                        group[b * GROUP_STRIDE + i],
                        row.d[b],
                        "token {} block {b}",
                        t + i
                    );
                    assert_eq!(group[b * GROUP_STRIDE + GROUP + i], row.sum[b]);
                }
            }
        }
    }

    #[test]
    fn zero_blocks_give_zero_codes() {
        let a = Q8Rows::new(Isa::Portable, &[0.0; 64], 1, 64);
        assert!(a.row(0).qs.iter().all(|&q| q == 0));
        assert_eq!(a.row(0).d, [0.0, 0.0]);
    }
}
