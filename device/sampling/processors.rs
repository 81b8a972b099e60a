//! Temperature, top-k, top-p and min-p, and the draw itself.
//!
//! Weights: `weights[t] = exp(logit[t] - max)` (a buffer indexed by token id), unnormalised
//! probabilities relative to the most likely token. Truncation never needs another softmax, and
//! renormalising after truncation is just summing what is left.
//!
//! Candidates, when a processor needs to order tokens, are [`Key`]s: the logit's order-preserving
//! bits and the token id packed into one `u64`, so that ascending key order is "most likely first,
//! then lowest id" and sorting or selecting compares plain integers with no indirection. That order
//! is total: ties at a top-k or top-p boundary always keep the lower ids. [`draw`] and
//! [`draw_all`] walk the candidates in id order (`super::draw_truncated` restores it after
//! [`top_p`]'s partitioning), never in an order left by the standard library's unstable
//! algorithms, which keeps a seeded request's tokens identical across runs, platforms and
//! toolchains, and lets the device sampler (`kernels/sampling.cu`) pick the same token with a
//! prefix sum instead of a sort.
//!
//! None of these allocate: the buffers live in [`super::SamplerScratch`].

use super::math;

/// A candidate token: `(!ordered(logit)) << 32 | id`. Ascending = most likely first.
pub type Key = u64;

/// The key of token `id` with (sanitized, non-NaN) logit `logit`.
#[inline]
pub fn key(logit: f32, id: u32) -> Key {
    let b = logit.to_bits();
    // Order-preserving map of f32 onto u32 (negative floats reversed), then inverted so larger
    // logits come first.
    let ordered = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    (u64::from(!ordered) << 32) | u64::from(id)
}

/// The logit bits a key was made from (inverse of the map in [`key`]).
#[inline]
fn key_logit_bits(k: Key) -> u32 {
    let ordered = !((k >> 32) as u32);
    if ordered >> 31 == 1 {
        ordered & 0x7FFF_FFFF
    } else {
        !ordered
    }
}

/// The token id of a key.
#[inline]
pub fn key_id(k: Key) -> u32 {
    k as u32
}

/// Replaces what would poison the arithmetic: NaN becomes -inf (never chosen), +inf becomes the
/// largest finite value (so `logit - max` stays finite).
pub fn sanitize(logits: &mut [f32]) {
    for l in logits {
        *l = clean(*l);
    }
}

#[inline]
fn clean(l: f32) -> f32 {
    if l.is_nan() {
        f32::NEG_INFINITY
    } else {
        l.min(f32::MAX)
    }
}

/// The first index of the largest logit (0 for an empty slice). NaNs are never chosen. Two
/// vectorisable passes (the max, then the first block holding it) beat one branchy pass.
pub fn argmax(logits: &[f32]) -> u32 {
    let m = math::max(logits);
    for (b, block) in logits.chunks(math::BLOCK).enumerate() {
        // Non-short-circuiting `|` so the block test vectorises; only the hit block is walked.
        if block.iter().fold(false, |hit, &l| hit | (l == m)) {
            let j = block.iter().position(|&l| l == m).unwrap_or(0);
            return (b * math::BLOCK + j) as u32;
        }
    }
    0
}

/// Divides every logit by `temperature` (> 0) and sanitizes the result (a small temperature can
/// overflow large logits to +inf): one pass for both.
pub fn apply_temperature(logits: &mut [f32], temperature: f32) {
    scale_logits(logits, 1.0 / temperature);
}

/// Multiplies every logit by `inv_temperature` (sanitizing as [`apply_temperature`] does).
pub fn scale_logits(logits: &mut [f32], inv: f32) {
    for l in logits {
        *l = clean(*l * inv);
    }
}

