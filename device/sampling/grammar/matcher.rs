//! One constrained sequence's grammar state, kept with its sampler state: masks each logits row
//! to the tokens the grammar allows next, and advances with each token sampled.

use std::sync::Arc;
use std::time::Instant;

use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;

use super::compiler::CompiledGrammar;
use super::stats::GrammarStats;

pub struct ConstraintMatcher {
    matcher: Matcher,
    grammar: Arc<CompiledGrammar>,
}

impl ConstraintMatcher {
    /// At the grammar's start, then advanced over `generated` (a preempted request recomputed,
    /// or a copy made mid-generation).
    pub fn new(grammar: &Arc<CompiledGrammar>, generated: &[u32]) -> Self {
        let mut m = ConstraintMatcher {
            matcher: grammar.start(),
            grammar: Arc::clone(grammar),
        };
        for &t in generated {
            m.advance(t);
        }
        m
    }

    fn stats(&self) -> &GrammarStats {
        self.grammar.stats()
    }

    /// The tokens allowed next, one bit per token id (32 ids per word, bit `id % 32` of word
    /// `id / 32`). A finished grammar allows only the end-of-sequence tokens; so does one in an
    /// error state (which the mask itself should make impossible), to end the request cleanly.
    pub fn mask(&mut self) -> SimpleVob {
        let started = Instant::now();
        let mask = match self.matcher.compute_mask_or_eos() {
            Ok(m) if !m.is_zero() => m,
            _ => self.eos_only(),
        };
        self.stats().mask_computed(started.elapsed());
        mask
    }

    fn eos_only(&self) -> SimpleVob {
        match self.matcher.tok_env() {
            Ok(env) => env.tok_trie().eos_token_set(),
            Err(_) => SimpleVob::new(),
        }
    }

    /// Sets every logit the grammar disallows to -inf (ids past the mask too).
    pub fn apply(&mut self, logits: &mut [f32]) {
        let mask = self.mask();
        apply_mask(mask.as_slice(), logits);
    }

    /// Feeds the sampled `token` to the grammar. A token the grammar refuses (impossible after
    /// [`apply`](Self::apply)) leaves it in an error state whose mask is EOS only.
    pub fn advance(&mut self, token: u32) {
        if !self.matcher.is_stopped() {
            let _ = self.matcher.consume_token(token);
        }
    }

    /// Whether the grammar is complete (nothing but EOS may follow).
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// Disallowed (bit clear, or beyond `words`) → -inf.
pub fn apply_mask(words: &[u32], logits: &mut [f32]) {
    for (i, chunk) in logits.chunks_mut(32).enumerate() {
        let w = words.get(i).copied().unwrap_or(0);
        if w == u32::MAX {
            continue;
        }
        for (bit, l) in chunk.iter_mut().enumerate() {
            if w & (1 << bit) == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

impl Clone for ConstraintMatcher {
    fn clone(&self) -> Self {
        self.stats().matcher_created();
        ConstraintMatcher {
            matcher: self.matcher.clone(),
            grammar: Arc::clone(&self.grammar),
        }
    }
}

impl Drop for ConstraintMatcher {
    fn drop(&mut self) {
        self.stats().matcher_dropped();
    }
}

impl std::fmt::Debug for ConstraintMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConstraintMatcher")
            .field("grammar", &self.grammar.key())
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::apply_mask;

    #[test]
    fn mask_bits_map_to_token_ids() {
        let mut logits = vec![1.0f32; 40];
        // Word 0: ids 0 and 31; word 1: id 33. Nothing else survives.
        apply_mask(&[1 | 1 << 31, 1 << 1], &mut logits);
        let kept: Vec<usize> = (0..40).filter(|&i| logits[i].is_finite()).collect();
        assert_eq!(kept, vec![0, 31, 33]);
        let mut short = vec![1.0f32; 40];
        apply_mask(&[u32::MAX], &mut short);
        assert!(
            short[..32].iter().all(|l| l.is_finite())
                && short[32..].iter().all(|l| l.is_infinite())
        );
    }
}
