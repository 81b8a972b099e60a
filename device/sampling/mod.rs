//! Picking the next token from a logits row: penalties, temperature, top-k / top-p / min-p, a
//! seeded draw, and log-probabilities.
//!
//! Per token, [`sample`] does, in this order (vLLM / OpenAI semantics):
//! 1. `logprobs`: if requested, `log_softmax` of the **raw** logits (before anything below) gives
//!    the chosen token's logprob and the top-`n` alternatives ([`logprobs`]).
//! 2. `logit_bias` is added to the logits (OpenAI semantics), then the grammar's mask (structured
//!    outputs, [`grammar`]) sets every token it disallows to -inf. So logprobs describe
//!    the model's own distribution, not the biased or masked one; a masked token may show up
//!    among the top alternatives.
//! 3. Penalties: repetition over prompt ∪ generated, frequency / presence over generated
//!    ([`penalties`]).
//! 4. Greedy when `temperature` is (nearly) 0 or `top_k == 1`: the first maximum.
//! 5. Otherwise: divide by `temperature`; keep the `top_k` most likely; keep the top-`p` nucleus
//!    of what is left (renormalised); drop tokens below `min_p` × the most likely; renormalise
//!    and draw with a uniform number keyed by `(seed, position)` ([`rng`]), where `position` is
//!    how many tokens the request has generated so far.
//!
//! Keying the draw by position instead of advancing a generator is what makes a seeded
//! request's output independent of its batch-mates and reproducible after preemption: a request
//! recomputed from its prompt and already generated tokens ([`SamplerState::new`] with
//! `generated`) continues with exactly the draw it would have made.

pub mod bias;
pub mod device_words;
pub mod grammar;
pub mod logprobs;
pub mod math;
pub mod params;
pub mod penalties;
pub mod processors;
pub mod rng;

use std::sync::Arc;

use self::grammar::ConstraintMatcher;
use self::params::{SamplingParams, TokenLogprob};
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
    /// The grammar's state when the request is constrained: advanced with every token recorded,
    /// rebuilt from `generated` when the state is (preemption, a copy per choice).
    constraint: Option<ConstraintMatcher>,
}

impl SamplerState {
    /// `prompt` and already-`generated` tokens (non-empty when a preempted request is
    /// recomputed). `seed`: the request's seed (the engine picks a random one when the request
    /// has none).
    pub fn new(params: Arc<SamplingParams>, seed: u64, prompt: &[u32], generated: &[u32]) -> Self {
        let history = TokenHistory::new(&params, prompt, generated);
        let constraint = params
            .constraint
            .as_ref()
            .map(|g| ConstraintMatcher::new(g, generated));
        SamplerState {
            params,
            seed,
            num_generated: generated.len(),
            history,
            constraint,
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

    /// The grammar state of a constrained request (its next mask can be prepared ahead).
    pub fn constraint_mut(&mut self) -> Option<&mut ConstraintMatcher> {
        self.constraint.as_mut()
    }

    /// Whether this request picks tokens by argmax (no randomness at all).
    pub fn is_greedy(&self) -> bool {
        let t = self.params.temperature;
        t.is_nan() || t < GREEDY_TEMPERATURE || self.params.top_k == 1
    }

    fn record(&mut self, token: u32) {
        if let Some(c) = &mut self.constraint {
            c.advance(token);
        }
        self.history.record(token);
        self.num_generated += 1;
    }

    /// This request's next draw as a device sampler runs it, or `None` when it needs what only
    /// the host sampler does: penalties (they need the token history, kept on the host) or more
    /// than [`MAX_DEVICE_TOP_LOGPROBS`] top logprobs. A logit bias or a grammar makes the entry
    /// `constrained`: its [`RowConstraint`] ([`row_constraint`](Self::row_constraint)) goes to
    /// the device when its sampling is launched, after the token before it is recorded.
    pub fn device_sampling(&self) -> Option<DeviceSampling> {
        let p = &self.params;
        if penalties::any(p) || p.logprobs.is_some_and(|n| n > MAX_DEVICE_TOP_LOGPROBS) {
            return None;
        }
        let greedy = self.is_greedy();
        Some(DeviceSampling {
            greedy,
            // As `processors::apply_temperature` computes it.
            inv_temperature: if greedy { 0.0 } else { 1.0 / p.temperature },
            top_k: u32::try_from(p.top_k).unwrap_or(u32::MAX),
            top_p: p.top_p,
            min_p: p.min_p,
            seed: self.seed,
            position: self.num_generated as u64,
            logprobs: p.logprobs.map(|n| n as u32),
            constrained: !p.logit_bias.is_empty() || self.constraint.is_some(),
        })
    }

    /// What a `constrained` device entry's pick applies (see [`RowConstraint`]): the logit bias
    /// and the grammar's mask for the tokens recorded so far (computed here unless prepared).
    /// `None` for an unconstrained request.
    pub fn row_constraint(&mut self) -> Option<RowConstraint<'_>> {
        let bias = self.params.logit_bias.as_slice();
        let mask = self.constraint.as_mut().map(|c| c.mask().as_slice());
        (!bias.is_empty() || mask.is_some()).then_some(RowConstraint { bias, mask })
    }

    /// Records a token a device sampler chose from [`SamplerState::device_sampling`], exactly as
    /// [`sample`] records its own.
    pub fn record_device_sample(&mut self, token: u32) {
        self.record(token);
    }
}

/// The most top logprobs a device sampler returns per token.
pub const MAX_DEVICE_TOP_LOGPROBS: usize = 20;

/// One row's sampling for a device sampler (`Backend::sample_rows`): [`sample`] without the
/// penalties, which stay on the host. Made by [`SamplerState::device_sampling`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSampling {
    /// [`SamplerState::is_greedy`]: the first maximum of the raw row.
    pub greedy: bool,
    /// `1 / temperature`, in f32 as the host computes it (unused when greedy).
    pub inv_temperature: f32,
    /// 0 or at least the vocabulary: off.
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
    /// Tokens generated so far: the draw uses `rng::uniform(seed, position)`.
    pub position: u64,
    /// `Some(n)`: the chosen token's raw logprob and the top `n` (at most 20).
    pub logprobs: Option<u32>,
    /// The pick applies a [`RowConstraint`] given when the row's sampling is launched (the
    /// step's i-th constrained entry takes the i-th constraint); logprobs stay raw.
    pub constrained: bool,
}

