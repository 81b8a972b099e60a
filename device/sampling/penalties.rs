//! Repetition, frequency and presence penalties, and the token history they need.
//!
//! Semantics follow vLLM (and, for the repetition penalty, HF transformers / the CTRL paper):
//! - repetition penalty `p` (1 = off), over every distinct token of prompt ∪ generated:
//!   a positive logit is divided by `p`, a non-positive one multiplied by `p`, so `p > 1` always
//!   makes a seen token less likely whatever the sign of its logit;
//! - frequency `f` and presence `r` penalties (OpenAI), over generated tokens only:
//!   `logit -= f * count + r * (count > 0)`.
//!
//! The history is only kept for the penalties a request actually uses, so a plain request with a
//! long prompt pays nothing for it.

use std::collections::{HashMap, HashSet};

use super::params::SamplingParams;

/// Which tokens a request has seen, as far as its penalties need to know.
#[derive(Debug, Clone, Default)]
pub struct TokenHistory {
    /// prompt ∪ generated; kept only when the repetition penalty is on.
    seen: Option<HashSet<u32>>,
    /// How often each token was generated; kept only when a frequency/presence penalty is on.
    counts: Option<HashMap<u32, u32>>,
}

/// Whether `params` asks for any penalty (then sampling needs the token history).
pub fn any(params: &SamplingParams) -> bool {
    wants_repetition(params) || wants_counts(params)
}

/// Whether `params` asks for the repetition penalty.
fn wants_repetition(params: &SamplingParams) -> bool {
    params.repetition_penalty != 1.0 && params.repetition_penalty.is_finite()
}

/// Whether `params` asks for a frequency or presence penalty.
fn wants_counts(params: &SamplingParams) -> bool {
    params.frequency_penalty != 0.0 || params.presence_penalty != 0.0
}

impl TokenHistory {
    pub fn new(params: &SamplingParams, prompt: &[u32], generated: &[u32]) -> Self {
        let mut h = TokenHistory {
            seen: wants_repetition(params).then(|| prompt.iter().copied().collect()),
            counts: wants_counts(params).then(HashMap::new),
        };
        for &t in generated {
            h.record(t);
        }
        h
    }

    /// Notes one generated token.
    pub fn record(&mut self, token: u32) {
        if let Some(seen) = &mut self.seen {
            seen.insert(token);
        }
        if let Some(counts) = &mut self.counts {
            *counts.entry(token).or_insert(0) += 1;
        }
    }

    /// Applies every penalty `params` asks for to `logits`, in place.
    pub fn apply(&self, params: &SamplingParams, logits: &mut [f32]) {
        if let Some(seen) = &self.seen {
            apply_repetition_penalty(logits, seen.iter().copied(), params.repetition_penalty);
        }
        if let Some(counts) = &self.counts {
            apply_frequency_presence(
                logits,
                counts.iter().map(|(&t, &c)| (t, c)),
                params.frequency_penalty,
                params.presence_penalty,
            );
        }
    }
}

/// Divides positive logits of `tokens` by `penalty`, multiplies the others by it. Each token
/// must appear once (pass a set). Ids outside `logits` are ignored.
pub fn apply_repetition_penalty(
    logits: &mut [f32],
    tokens: impl Iterator<Item = u32>,
    penalty: f32,
) {
    for t in tokens {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// `logit -= frequency * count + presence` for each `(token, count)` with `count > 0`. Ids
/// outside `logits` are ignored.
pub fn apply_frequency_presence(
    logits: &mut [f32],
    counts: impl Iterator<Item = (u32, u32)>,
    frequency: f32,
    presence: f32,
) {
    for (t, c) in counts {
        if c == 0 {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize) {
            *l -= frequency * c as f32 + presence;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let mut l = vec![2.0, -2.0, 0.0, 4.0];
        apply_repetition_penalty(&mut l, [0, 1, 2, 99].into_iter(), 2.0);
        assert_eq!(l, vec![1.0, -4.0, 0.0, 4.0]);
    }

    #[test]
    fn frequency_and_presence_scale_with_counts() {
        let mut l = vec![1.0, 1.0, 1.0];
        apply_frequency_presence(
            &mut l,
            [(0, 3), (1, 1), (2, 0), (7, 5)].into_iter(),
            0.5,
            0.25,
        );
        assert_eq!(l, vec![1.0 - 1.5 - 0.25, 1.0 - 0.5 - 0.25, 1.0]);
    }

    #[test]
    fn history_applies_repetition_over_prompt_and_generated_but_counts_generated_only() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            frequency_penalty: 1.0,
            presence_penalty: 0.5,
            ..Default::default()
        };
        // Prompt has token 0 twice and token 1; generated has token 2 twice and token 1 once.
        let h = TokenHistory::new(&params, &[0, 0, 1], &[2, 1, 2]);
        let mut l = vec![4.0, 4.0, 4.0, 4.0];
        h.apply(&params, &mut l);
        // token 0: prompt only -> 4/2; token 1: 4/2 - 1 - 0.5; token 2: 4/2 - 2 - 0.5; 3 untouched.
        assert_eq!(l, vec![2.0, 0.5, -0.5, 4.0]);
    }

    #[test]
    fn history_off_when_penalties_off() {
        let h = TokenHistory::new(&SamplingParams::default(), &[1, 2, 3], &[4]);
        assert!(h.seen.is_none() && h.counts.is_none());
        let mut l = vec![1.0; 5];
        h.apply(&SamplingParams::default(), &mut l);
        assert_eq!(l, vec![1.0; 5]);
    }
}
