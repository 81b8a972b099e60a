//! `/v1/chat/completions` wire format: messages through the chat template, chunks (the first
//! carries `delta.role`), the final response and chat logprobs (`content: [{token, logprob,
//! bytes, top_logprobs}]`).

use bytes::Bytes;
use serde_json::Value;

use crate::engine::request::{FinishReason, TokenLogprob};

use super::error::ApiError;
use super::generate::{Choice, Job};
use super::openai::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, ChatLogprobs, ChatMessage,
    ChatTokenLogprob, ChatTopLogprob, Delta, UsageInfo,
};
use super::sse;
use super::state::AppState;
use crate::model::chat_template::TemplateError;

const CHUNK: &str = "chat.completion.chunk";
const ROLE: &str = "assistant";

/// Renders the messages with the model's template and tokenizes the result. The rendered text
/// already holds the special tokens the template wants, so the tokenizer adds none.
pub fn prompt_ids(
    state: &AppState,
    messages: &[Value],
    add_generation_prompt: bool,
) -> Result<Vec<u32>, ApiError> {
    let template = state
        .template
        .as_ref()
        .map_err(|why| ApiError::bad_request(why.clone(), Some("messages")))?;
    let text = template
        .render(messages, add_generation_prompt)
        // The template compiled at startup, so whatever fails now fails for these messages
        // (e.g. a ChatML template concatenating the null content of a tool-calling turn): 400.
        .map_err(|e: TemplateError| ApiError::bad_request(e.to_string(), Some("messages")))?;
    state.tokenizer.encode(&text, false).map_err(|e| {
        ApiError::bad_request(
            format!("cannot tokenize the messages: {e}"),
            Some("messages"),
        )
    })
}

pub fn logprobs(job: &Job, lps: &[TokenLogprob]) -> ChatLogprobs {
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
pub fn role_chunk(job: &Job, index: usize) -> Bytes {
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

pub fn chunk(
    job: &Job,
    index: usize,
    text: &str,
    lps: &[TokenLogprob],
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

pub fn usage_chunk(job: &Job, usage: UsageInfo) -> Bytes {
    let mut c = base(job, vec![]);
    c.usage = Some(Some(usage));
    sse::event(&c)
}

pub fn response<'a>(job: &'a Job, choices: &[Choice]) -> ChatCompletion<'a> {
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
