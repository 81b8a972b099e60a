//! Temperature, top-k, top-p and min-p, and the draw itself.
//!
//! The random path works on a list of *candidate* token ids (`cands`) and a `weights` buffer
//! indexed by token id holding `exp(logit - max)` for the candidates: unnormalised
//! probabilities, so truncation never needs a second softmax pass, and renormalising after
//! truncation is just summing what is left. Neither the list nor the buffer is allocated per
//! token (see [`super::SamplerScratch`]).
//!
//! Ordering is total and deterministic: by logit, descending, then by token id, ascending. Ties at
//! a top-k or top-p boundary therefore always keep the lower ids, and the order in which the
//! final candidates are walked by [`draw`] is either ascending id (no truncation that sorts) or
//! that sorted order, never something that depends on the standard library's selection
//! algorithm. That is what keeps a seeded request's tokens the same across runs and builds.

use std::cmp::Ordering;

/// Replaces what would poison the arithmetic: NaN becomes -inf (never chosen), +inf becomes the
/// largest finite value (so `logit - max` stays finite).
pub fn sanitize(logits: &mut [f32]) {
    for l in logits {
        if l.is_nan() {
            *l = f32::NEG_INFINITY;
        } else if *l == f32::INFINITY {
            *l = f32::MAX;
        }
    }
}

/// The first index of the largest logit (0 for an empty slice). NaNs are never chosen.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_val = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_val {
            best = i;
            best_val = l;
        }
    }
    best as u32
}

/// `a` before `b` when its logit is larger, or equal with a smaller id. Logits must be sanitized.
pub fn by_logit_desc(logits: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| {
        let (la, lb) = (logits[a as usize], logits[b as usize]);
        lb.total_cmp(&la).then(a.cmp(&b))
    }
}

/// Divides every logit by `temperature` (> 0).
pub fn apply_temperature(logits: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        let inv = 1.0 / temperature;
        for l in logits {
            *l *= inv;
        }
    }
}

/// Keeps the `k` most likely candidates (0 = off), sorted most likely first. `select_nth` then a
/// sort of the `k` survivors: O(V + k log k) rather than sorting the vocabulary.
pub fn top_k(logits: &[f32], cands: &mut Vec<u32>, k: usize) {
    if k == 0 || k >= cands.len() {
        return;
    }
    let cmp = by_logit_desc(logits);
    cands.select_nth_unstable_by(k - 1, &cmp);
    cands.truncate(k);
    cands.sort_unstable_by(&cmp);
}