/// A constrained row's inputs to a device sampler besides its [`DeviceSampling`] entry, known
/// only once the token before it is recorded (the grammar's mask depends on it): OpenAI's logit
/// bias, then the grammar's mask, as [`sample`] applies them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RowConstraint<'a> {
    /// `(token, bias)` added to the logits.
    pub bias: &'a [(u32, f32)],
    /// One bit per token id (bit `id % 32` of word `id / 32`); ids past it are disallowed.
    pub mask: Option<&'a [u32]>,
}

impl RowConstraint<'_> {
    /// The bias, then the mask (disallowed tokens to -inf), on one logits row.
    pub fn apply(&self, logits: &mut [f32]) {
        bias::apply(self.bias, logits);
        if let Some(words) = self.mask {
            grammar::apply_mask(words, logits);
        }
    }
}

impl DeviceSampling {
    /// Greedy, no logprobs: also the entry of a padding row (a graph's unused rows).
    pub const GREEDY: DeviceSampling = DeviceSampling {
        greedy: true,
        inv_temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 0,
        position: 0,
        logprobs: None,
        constrained: false,
    };
}

/// Reusable buffers so steady-state sampling does not allocate per token (sized to the vocab
/// once; a longer logits row grows them once).
#[derive(Debug, Clone, Default)]
pub struct SamplerScratch {
    /// Candidate tokens as sort keys (see [`processors::Key`]).
    keys: Vec<processors::Key>,
    /// Unnormalised probabilities, indexed by token id.
    weights: Vec<f32>,
    /// The raw logits, kept for the chosen token's logprob when penalties overwrite them.
    raw: Vec<f32>,
    /// The top-p candidates in id order, while [`processors::top_p`] reorders `keys`.
    by_id: Vec<processors::Key>,
}

