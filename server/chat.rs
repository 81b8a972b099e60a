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
use super::validate::Endpoint;
use super::wire::WireFormat;

const CHUNK: &str = "chat.completion.chunk";
const ROLE: &str = "assistant";

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
        let delta = Delta {
            role: None,
            content: (finish.is_none()).then(|| text.to_string()),
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
    };
    let choice = ChatChunkChoice {
        index,
        delta,
        logprobs: None,
        finish_reason: None,
    };
    sse::event(&base(job, vec![choice]))
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
            .map(|(index, c)| ChatChoice {
                index,
                message: ChatMessage {
                    role: ROLE,
                    content: c.text.clone(),
                },
                logprobs: job.want_logprobs.then(|| logprobs(job, &c.logprobs)),
                finish_reason: c.finish.as_ref().map(FinishReason::as_str),
            })
            .collect(),
        usage: job.usage(choices),
    }
}