/// Replaces `out` with the keys of the `n` most likely tokens, sorted most likely first.
///
/// Small `n` (top-k, logprobs): one pass keeping a sorted buffer; a token is compared with the
/// current n-th best and almost always rejected right there. Large `n`: build every key, select
/// the n-th (O(V)), sort the `n` survivors.
pub fn top_n(logits: &[f32], n: usize, out: &mut Vec<Key>) {
    out.clear();
    let n = n.min(logits.len());
    if n == 0 {
        return;
    }
    if n <= 64 {
        for (b, block) in logits.chunks(math::BLOCK).enumerate() {
            // A full buffer's worst logit bounds what can still get in: skip whole blocks below
            // it with one vectorised max (strict, so -0.0 / 0.0 ties still go through `key`).
            if out.len() == n {
                let worst = f32::from_bits(key_logit_bits(out[n - 1]));
                if math::max(block) < worst {
                    continue;
                }
            }
            for (j, &l) in block.iter().enumerate() {
                let k = key(l, (b * math::BLOCK + j) as u32);
                if out.len() == n {
                    if k >= out[n - 1] {
                        continue;
                    }
                    out.pop();
                }
                let at = out.partition_point(|&o| o < k);
                out.insert(at, k);
            }
        }
    } else {
        out.extend(logits.iter().enumerate().map(|(i, &l)| key(l, i as u32)));
        if n < out.len() {
            out.select_nth_unstable(n - 1);
            out.truncate(n);
        }
        out.sort_unstable();
    }
}

/// Fills `weights[t]` for every key's token (relative to the best key's logit, the first one)
/// and returns their sum. All -inf counts as uniform rather than NaN.
pub fn weights_of_keys(logits: &[f32], keys: &[Key], weights: &mut [f32]) -> f64 {
    let max = keys
        .first()
        .map_or(f32::NEG_INFINITY, |&k| logits[key_id(k) as usize]);
    let mut total = 0.0f64;
    for &k in keys {
        let t = key_id(k) as usize;
        let w = if max == f32::NEG_INFINITY {
            1.0
        } else {
            math::exp_nonpos(logits[t] - max)
        };
        weights[t] = w;
        total += w as f64;
    }
    total
}

/// The weight below which a token cannot be in the top-`p` nucleus of `n` tokens of total weight
/// `total`: if `w_t < (1 - p) * total / n`, all tokens at most as likely as `t` weigh less than
/// `(1 - p) * total` together, so the strictly more likely ones already reach `p`. Halved as a
/// margin for rounding. Filtering on it first leaves top-p a short list to sort.
pub fn top_p_tail(top_p: f32, total: f64, n: usize) -> f32 {
    (0.5 * (1.0 - f64::from(top_p.clamp(0.0, 1.0))) * total / n.max(1) as f64) as f32
}

/// Replaces `out` with the keys of every token whose weight is at least `threshold`, in id
/// order. Blocks whose largest weight is below it are skipped with one vectorised max.
pub fn keys_above(logits: &[f32], weights: &[f32], threshold: f32, out: &mut Vec<Key>) {
    out.clear();
    let weights = &weights[..logits.len().min(weights.len())];
    for (b, (lb, wb)) in logits
        .chunks(math::BLOCK)
        .zip(weights.chunks(math::BLOCK))
        .enumerate()
    {
        if math::max(wb) < threshold {
            continue;
        }
        let base = b * math::BLOCK;
        for (j, (&l, &w)) in lb.iter().zip(wb).enumerate() {
            if w >= threshold {
                out.push(key(l, (base + j) as u32));
            }
        }
    }
}

/// Keeps the smallest set of most likely candidates whose weight reaches `top_p` × `total` (the
/// weight of all candidates before any tail filtering), at least one; 1 (or more, or NaN) = off.
/// The kept keys are left in an unspecified but deterministic order.
///
/// Sorting the candidates is what this avoids (a flat distribution can keep most of a 150k
/// vocabulary): a weighted quickselect partitions around a pivot key, and the mass of the
/// better side says which side the cut is on, O(n) expected. Small ranges are sorted and walked,
/// and so is whatever is left after `O(log n)` rounds, which bounds the worst case. The
/// partitioning is this function's own code, so the resulting order does not depend on the
/// standard library's algorithms.
pub fn top_p(keys: &mut Vec<Key>, weights: &[f32], total: f64, top_p: f32) {
    if top_p.is_nan() || top_p >= 1.0 || keys.is_empty() {
        return;
    }
    let w = |k: Key| f64::from(weights[key_id(k) as usize]);
    let target = f64::from(top_p.max(0.0)) * total;
    if target <= 0.0 {
        let best = keys.iter().copied().min().unwrap_or_default();
        keys.clear();
        keys.push(best);
        return;
    }
    // keys[..lo] are in the nucleus (mass `acc` < target), keys[hi..] are not.
    let (mut lo, mut hi, mut acc) = (0usize, keys.len(), 0.0f64);
    let mut rounds = 2 * (usize::BITS - keys.len().leading_zeros()) as usize + 8;
    while hi - lo > 32 && rounds > 0 {
        rounds -= 1;
        let (better, better_mass) = partition(&mut keys[lo..hi], weights);
        let pivot = lo + better;
        if acc + better_mass >= target {
            hi = pivot;
        } else {
            acc += better_mass + w(keys[pivot]);
            if acc >= target {
                keys.truncate(pivot + 1);
                return;
            }
            lo = pivot + 1;
        }
    }
    keys[lo..hi].sort_unstable();
    for i in lo..hi {
        acc += w(keys[i]);
        if acc >= target {
            keys.truncate(i + 1);
            return;
        }
    }
    // Rounding kept the mass just under the target: keep everything up to `hi`.
    keys.truncate(hi);
}

