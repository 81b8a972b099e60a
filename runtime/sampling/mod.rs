//! Picking the next token from a logits row: penalties, temperature, top-k / top-p / min-p, a
//! seeded draw, and log-probabilities.
//!
//! Per token, [`sample`] does, in this order (vLLM / OpenAI semantics):
//! 1. `logprobs`: if requested, `log_softmax` of the **raw** logits (before anything below) gives
//!    the chosen token's logprob and the top-`n` alternatives ([`logprobs`]).
//! 2. Penalties: repetition over prompt ∪ generated, frequency / presence over generated
//!    ([`penalties`]).
//! 3. Greedy when `temperature` is (nearly) 0 or `top_k == 1`: the first maximum.
//! 4. Otherwise: divide by `temperature`; keep the `top_k` most likely; keep the top-`p` nucleus
//!    of what is left (renormalised); drop tokens below `min_p` × the most likely; renormalise
//!    and draw with a uniform number keyed by `(seed, position)` ([`rng`]), where `position` is
//!    how many tokens the request has generated so far.
//!
//! Keying the draw by position instead of advancing a generator is what makes a seeded
//! request's output independent of its batch-mates and reproducible after preemption: a request
//! recomputed from its prompt and already generated tokens ([`SamplerState::new`] with
//! `generated`) continues with exactly the draw it would have made.

pub mod logprobs;
pub mod penalties;
pub mod processors;
pub mod rng;

use std::sync::Arc;

use crate::runtime::request::{SamplingParams, TokenLogprob};
use logprobs::{top_logprobs, LogSoftmax};
use penalties::TokenHistory;

/// Temperatures below this count as 0 (greedy), as vLLM's `_SAMPLING_EPS`: dividing by a
/// near-zero temperature only overflows logits into ties.
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// Per-request state kept by the executor across steps.
#[derive(Debug, Clone)]
pub struct SamplerState {
    params: Arc<SamplingParams>,
    seed: u64,
    num_generated: usize,
    history: TokenHistory,
}

impl SamplerState {
    /// `prompt` and already-`generated` tokens (non-empty when a preempted request is
    /// recomputed). `seed`: the request's seed (the engine picks a random one when the request
    /// has none).
    pub fn new(params: Arc<SamplingParams>, seed: u64, prompt: &[u32], generated: &[u32]) -> Self {
        let history = TokenHistory::new(&params, prompt, generated);
        SamplerState {
            params,
            seed,
            num_generated: generated.len(),
            history,
        }
    }

    /// Tokens sampled so far (including those passed to [`SamplerState::new`]).
    pub fn num_generated(&self) -> usize {
        self.num_generated
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether this request picks tokens by argmax (no randomness at all).
    pub fn is_greedy(&self) -> bool {
        let t = self.params.temperature;
        t.is_nan() || t < GREEDY_TEMPERATURE || self.params.top_k == 1
    }

    fn record(&mut self, token: u32) {
        self.history.record(token);
        self.num_generated += 1;
    }
}

/// Reusable buffers so steady-state sampling does not allocate per token (sized to the vocab
/// once; a longer logits row grows them once).
#[derive(Debug, Clone, Default)]
pub struct SamplerScratch {
    /// Candidate token ids.
    cands: Vec<u32>,
    /// Unnormalised probabilities, indexed by token id.
    weights: Vec<f32>,
    /// The raw logits, kept for the chosen token's logprob when penalties overwrite them.
    raw: Vec<f32>,
}

impl SamplerScratch {
    pub fn new(vocab: usize) -> Self {
        SamplerScratch {
            cands: Vec::with_capacity(vocab),
            weights: vec![0.0; vocab],
            raw: Vec::with_capacity(vocab),
        }
    }
}

/// One sampled token and, when the request asked for them, its log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: Option<TokenLogprob>,
}

/// Picks the next token from `logits` (may be modified in place), records it in `state`.
///
/// Never panics: NaN logits are treated as -inf, +inf as the largest finite value, and an
/// all -inf row as uniform. An empty row yields token 0.
pub fn sample(
    state: &mut SamplerState,
    logits: &mut [f32],
    scratch: &mut SamplerScratch,
) -> Sampled {
    let params = Arc::clone(&state.params);
    processors::sanitize(logits);

    // Raw log-probabilities first: everything below rewrites `logits`.
    let raw_logprobs = params.logprobs.map(|n| {
        let ls = LogSoftmax::of(logits);
        let top = top_logprobs(logits, &ls, n, &mut scratch.cands);
        scratch.raw.clear();
        scratch.raw.extend_from_slice(logits);
        (ls, top)
    });

    state.history.apply(&params, logits);
    let token = if state.is_greedy() {
        processors::sanitize(logits); // penalties may have overflowed
        processors::argmax(logits)
    } else {
        processors::apply_temperature(logits, params.temperature);
        processors::sanitize(logits);
        let u = rng::uniform(state.seed, state.num_generated as u64);
        draw_truncated(logits, &params, u, scratch)
    };
    state.record(token);

    let logprob = raw_logprobs.map(|(ls, top)| TokenLogprob {
        token,
        logprob: scratch
            .raw
            .get(token as usize)
            .map_or(f32::NEG_INFINITY, |&l| ls.at(l)),
        top,
    });
    Sampled { token, logprob }
}

/// Top-k, then top-p over the top-k distribution, then min-p, then the draw.
///
/// min-p is applied before top-p here, which is equivalent to the documented order: top-p and
/// min-p both keep a most-likely prefix, top-p measures mass with the top-k normaliser (computed
/// before min-p), and min-p compares to the maximum, which no truncation changes. So the kept set
/// is the same; filtering by min-p first only makes top-p's sort smaller.
fn draw_truncated(
    logits: &[f32],
    params: &SamplingParams,
    u: f64,
    scratch: &mut SamplerScratch,
) -> u32 {
    if logits.is_empty() {
        return 0;
    }
    let SamplerScratch { cands, weights, .. } = scratch;
    if weights.len() < logits.len() {
        weights.resize(logits.len(), 0.0);
    }
    cands.clear();
    cands.extend(0..logits.len() as u32);
    processors::top_k(logits, cands, params.top_k);
    let total = processors::softmax_weights(logits, cands, weights);
    processors::min_p(cands, weights, params.min_p);
    processors::top_p(logits, cands, weights, total, params.top_p);
    processors::draw(cands, weights, u)
}

#[cfg(test)]
mod tests;
