//! What goes into the engine (a [`Request`]) and what comes out (a stream of [`Event`]s).
//! The server builds these from validated HTTP requests; benchmarks build them directly.

use std::sync::Arc;
use std::time::Instant;

pub type RequestId = u64;

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
        }
    }
}

/// A request as the engine takes it: already tokenized and validated.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt_ids: Vec<u32>,
    pub params: Arc<SamplingParams>,
    /// For the `priority` policy: lower runs first (as in vLLM).
    pub priority: i32,
    pub arrival: Instant,
}

impl Request {
    pub fn new(prompt_ids: Vec<u32>, params: SamplingParams) -> Self {
        Request {
            prompt_ids,
            params: Arc::new(params),
            priority: 0,
            arrival: Instant::now(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token or a stop string.
    Stop,
    /// `max_tokens` or the model's context length.
    Length,
    /// `abort` was called, or the receiver was dropped.
    Abort,
    /// Something went wrong with this request only; the message says what.
    Error(String),
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error(_) => "error",
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// When things happened to a request inside the engine (for latency metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestMetrics {
    /// From submission until first scheduled.
    pub queue_time: std::time::Duration,
    /// Times the request was preempted and recomputed.
    pub preemptions: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Newly accepted tokens and the text they complete (may be empty while a character or a
    /// possible stop string is still incomplete).
    Tokens {
        ids: Vec<u32>,
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// The last event of every request.
    Finished {
        reason: FinishReason,
        usage: Usage,
        metrics: RequestMetrics,
    },
}