/// Lomuto partition of `keys` (at least 3) around the median of its first, middle and last
/// keys: the keys better (smaller) than the pivot end up first, then the pivot. Returns how many
/// are better and their total weight.
fn partition(keys: &mut [Key], weights: &[f32]) -> (usize, f64) {
    let last = keys.len() - 1;
    let mid = last / 2;
    let (a, b, c) = (keys[0], keys[mid], keys[last]);
    let pivot_at = if (a <= b) == (b <= c) {
        mid
    } else if (b <= a) == (a <= c) {
        0
    } else {
        last
    };
    keys.swap(pivot_at, last);
    let pivot = keys[last];
    let (mut store, mut mass) = (0usize, 0.0f64);
    for i in 0..last {
        let k = keys[i];
        if k < pivot {
            keys.swap(i, store);
            store += 1;
            mass += f64::from(weights[key_id(k) as usize]);
        }
    }
    keys.swap(store, last);
    (store, mass)
}

/// Drops candidates less likely than `min_p` × the most likely one (0 = off). The most likely
/// token has weight exactly 1, so it always survives. Keeps the candidates' order.
pub fn min_p(keys: &mut Vec<Key>, weights: &[f32], min_p: f32) {
    if min_p > 0.0 {
        let threshold = min_p.min(1.0);
        keys.retain(|&k| weights[key_id(k) as usize] >= threshold);
    }
}

/// Picks a candidate with probability proportional to its weight, using `u` in `[0, 1)`: the
/// first candidate whose cumulative weight exceeds `u` × their total. 0 when there are none.
pub fn draw(keys: &[Key], weights: &[f32], u: f64) -> u32 {
    let w = |k: Key| f64::from(weights[key_id(k) as usize]);
    let total: f64 = keys.iter().map(|&k| w(k)).sum();
    let target = u * total;
    let mut cum = 0.0f64;
    for &k in keys {
        cum += w(k);
        if cum > target {
            return key_id(k);
        }
    }
    // `u` close to 1 and rounding: the last candidate that can be drawn at all.
    keys.iter()
        .rev()
        .find(|&&k| w(k) > 0.0)
        .or(keys.last())
        .map_or(0, |&k| key_id(k))
}

