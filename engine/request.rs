//! What goes into the engine (a [`Request`]) and what comes out (a stream of [`Event`]s).
//! The server builds these from validated HTTP requests; benchmarks build them directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::device::sampling::params::{SamplingParams, TokenLogprob};

pub type RequestId = u64;

/// A request as the engine takes it: already tokenized and validated.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt_ids: Vec<u32>,
    pub params: Arc<SamplingParams>,
    /// For the `priority` policy: lower runs first (as in vLLM).
    pub priority: i32,
    /// For the `shortest-job-first` policy: how many tokens the request is expected to generate
    /// (a length predictor's guess); `max_tokens` stands in when absent.
    pub predicted_output_len: Option<usize>,
    /// Who sent it (the OpenAI `user` field), for the `vtc` fairness policy; requests without
    /// one count as one anonymous client.
    pub client: Option<Arc<str>>,
    /// Time to first token this request asks for, from its arrival at the scheduler: the
    /// `deadline` policy orders admissions by the deadline it sets. `None`: the server-wide
    /// default (`--ttft-slo-ms`), or no deadline.
    pub ttft_slo: Option<Duration>,
    pub arrival: Instant,
}

impl Request {
    pub fn new(prompt_ids: Vec<u32>, params: SamplingParams) -> Self {
        Request {
            prompt_ids,
            params: Arc::new(params),
            priority: 0,
            predicted_output_len: None,
            client: None,
            ttft_slo: None,
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
    /// The scheduler gave up on it before starting it (the `deadline` policy with
    /// `--slo-miss refuse`, once its TTFT deadline passed); the message says why. The server
    /// answers 503: the request may succeed when the server is less loaded.
    Refused(String),
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error(_) | FinishReason::Refused(_) => "error",
        }
    }
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