/// Fills `weights[t] = exp(logit[t] - max)` for every candidate and returns their sum (the
/// softmax normaliser of the candidates). When every candidate is -inf they are treated as
/// equally likely (weight 1) rather than producing NaNs.
pub fn softmax_weights(logits: &[f32], cands: &[u32], weights: &mut [f32]) -> f64 {
    let max = cands
        .iter()
        .map(|&t| logits[t as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0f64;
    for &t in cands {
        let w = if max == f32::NEG_INFINITY {
            1.0
        } else {
            (logits[t as usize] - max).exp()
        };
        weights[t as usize] = w;
        total += w as f64;
    }
    total
}

/// Drops candidates less likely than `min_p` × the most likely one (0 = off). The most likely
/// candidate has weight exactly 1, so it always survives. Keeps the candidates' order.
pub fn min_p(cands: &mut Vec<u32>, weights: &[f32], min_p: f32) {
    if min_p > 0.0 {
        let threshold = min_p.min(1.0);
        cands.retain(|&t| weights[t as usize] >= threshold);
    }
}

/// Keeps the smallest set of most likely candidates whose probability (under the normaliser
/// `total`) reaches `top_p`, at least one; 1 (or more) = off. Leaves the kept ones sorted most
/// likely first.
///
/// The nucleus is usually tiny, so rather than sorting everything this selects and sorts the top
/// `m` candidates, growing `m` eightfold until their mass reaches `top_p` (O(V) per round, a
/// handful of rounds at worst).
pub fn top_p(logits: &[f32], cands: &mut Vec<u32>, weights: &[f32], total: f64, top_p: f32) {
    // NaN counts as off too.
    if top_p.is_nan() || top_p >= 1.0 || cands.is_empty() {
        return;
    }
    let target = top_p.max(0.0) as f64 * total;
    let cmp = by_logit_desc(logits);
    let n = cands.len();
    let mut m = n.min(64);
    loop {
        if m < n {
            cands.select_nth_unstable_by(m - 1, &cmp);
        }
        cands[..m].sort_unstable_by(&cmp);
        let mut cum = 0.0f64;
        for i in 0..m {
            cum += weights[cands[i] as usize] as f64;
            if cum >= target {
                cands.truncate(i + 1);
                return;
            }
        }
        if m == n {
            return; // rounding kept the mass just under `target`: keep everything
        }
        m = n.min(m.saturating_mul(8));
    }
}

/// Picks a candidate with probability proportional to its weight, using `u` in `[0, 1)`: the
/// first candidate whose cumulative weight exceeds `u` × the total. Returns 0 when there are no
/// candidates (which `sample` never lets happen).
pub fn draw(cands: &[u32], weights: &[f32], u: f64) -> u32 {
    let total: f64 = cands.iter().map(|&t| weights[t as usize] as f64).sum();
    let target = u * total;
    let mut cum = 0.0f64;
    for &t in cands {
        cum += weights[t as usize] as f64;
        if cum > target {
            return t;
        }
    }
    // `u` close to 1 and rounding: the last candidate that can be drawn at all.
    cands
        .iter()
        .rev()
        .find(|&&t| weights[t as usize] > 0.0)
        .or(cands.last())
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(n: usize) -> Vec<u32> {
        (0..n as u32).collect()
    }

    fn weights_of(logits: &[f32], cands: &[u32]) -> (Vec<f32>, f64) {
        let mut w = vec![0.0; logits.len()];
        let total = softmax_weights(logits, cands, &mut w);
        (w, total)
    }

    #[test]
    fn sanitize_removes_nan_and_inf() {
        let mut l = vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0];
        sanitize(&mut l);
        assert_eq!(l, vec![f32::NEG_INFINITY, f32::MAX, f32::NEG_INFINITY, 1.0]);
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, f32::NAN]), 1);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    }

    #[test]
    fn temperature_divides() {
        let mut l = vec![1.0, -2.0, 4.0];
        apply_temperature(&mut l, 0.5);
        assert_eq!(l, vec![2.0, -4.0, 8.0]);
    }

    #[test]
    fn top_k_keeps_the_k_best_sorted_with_ties_to_lower_ids() {
        let l = [0.5, 3.0, 1.0, 3.0, -1.0, 2.0];
        let mut c = all(l.len());
        top_k(&l, &mut c, 3);
        assert_eq!(c, vec![1, 3, 5]);
        let mut c = all(l.len());
        top_k(&l, &mut c, 1);
        assert_eq!(c, vec![1]);
        let mut c = all(l.len());
        top_k(&l, &mut c, 0);
        assert_eq!(c, all(l.len()));
        top_k(&l, &mut c, 100);
        assert_eq!(c, all(l.len()));
    }

    #[test]
    fn softmax_weights_are_relative_to_the_max() {
        let l = [0.0, 2.0_f32.ln(), f32::NEG_INFINITY];
        let (w, total) = weights_of(&l, &all(3));
        assert!((w[0] - 0.5).abs() < 1e-6 && (w[1] - 1.0).abs() < 1e-6 && w[2] == 0.0);
        assert!((total - 1.5).abs() < 1e-6);
        // All -inf: uniform instead of NaN.
        let l = [f32::NEG_INFINITY; 4];
        let (w, total) = weights_of(&l, &all(4));
        assert_eq!((w, total), (vec![1.0; 4], 4.0));
    }

    #[test]
    fn top_p_keeps_exactly_the_smallest_set_reaching_p() {
        // Probabilities 0.4, 0.3, 0.2, 0.1 (ids shuffled).
        let p = [0.2f32, 0.4, 0.1, 0.3];
        let l: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        // (Exact boundaries such as 0.4 are left out: f32 rounding may land either side.)
        let cases: [(f32, &[u32]); 7] = [
            (0.0, &[1]),
            (0.35, &[1]),
            (0.41, &[1, 3]),
            (0.69, &[1, 3]),
            (0.71, &[1, 3, 0]),
            (0.89, &[1, 3, 0]),
            (0.95, &[1, 3, 0, 2]),
        ];
        for (top, want) in cases {
            let mut c = all(4);
            let (w, total) = weights_of(&l, &c);
            top_p(&l, &mut c, &w, total, top);
            assert_eq!(c, want, "top_p {top}");
        }
        let mut c = all(4);
        let (w, total) = weights_of(&l, &c);
        top_p(&l, &mut c, &w, total, 1.0);
        assert_eq!(c, all(4), "1 is off");
    }

    #[test]
    fn top_p_on_a_large_flat_vocabulary_grows_past_the_first_round() {
        // 10k equally likely tokens: top_p 0.5 keeps exactly 5000, the lowest ids.
        let l = vec![0.0f32; 10_000];
        let mut c = all(l.len());
        let (w, total) = weights_of(&l, &c);
        top_p(&l, &mut c, &w, total, 0.5);
        assert_eq!(c, all(5000));
    }

    #[test]
    fn min_p_drops_tokens_below_the_fraction_of_the_max() {
        let p = [0.5f32, 0.3, 0.15, 0.05];
        let l: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let mut c = all(4);
        let (w, _) = weights_of(&l, &c);
        min_p(&mut c, &w, 0.2); // prob threshold 0.2 × 0.5 = 0.1: keeps 0.5, 0.3, 0.15
        assert_eq!(c, vec![0, 1, 2]);
        let mut c = all(4);
        min_p(&mut c, &w, 0.9);
        assert_eq!(c, vec![0]);
        let mut c = all(4);
        min_p(&mut c, &w, 5.0); // clamped to 1: the max survives
        assert_eq!(c, vec![0]);
        let mut c = all(4);
        min_p(&mut c, &w, 0.0);
        assert_eq!(c, all(4));
    }

    #[test]
    fn draw_follows_the_cumulative_weights() {
        let w = [1.0f32, 0.0, 3.0, 0.0];
        let c = all(4);
        assert_eq!(draw(&c, &w, 0.0), 0);
        assert_eq!(draw(&c, &w, 0.2499), 0);
        assert_eq!(draw(&c, &w, 0.25), 2);
        assert_eq!(draw(&c, &w, 0.999_999_999), 2);
        assert_eq!(draw(&[], &w, 0.5), 0);
        assert_eq!(
            draw(&[3, 1], &w, 0.5),
            1,
            "all-zero weights: the last candidate"
        );
    }
}