impl SamplerScratch {
    pub fn new(vocab: usize) -> Self {
        SamplerScratch {
            keys: Vec::with_capacity(vocab),
            weights: vec![0.0; vocab],
            raw: Vec::with_capacity(vocab),
            by_id: Vec::new(),
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
    let greedy = state.is_greedy();
    let u = (!greedy).then(|| rng::uniform(state.seed, state.num_generated as u64));
    let history = &state.history;
    let constraint = &mut state.constraint;
    let s = pick(
        logits,
        &params,
        if greedy {
            0.0
        } else {
            1.0 / params.temperature
        },
        u,
        scratch,
        |l| {
            bias::apply(&params.logit_bias, l);
            if let Some(c) = constraint {
                c.apply(l);
            }
            history.apply(&params, l)
        },
    );
    state.record(s.token);
    s
}

/// What [`sample`] picks for a [`DeviceSampling`] entry (no penalties, nothing recorded), with
/// `constraint` for a constrained entry: the host's version of a device sampler, for backends
/// that emulate one and for checking the device's.
pub fn sample_entry(
    entry: &DeviceSampling,
    constraint: Option<&RowConstraint>,
    logits: &mut [f32],
    scratch: &mut SamplerScratch,
) -> Sampled {
    let trunc = SamplingParams {
        top_k: entry.top_k as usize,
        top_p: entry.top_p,
        min_p: entry.min_p,
        logprobs: entry.logprobs.map(|n| n as usize),
        ..SamplingParams::default()
    };
    let u = (!entry.greedy).then(|| rng::uniform(entry.seed, entry.position));
    pick(logits, &trunc, entry.inv_temperature, u, scratch, |l| {
        if let Some(c) = constraint {
            c.apply(l);
        }
    })
}

/// The shared body of [`sample`] and [`sample_entry`]: raw logprobs, then `penalize`, then
/// the first maximum (`u` is `None`: greedy) or the truncated draw at `u` after scaling by
/// `inv_temperature`. Only `logprobs`, `top_k`, `top_p` and `min_p` of `params` are read.
fn pick(
    logits: &mut [f32],
    params: &SamplingParams,
    inv_temperature: f32,
    u: Option<f64>,
    scratch: &mut SamplerScratch,
    penalize: impl FnOnce(&mut [f32]),
) -> Sampled {
    // Raw log-probabilities first: everything below rewrites `logits`.
    let raw_logprobs = params.logprobs.map(|n| {
        processors::sanitize(logits);
        let ls = LogSoftmax::of(logits);
        let top = top_logprobs(logits, &ls, n, &mut scratch.keys);
        scratch.raw.clear();
        scratch.raw.extend_from_slice(logits);
        (ls, top)
    });

    penalize(logits);
    let token = match u {
        None => processors::argmax(logits), // skips NaN by itself
        Some(u) => {
            processors::scale_logits(logits, inv_temperature); // sanitizes too
            draw_truncated(logits, params, u, scratch)
        }
    };

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

/// Top-k, then top-p over the top-k distribution, then min-p (relative to the maximum, so the
/// same before or after renormalising), then the draw from what is left, renormalised.
///
/// Whatever the shape, the draw walks the surviving tokens in id order: an order a device
/// sampler can follow without sorting (a block-wide prefix sum), so both pick the same token for
/// the same `u` (`kernels/sampling.cu`).
///
/// Three shapes, cheapest first: no truncation draws straight from the weights of the whole row;
/// top-k works on its `k` survivors only; top-p / min-p without top-k turn into keys only the
/// tokens that can survive both (see [`processors::top_p_tail`]). Prefiltering by min-p before
/// top-p keeps the same set, since both keep a most-likely prefix and top-p measures mass
/// against the unfiltered total.
fn draw_truncated(
    logits: &[f32],
    params: &SamplingParams,
    u: f64,
    scratch: &mut SamplerScratch,
) -> u32 {
    let n = logits.len();
    if n == 0 {
        return 0;
    }
    let SamplerScratch {
        keys,
        weights,
        by_id,
        ..
    } = scratch;
    if weights.len() < n {
        weights.resize(n, 0.0);
    }
    if params.top_k > 0 && params.top_k < n {
        processors::top_n(logits, params.top_k, keys);
        let total = processors::weights_of_keys(logits, keys, weights);
        processors::top_p(keys, weights, total, params.top_p);
        processors::min_p(keys, weights, params.min_p);
        // The draw walks the survivors in id order, as the device sampler does.
        keys.sort_unstable_by_key(|&k| processors::key_id(k));
        return processors::draw(keys, weights, u);
    }
    let total = math::exp_shifted(logits, math::max(logits), weights);
    let top_p_on = params.top_p < 1.0; // NaN: off
    let min_p_on = params.min_p > 0.0;
    if !top_p_on && !min_p_on {
        return processors::draw_all(&weights[..n], total, u);
    }
    let mut threshold = 0.0f32;
    if top_p_on {
        threshold = threshold.max(processors::top_p_tail(params.top_p, total, n));
    }
    if min_p_on {
        threshold = threshold.max(params.min_p.min(1.0));
    }
    processors::keys_above(logits, weights, threshold, keys);
    if top_p_on {
        // `top_p` reorders the candidates; the draw walks them in id order (as the device sampler
        // does), so keep the id-ordered list and cut it at the nucleus' least likely key.
        by_id.clear();
        by_id.extend_from_slice(keys);
        processors::top_p(keys, weights, total, params.top_p);
        let boundary = keys.iter().copied().max().unwrap_or(0);
        keys.clear();
        keys.extend(by_id.iter().copied().filter(|&k| k <= boundary));
    }
    processors::min_p(keys, weights, params.min_p);
    processors::draw(keys, weights, u)
}

#[cfg(test)]
mod tests;
