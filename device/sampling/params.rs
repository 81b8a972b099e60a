//! What a request asks of sampling (its [`SamplingParams`]) and what a sample reports back
//! about its alternatives ([`TokenLogprob`]).

use std::sync::Arc;

use crate::device::sampling::grammar::CompiledGrammar;

/// How to pick tokens and when to stop, per request. Defaults: greedy, no limits but `max_tokens`.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability sums to `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one; 0 = off.
    pub min_p: f32,
    /// Subtracted once from the logit of every token already generated (OpenAI semantics).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
    /// HF/vLLM repetition penalty over prompt and generated tokens; 1 = off.
    pub repetition_penalty: f32,
    /// Seeds the request's own generator; `None` = a random seed chosen at submission.
    pub seed: Option<u64>,
    /// Log-probability of each chosen token plus this many top alternatives (0..=20); `None` = off.
    pub logprobs: Option<usize>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Generation stops after any of these (the token is kept in the ids, not in the text).
    pub stop_token_ids: Vec<u32>,
    /// Generation stops when the text contains any of these; the stop string is not returned.
    pub stop: Vec<String>,
    /// Keep going past the model's end-of-sequence tokens.
    pub ignore_eos: bool,
    /// OpenAI `logit_bias`: (token id, bias) added to the raw logits (see `sample`'s order).
    pub logit_bias: Vec<(u32, f32)>,
    /// The grammar the output must match (structured outputs); `None`: unconstrained.
    pub constraint: Option<Arc<CompiledGrammar>>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            logprobs: None,
            max_tokens: 16,
            stop_token_ids: Vec::new(),
            stop: Vec::new(),
            ignore_eos: false,
            logit_bias: Vec::new(),
            constraint: None,
        }
    }
}

/// A chosen token's log-probability and the most likely alternatives at that step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// (token, logprob), most likely first.
    pub top: Vec<(u32, f32)>,
}
