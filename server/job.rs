//! A generation request being answered: what the wire formats need to know about it (`Job`) and
//! each choice's output so far (`Choice`), fed from the engine's events.

use std::sync::Arc;
use std::time::Instant;

use crate::engine::request::{Event, FinishReason, TokenLogprob, Usage};
use crate::model::tokenizer::Tokenizer;

use super::metrics::Metrics;
use super::openai::UsageInfo;
use super::tools::output::ChatOutput;

/// What the formatters need to know about a request.
pub struct Job {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub n: usize,
    pub want_logprobs: bool,
    pub include_usage: bool,
    pub prompt_tokens: usize,
    pub received: Instant,
    pub tokenizer: Arc<Tokenizer>,
    /// Chat answers read for reasoning and tool calls; `None`: plain text.
    pub chat_output: Option<ChatOutput>,
}

impl Job {
    /// Usage over all choices: the prompt counts once (as OpenAI counts it), completions add up.
    pub fn usage(&self, choices: &[Choice]) -> UsageInfo {
        let completion = choices.iter().map(|c| c.usage.completion_tokens).sum();
        let cached = choices.first().map_or(0, |c| c.usage.cached_tokens);
        UsageInfo::new(self.prompt_tokens, completion, cached)
    }

    /// The text clients see for token `id` (its own decoding, special tokens included).
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }
}

/// One choice's output so far.
#[derive(Default)]
pub struct Choice {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<FinishReason>,
    pub usage: Usage,
    /// When the previous token arrived (the inter-token latency's start).
    last_at: Option<Instant>,
}

impl Choice {
    /// Records one event of `job` into this choice and the latency histograms.
    pub fn apply(&mut self, metrics: &Metrics, job: &Job, ev: &Event) {
        let now = Instant::now();
        match ev {
            Event::Tokens {
                ids,
                text,
                logprobs,
            } => {
                if !ids.is_empty() {
                    match self.last_at {
                        None => metrics.observe_ttft(now - job.received),
                        Some(last) => metrics.observe_itl(now - last),
                    }
                    self.last_at = Some(now);
                }
                self.text.push_str(text);
                if job.want_logprobs {
                    self.logprobs.extend(logprobs.iter().cloned());
                }
            }
            Event::Finished {
                reason,
                usage,
                metrics: timing,
            } => {
                metrics.observe_e2e(now - job.received);
                metrics.observe_queue(timing.queue_time);
                self.finish = Some(reason.clone());
                self.usage = *usage;
            }
        }
    }
}
