//! One constrained sequence's grammar state, kept with its sampler state: masks each logits row
//! to the tokens the grammar allows next, and advances with each token sampled.
//!
//! Feeding a token and computing the next mask are split from sampling: [`advance`] only queues
//! the token, and [`prepare`] (feed the queued tokens, compute the mask) may run on another
//! thread while the forward pass that produces the row's logits runs (`ahead.rs`). [`apply`]
//! uses a prepared mask, or prepares one on the spot when none is.
//!
//! [`advance`]: ConstraintMatcher::advance
//! [`prepare`]: ConstraintMatcher::prepare
//! [`apply`]: ConstraintMatcher::apply

use std::sync::Arc;
use std::time::Instant;

use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;

use super::compiler::CompiledGrammar;
use super::stats::GrammarStats;

pub struct ConstraintMatcher {
    matcher: Matcher,
    grammar: Arc<CompiledGrammar>,
    /// Tokens sampled and not yet fed to the grammar ([`prepare`](Self::prepare) feeds them).
    queued: Vec<u32>,
    /// The mask for the state after `queued`, once prepared; cleared by the next token.
    prepared: Option<SimpleVob>,
}

impl ConstraintMatcher {
    /// At the grammar's start, then advanced over `generated` (a preempted request recomputed,
    /// or a copy made mid-generation).
    pub fn new(grammar: &Arc<CompiledGrammar>, generated: &[u32]) -> Self {
        ConstraintMatcher {
            matcher: grammar.start(),
            grammar: Arc::clone(grammar),
            queued: generated.to_vec(),
            prepared: None,
        }
    }

    /// Which compiled grammar it runs: matchers of one grammar share its lexer cache (and lock).
    pub(crate) fn grammar_id(&self) -> usize {
        Arc::as_ptr(&self.grammar) as usize
    }

    fn stats(&self) -> &GrammarStats {
        self.grammar.stats()
    }

    /// Feeds the queued tokens to the grammar and computes the mask of the state they lead to,
    /// kept for the next [`apply`](Self::apply) or [`mask`](Self::mask). Does nothing when that
    /// mask is already prepared.
    pub fn prepare(&mut self) {
        if self.prepared.is_some() {
            return;
        }
        self.feed_queued();
        let started = Instant::now();
        let mask = match self.matcher.compute_mask_or_eos() {
            Ok(m) if !m.is_zero() => m,
            _ => self.eos_only(),
        };
        self.stats().mask_computed(started.elapsed());
        self.prepared = Some(mask);
    }

    /// Whether the mask for the current state is prepared (applying it will not compute).
    pub fn is_prepared(&self) -> bool {
        self.prepared.is_some()
    }

    /// The tokens allowed next, one bit per token id (32 ids per word, bit `id % 32` of word
    /// `id / 32`). A finished grammar allows only the end-of-sequence tokens; so does one in an
    /// error state (which the mask itself should make impossible), to end the request cleanly.
    pub fn mask(&mut self) -> &SimpleVob {
        self.prepare();
        self.prepared.get_or_insert_with(SimpleVob::new)
    }

    fn eos_only(&self) -> SimpleVob {
        match self.matcher.tok_env() {
            Ok(env) => env.tok_trie().eos_token_set(),
            Err(_) => SimpleVob::new(),
        }
    }

    /// Sets every logit the grammar disallows to -inf (ids past the mask too).
    pub fn apply(&mut self, logits: &mut [f32]) {
        if self.prepared.is_none() {
            self.stats().mask_at_sampling();
        }
        apply_mask(self.mask().as_slice(), logits);
    }

    /// Records the sampled `token`: fed to the grammar by the next [`prepare`](Self::prepare).
    pub fn advance(&mut self, token: u32) {
        self.queued.push(token);
        self.prepared = None;
    }

    /// Whether the grammar is complete (nothing but EOS may follow), tokens queued included.
    pub fn is_stopped(&mut self) -> bool {
        self.feed_queued();
        self.matcher.is_stopped()
    }

    /// A token the grammar refuses (impossible after `apply`) leaves it in an error state whose
    /// mask is EOS only.
    fn feed_queued(&mut self) {
        for t in std::mem::take(&mut self.queued) {
            if !self.matcher.is_stopped() {
                let _ = self.matcher.consume_token(t);
            }
        }
    }
}

/// Disallowed (bit clear, or beyond `words`) → -inf.
pub fn apply_mask(words: &[u32], logits: &mut [f32]) {
    for (i, chunk) in logits.chunks_mut(32).enumerate() {
        match words.get(i).copied().unwrap_or(0) {
            u32::MAX => {}
            // Outside free text most words allow nothing.
            0 => chunk.fill(f32::NEG_INFINITY),
            w => {
                // A select per lane, not a branch per bit, so it vectorises.
                for (bit, l) in chunk.iter_mut().enumerate() {
                    let allowed = (w >> bit) & 1 != 0;
                    *l = if allowed { *l } else { f32::NEG_INFINITY };
                }
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
            queued: self.queued.clone(),
            prepared: self.prepared.clone(),
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
            .field("queued", &self.queued.len())
            .field("prepared", &self.prepared.is_some())
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
        // An empty word bans its whole chunk, and only it.
        let mut zero = vec![1.0f32; 70];
        apply_mask(&[u32::MAX, 0, u32::MAX], &mut zero);
        let banned: Vec<usize> = (0..70).filter(|&i| zero[i].is_infinite()).collect();
        assert_eq!(banned, (32..64).collect::<Vec<_>>());
    }
}
