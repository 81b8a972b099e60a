//! Log-probabilities for the `logprobs` option: computed from the *raw* logits (before
//! penalties and temperature), as vLLM and OpenAI report them, so they describe the model's own
//! distribution rather than the sampler's reshaped one.

use super::math;
use super::processors::{key_id, top_n, Key};

/// `log_softmax` of one logits row, evaluated lazily: `at(logit) = logit - logsumexp(row)`.
#[derive(Debug, Clone, Copy)]
pub struct LogSoftmax {
    lse: f32,
    /// When every logit is -inf there is no distribution; report the uniform one instead of NaN.
    uniform: Option<f32>,
}

impl LogSoftmax {
    /// One pass for the max, one for the sum (accumulated in f64: a 150k-token vocabulary loses
    /// several digits summing in f32). Logits must be sanitized (no NaN, no +inf).
    pub fn of(logits: &[f32]) -> Self {
        let max = math::max(logits);
        if max == f32::NEG_INFINITY {
            let uniform = -(logits.len().max(1) as f32).ln();
            return LogSoftmax {
                lse: 0.0,
                uniform: Some(uniform),
            };
        }
        let sum = math::sum_exp_shifted(logits, max);
        LogSoftmax {
            lse: max + sum.ln() as f32,
            uniform: None,
        }
    }

    /// The log-probability of a token whose logit is `logit`.
    pub fn at(&self, logit: f32) -> f32 {
        self.uniform.unwrap_or(logit - self.lse)
    }
}

/// The `n` most likely tokens as `(token, logprob)`, most likely first (ties: lower id first).
/// `keys` is scratch space.
pub fn top_logprobs(
    logits: &[f32],
    ls: &LogSoftmax,
    n: usize,
    keys: &mut Vec<Key>,
) -> Vec<(u32, f32)> {
    top_n(logits, n, keys);
    keys.iter()
        .map(|&k| {
            let t = key_id(k);
            (t, ls.at(logits[t as usize]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_exponentiate_to_one() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32) * 0.13 - 5.0)
            .collect();
        let ls = LogSoftmax::of(&logits);
        let total: f64 = logits.iter().map(|&l| (ls.at(l) as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "sum {total}");
        // Invariant to a shift of every logit.
        let shifted: Vec<f32> = logits.iter().map(|l| l + 100.0).collect();
        let ls2 = LogSoftmax::of(&shifted);
        assert!((ls.at(logits[7]) - ls2.at(shifted[7])).abs() < 1e-3);
    }

    #[test]
    fn known_values() {
        let logits = [0.0f32, 0.0, 2.0_f32.ln()]; // probabilities 1/4, 1/4, 1/2
        let ls = LogSoftmax::of(&logits);
        assert!((ls.at(0.0) - 0.25f32.ln()).abs() < 1e-6);
        assert!((ls.at(logits[2]) - 0.5f32.ln()).abs() < 1e-6);
        let all_masked = [f32::NEG_INFINITY; 4];
        assert_eq!(
            LogSoftmax::of(&all_masked).at(f32::NEG_INFINITY),
            -(4f32.ln())
        );
        let one_masked = [0.0, f32::NEG_INFINITY];
        assert_eq!(
            LogSoftmax::of(&one_masked).at(f32::NEG_INFINITY),
            f32::NEG_INFINITY
        );
    }

    #[test]
    fn top_n_is_ordered_most_likely_first() {
        let logits = [1.0f32, 5.0, 3.0, 5.0, -2.0, 4.0];
        let ls = LogSoftmax::of(&logits);
        let mut idx = Vec::new();
        let top = top_logprobs(&logits, &ls, 4, &mut idx);
        let ids: Vec<u32> = top.iter().map(|&(t, _)| t).collect();
        assert_eq!(ids, vec![1, 3, 5, 2]);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(top[0].1, ls.at(5.0));
        assert!(top_logprobs(&logits, &ls, 0, &mut idx).is_empty());
        assert_eq!(top_logprobs(&logits, &ls, 50, &mut idx).len(), 6);
    }
}
