//! Vocabulary-wide arithmetic, written so the compiler vectorises it: sampling touches every
//! logit of a 50k–150k row per token, and a scalar `exp` per logit costs more than the rest of
//! sampling together.
//!
//! [`exp_nonpos`] uses only IEEE basic operations (no libm call), so besides being vectorisable
//! its results are bit-identical on every platform, which keeps seeded sampling reproducible
//! across machines.

/// Lanes of the hand-unrolled reductions: independent accumulators break the dependency chain and
/// map onto SIMD registers.
const LANES: usize = 8;

/// Block length for two-level loops: blocks are summed or maxed with vectorised code, and only a
/// block that matters is walked element by element.
pub const BLOCK: usize = 256;

/// `e^x` for `x <= 0` (including -inf, which gives exactly 0), to about 2 ulp; 0 below -87.
/// Cephes' `expf`: `x = n ln2 + r` with `|r| <= ln2 / 2`, a degree-6 polynomial for `e^r`, and
/// `2^n` built from its exponent bits. Positive `x` is clamped to 0 (gives 1); NaN gives 0.
///
/// Branch-free and cast-free on purpose (the out-of-range cases are a final select, the integer
/// `n` is read from the float's bits), so a loop over it vectorises.
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    // Round-to-nearest by adding 1.5 * 2^23: the sum's low mantissa bits are then `n` itself.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 0.0); // NaN passes through; the final select turns it into 0
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n_bits = t.to_bits().wrapping_sub(MAGIC.to_bits()); // n in [-126, 0], two's complement
    let n = t - MAGIC;
    // ln 2 split in two so `n * C1` is exact.
    let r = xc - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n as a normal float: exponent field n + 127 in [1, 127].
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x >= -87.0 {
        er * scale
    } else {
        0.0
    }
}

/// The largest value, ignoring NaN (-inf for an empty or all-NaN slice).
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let m = rest.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    acc.iter().fold(m, |m, &a| m.max(a))
}

/// `out[i] = e^(xs[i] - max)` for every `i`; returns their sum, accumulated in f64. `xs` must not
/// contain NaN or +inf and `max` must be its maximum (finite or -inf).
pub fn exp_shifted(xs: &[f32], max: f32, out: &mut [f32]) -> f64 {
    if max == f32::NEG_INFINITY {
        // Every value is -inf: no distribution; callers treat it as uniform.
        out[..xs.len()].fill(1.0);
        return xs.len() as f64;
    }
    let out = &mut out[..xs.len()];
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = exp_nonpos(x - max);
    }
    sum(out)
}

/// `sum(e^(x - max))` over `xs` without keeping the terms, accumulated in f64; same
/// preconditions as [`exp_shifted`] (an all -inf slice counts as uniform: its length). Works
/// through a small stack buffer so both the `exp` loop and the sum vectorise.
pub fn sum_exp_shifted(xs: &[f32], max: f32) -> f64 {
    if max == f32::NEG_INFINITY {
        return xs.len() as f64;
    }
    let mut buf = [0.0f32; BLOCK];
    let mut total = 0.0f64;
    for c in xs.chunks(BLOCK) {
        let b = &mut buf[..c.len()];
        for (o, &x) in b.iter_mut().zip(c) {
            *o = exp_nonpos(x - max);
        }
        total += sum(b);
    }
    total
}

/// The sum in f64, in a fixed order (so the same inputs always give the same bits).
pub fn sum(xs: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x as f64;
        }
    }
    let tail: f64 = rest.iter().map(|&x| x as f64).sum();
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = 0.0f32;
        while x > -87.0 {
            let got = exp_nonpos(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
            x -= 0.000_731;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-0.0), 1.0);
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(-1000.0), 0.0);
        assert_eq!(exp_nonpos(f32::NAN), 0.0);
        assert_eq!(exp_nonpos(5.0), 1.0);
    }

    #[test]
    fn max_and_sum_of_odd_lengths() {
        for n in [0usize, 1, 7, 8, 9, 100] {
            let xs: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 - 3.0).collect();
            let want_max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&xs), want_max);
            let want_sum: f64 = xs.iter().map(|&x| x as f64).sum();
            assert!((sum(&xs) - want_sum).abs() < 1e-9);
        }
        assert_eq!(max(&[f32::NAN, 1.0, f32::NAN]), 1.0);
        assert_eq!(max(&[f32::NAN; 3]), f32::NEG_INFINITY);
    }

    #[test]
    fn exp_shifted_of_all_minus_inf_is_uniform() {
        let mut out = vec![0.0; 4];
        assert_eq!(
            exp_shifted(&[f32::NEG_INFINITY; 3], f32::NEG_INFINITY, &mut out),
            3.0
        );
        assert_eq!(out, vec![1.0, 1.0, 1.0, 0.0]);
        let xs = [0.0, f32::NEG_INFINITY, 2f32.ln()];
        let total = exp_shifted(&xs, 2f32.ln(), &mut out);
        assert!((total - 1.5).abs() < 1e-6);
        assert_eq!(sum_exp_shifted(&xs, 2f32.ln()), total);
        assert_eq!(
            sum_exp_shifted(&[f32::NEG_INFINITY; 5], f32::NEG_INFINITY),
            5.0
        );
    }
}