/// [`draw`] over every token (`weights` indexed by id, `total` their sum), without keys. Whole
/// blocks are skipped by their (vectorised) sums; only the block where the running weight
/// crosses the target is walked.
pub fn draw_all(weights: &[f32], total: f64, u: f64) -> u32 {
    let target = u * total;
    let mut cum = 0.0f64;
    for (b, block) in weights.chunks(math::BLOCK).enumerate() {
        let s = math::sum(block);
        if cum + s > target {
            for (j, &w) in block.iter().enumerate() {
                cum += f64::from(w);
                if cum > target {
                    return (b * math::BLOCK + j) as u32;
                }
            }
            // The element-wise walk rounded below the block sum: go on from where it stopped.
        } else {
            cum += s;
        }
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(keys: &[Key]) -> Vec<u32> {
        keys.iter().map(|&k| key_id(k)).collect()
    }

    /// Every token's key, in id order.
    fn all_keys(logits: &[f32]) -> Vec<Key> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| key(l, i as u32))
            .collect()
    }

    /// Weights of every token and their total.
    fn weights(logits: &[f32]) -> (Vec<f32>, f64) {
        let mut w = vec![0.0; logits.len()];
        let total = math::exp_shifted(logits, math::max(logits), &mut w);
        (w, total)
    }

    #[test]
    fn keys_order_by_logit_then_id() {
        let vals = [
            f32::NEG_INFINITY,
            -f32::MAX,
            -1.0,
            -0.0,
            0.0,
            1e-30,
            1.0,
            f32::MAX,
        ];
        for w in vals.windows(2) {
            assert!(
                key(w[1], 0) < key(w[0], 0),
                "{} should come before {}",
                w[1],
                w[0]
            );
        }
        assert!(key(1.0, 3) < key(1.0, 4));
        assert_eq!(key_id(key(-2.5, 77)), 77);
        for v in vals {
            assert_eq!(key_logit_bits(key(v, 5)), v.to_bits());
        }
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
        assert_eq!(argmax(&[1.0, f32::INFINITY, f32::INFINITY]), 1);
        let long: Vec<f32> = (0..1000).map(|i| ((i * 7) % 13) as f32).collect();
        assert_eq!(argmax(&long), 11); // the first i with 7i = 12 (mod 13)
    }

    #[test]
    fn temperature_divides_and_sanitizes() {
        let mut l = vec![1.0, -2.0, 4.0, f32::MAX, f32::NAN];
        apply_temperature(&mut l, 0.5);
        assert_eq!(l, vec![2.0, -4.0, 8.0, f32::MAX, f32::NEG_INFINITY]);
    }

    #[test]
    fn top_n_keeps_the_n_best_sorted_with_ties_to_lower_ids() {
        let l = [0.5, 3.0, 1.0, 3.0, -1.0, 2.0];
        let mut out = Vec::new();
        for (n, want) in [
            (3, vec![1, 3, 5]),
            (1, vec![1]),
            (0, vec![]),
            (100, vec![1, 3, 5, 2, 0, 4]),
        ] {
            top_n(&l, n, &mut out);
            assert_eq!(ids(&out), want, "n = {n}");
        }
    }

    #[test]
    fn top_n_scan_and_select_agree() {
        let l: Vec<f32> = (0..3000)
            .map(|i| ((i * 7919 % 211) as f32) * 0.37)
            .collect();
        let mut want = all_keys(&l);
        want.sort_unstable();
        let mut out = Vec::new();
        for n in [1, 2, 20, 63, 64, 65, 500, 2999, 3000, 5000] {
            top_n(&l, n, &mut out);
            assert_eq!(out, want[..n.min(3000)], "n = {n}");
        }
    }

    #[test]
    fn weights_are_relative_to_the_best_key() {
        let l = [0.0, 2.0_f32.ln(), f32::NEG_INFINITY];
        let mut keys = all_keys(&l);
        keys.sort_unstable();
        let mut w = vec![0.0; 4];
        let total = weights_of_keys(&l, &keys, &mut w);
        assert!((w[0] - 0.5).abs() < 1e-6 && (w[1] - 1.0).abs() < 1e-6 && w[2] == 0.0);
        assert!((total - 1.5).abs() < 1e-6);
        let l = [f32::NEG_INFINITY; 4];
        let total = weights_of_keys(&l, &all_keys(&l), &mut w);
        assert_eq!((&w[..], total), (&[1.0; 4][..], 4.0), "all -inf: uniform");
    }

    #[test]
    fn top_p_keeps_exactly_the_smallest_set_reaching_p() {
        // Probabilities 0.4, 0.3, 0.2, 0.1 (ids shuffled). Exact boundaries such as 0.4 are left
        // out: f32 rounding may land either side.
        let p = [0.2f32, 0.4, 0.1, 0.3];
        let l: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let (w, total) = weights(&l);
        let cases: [(f32, &[u32]); 8] = [
            (0.0, &[1]),
            (0.35, &[1]),
            (0.41, &[1, 3]),
            (0.69, &[1, 3]),
            (0.71, &[1, 3, 0]),
            (0.89, &[1, 3, 0]),
            (0.95, &[1, 3, 0, 2]),
            (1.0, &[0, 1, 2, 3]), // off: untouched
        ];
        for (top, want) in cases {
            let mut keys = all_keys(&l);
            top_p(&mut keys, &w, total, top);
            let mut got = ids(&keys);
            got.sort_unstable();
            let mut want = want.to_vec();
            want.sort_unstable();
            assert_eq!(got, want, "top_p {top}");
        }
    }

    #[test]
    fn top_p_with_tail_filter_matches_a_full_sort() {
        // Peaked, flat and in-between rows; ties included (values repeat every 97 ids); and
        // rows sorted ascending / descending (bad cases for naive pivots).
        let mut rows: Vec<Vec<f32>> = [0.0f32, 0.01, 0.1, 1.0, 5.0]
            .iter()
            .map(|&scale| {
                (0..5000)
                    .map(|i| ((i * 7919 % 97) as f32) * scale)
                    .collect()
            })
            .collect();
        rows.push((0..5000).map(|i| i as f32 * 0.003).collect());
        rows.push((0..5000).map(|i| -(i as f32) * 0.003).collect());
        for (r, l) in rows.iter().enumerate() {
            let l = &l[..];
            let (w, total) = weights(l);
            for p in [0.0f32, 0.05, 0.3, 0.6, 0.9, 0.99] {
                let mut keys = Vec::new();
                keys_above(l, &w, top_p_tail(p, total, l.len()), &mut keys);
                top_p(&mut keys, &w, total, p);

                let mut want = all_keys(l);
                want.sort_unstable();
                let mut cum = 0.0f64;
                let keep = want
                    .iter()
                    .position(|&k| {
                        cum += f64::from(w[key_id(k) as usize]);
                        cum >= f64::from(p) * total
                    })
                    .map_or(want.len(), |i| i + 1);
                want.truncate(keep);
                keys.sort_unstable();
                assert_eq!(keys, want, "row {r} top_p {p}");
            }
        }
    }

    #[test]
    fn keys_above_keeps_id_order_across_skipped_blocks() {
        let mut l = vec![-50.0f32; 2000];
        for i in [3, 700, 701, 1999] {
            l[i] = 1.0;
        }
        let (w, _) = weights(&l);
        let mut out = Vec::new();
        keys_above(&l, &w, 0.5, &mut out);
        assert_eq!(ids(&out), vec![3, 700, 701, 1999]);
        keys_above(&l, &w, 0.0, &mut out);
        assert_eq!(out, all_keys(&l));
    }

    #[test]
    fn min_p_drops_tokens_below_the_fraction_of_the_max() {
        let p = [0.5f32, 0.3, 0.15, 0.05];
        let l: Vec<f32> = p.iter().map(|x| x.ln()).collect();
        let (w, _) = weights(&l);
        // Probability threshold 0.2 × 0.5 = 0.1: keeps 0.5, 0.3, 0.15.
        for (m, want) in [
            (0.2, vec![0, 1, 2]),
            (0.9, vec![0]),
            (5.0, vec![0]),
            (0.0, vec![0, 1, 2, 3]),
        ] {
            let mut keys = all_keys(&l);
            min_p(&mut keys, &w, m);
            assert_eq!(ids(&keys), want, "min_p {m}");
        }
    }

    #[test]
    fn draw_follows_the_cumulative_weights() {
        let w = [1.0f32, 0.0, 3.0, 0.0];
        let keys: Vec<Key> = (0..4).map(|i| key(0.0, i)).collect();
        for (u, want) in [(0.0, 0), (0.2499, 0), (0.25, 2), (0.999_999_999, 2)] {
            assert_eq!(draw(&keys, &w, u), want, "u {u}");
            assert_eq!(draw_all(&w, 4.0, u), want, "u {u}");
        }
        assert_eq!(draw(&[], &w, 0.5), 0);
        assert_eq!(
            draw(&keys[1..2], &w, 0.5),
            1,
            "all-zero weights: the last candidate"
        );
        assert_eq!(draw_all(&[], 0.0, 0.5), 0);
        assert_eq!(
            draw_all(&w, 3.9, 0.999_999_999),
            2,
            "rounding: the last positive weight"
        );
    }
}
