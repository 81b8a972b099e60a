//! `/v1/chat/completions` wire format: chunks (each choice's first carries `delta.role`), the
//! final response and chat logprobs (`content: [{token, logprob, bytes, top_logprobs}]`).

use bytes::Bytes;
use hyper::{Response, StatusCode};

use crate::engine::request::{FinishReason, TokenLogprob};

use super::job::{Choice, Job};
use super::openai::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, ChatLogprobs, ChatMessage,
    ChatTokenLogprob, ChatTopLogprob, Delta, UsageInfo,
};
use super::response;
use super::sse::{self, Body};
use super::tools::output::{deltas, ChatOutput};
use super::validate::Endpoint;
use super::wire::WireFormat;

const CHUNK: &str = "chat.completion.chunk";
const ROLE: &str = "assistant";
const TOOL_CALLS: &str = "tool_calls";

/// The `/v1/chat/completions` format.
pub struct Chat;

impl WireFormat for Chat {
    const ENDPOINT: Endpoint = Endpoint::Chat;
    const ID_PREFIX: &'static str = "chatcmpl";
    const INPUT: &'static str = "messages";

    /// The rest of the context (at least 1, so an over-long prompt fails the context check).
    fn default_max_tokens(prompt_tokens: usize, max_context: usize) -> usize {
        max_context.saturating_sub(prompt_tokens).max(1)
    }

    fn response(job: &Job, choices: &[Choice]) -> Response<Body> {
        response::json(StatusCode::OK, &completion(job, choices))
    }

    fn opening_chunk(job: &Job, index: usize) -> Option<Bytes> {
        Some(role_chunk(job, index))
    }

    fn chunk(
        job: &Job,
        index: usize,
        text: &str,
        lps: &[TokenLogprob],
        _offset: usize,
        finish: Option<&FinishReason>,
    ) -> Bytes {
        if let Some(out) = &job.chat_output {
            return parsed_chunks(job, out, index, text, lps, finish);
        }
        let delta = Delta {
            content: (finish.is_none()).then(|| text.to_string()),
            ..Delta::default()
        };
        let choice = ChatChunkChoice {
            index,
            delta,
            logprobs: (job.want_logprobs && finish.is_none()).then(|| logprobs(job, lps)),
            finish_reason: finish.map(FinishReason::as_str),
        };
        sse::event(&base(job, vec![choice]))
    }

    fn usage_chunk(job: &Job, usage: UsageInfo) -> Bytes {
        let mut c = base(job, vec![]);
        c.usage = Some(Some(usage));
        sse::event(&c)
    }
}

/// The events for `text` of a choice whose answer is read for reasoning and tool calls: one per
/// delta it decides (none while it is held back), the logprobs on the first; at the end, the
/// held rest and the finish, `tool_calls` when the choice called a tool.
fn parsed_chunks(
    job: &Job,
    out: &ChatOutput,
    index: usize,
    text: &str,
    lps: &[TokenLogprob],
    finish: Option<&FinishReason>,
) -> Bytes {
    let (outs, called) = match finish {
        None => (out.push(index, text), false),
        Some(_) => out.finish(index),
    };
    let mut deltas: Vec<Delta> = outs.into_iter().flat_map(deltas).collect();
    let mut lps = (job.want_logprobs && !lps.is_empty()).then(|| logprobs(job, lps));
    if deltas.is_empty() && lps.is_some() {
        deltas.push(Delta::default());
    }
    let mut events = Vec::new();
    for delta in deltas {
        let choice = ChatChunkChoice {
            index,
            delta,
            logprobs: lps.take(),
            finish_reason: None,
        };
        events.extend_from_slice(&sse::event(&base(job, vec![choice])));
    }
    if let Some(reason) = finish {
        let choice = ChatChunkChoice {
            index,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: Some(finish_reason(reason, called)),
        };
        events.extend_from_slice(&sse::event(&base(job, vec![choice])));
    }
    Bytes::from(events)
}

/// `tool_calls` when the answer called a tool, else the engine's reason.
fn finish_reason(reason: &FinishReason, called: bool) -> &'static str {
    if called {
        TOOL_CALLS
    } else {
        reason.as_str()
    }
}

fn logprobs(job: &Job, lps: &[TokenLogprob]) -> ChatLogprobs {
    let content = lps
        .iter()
        .map(|lp| {
            let token = job.token_text(lp.token);
            ChatTokenLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: lp.logprob,
                top_logprobs: lp
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let token = job.token_text(id);
                        ChatTopLogprob {
                            bytes: token.as_bytes().to_vec(),
                            token,
                            logprob,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    ChatLogprobs { content }
}

fn base(job: &Job, choices: Vec<ChatChunkChoice>) -> ChatChunk<'_> {
    ChatChunk {
        id: &job.id,
        object: CHUNK,
        created: job.created,
        model: &job.model,
        choices,
        usage: job.include_usage.then_some(None),
    }
}

/// The first chunk of choice `index`: the role and empty content.
fn role_chunk(job: &Job, index: usize) -> Bytes {
    let delta = Delta {
        role: Some(ROLE),
        content: Some(String::new()),
        ..Delta::default()
    };
    let choice = ChatChunkChoice {
        index,
        delta,
        logprobs: None,
        finish_reason: None,
    };
    sse::event(&base(job, vec![choice]))
}

fn choice(job: &Job, index: usize, c: &Choice) -> ChatChoice {
    let (message, called) = match &job.chat_output {
        None => (
            ChatMessage {
                role: ROLE,
                content: Some(c.text.clone()),
                reasoning_content: None,
                tool_calls: Vec::new(),
            },
            false,
        ),
        Some(out) => {
            let m = out.message(&c.text);
            let called = !m.tool_calls.is_empty();
            let message = ChatMessage {
                role: ROLE,
                content: m.content,
                reasoning_content: m.reasoning,
                tool_calls: m.tool_calls,
            };
            (message, called)
        }
    };
    ChatChoice {
        index,
        message,
        logprobs: job.want_logprobs.then(|| logprobs(job, &c.logprobs)),
        finish_reason: c.finish.as_ref().map(|f| finish_reason(f, called)),
    }
}

fn completion<'a>(job: &'a Job, choices: &[Choice]) -> ChatCompletion<'a> {
    ChatCompletion {
        id: &job.id,
        object: "chat.completion",
        created: job.created,
        model: &job.model,
        choices: choices
            .iter()
            .enumerate()
            .map(|(index, c)| choice(job, index, c))
            .collect(),
        usage: job.usage(choices),
    }
}

#[cfg(test)]
mod tests;
