//! `/v1/completions` wire format: the prompt (text or token ids), chunks, the final response and
//! the legacy logprobs layout (parallel `tokens` / `token_logprobs` / `top_logprobs` /
//! `text_offset` arrays).

use bytes::Bytes;
use std::collections::BTreeMap;

use crate::engine::request::{FinishReason, TokenLogprob};
use crate::model::tokenizer::Tokenizer;

use super::error::ApiError;
use super::generate::{Choice, Job};
use super::openai::{Completion, CompletionChoice, CompletionLogprobs, UsageInfo};
use super::sse;
use super::validate::Prompt;

const OBJECT: &str = "text_completion";

pub fn prompt_ids(tok: &Tokenizer, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
    match prompt {
        Prompt::Ids(ids) => Ok(ids.clone()),
        // Raw text gets the tokenizer's special tokens (BOS), as transformers and vLLM add them.
        Prompt::Text(text) => tok.encode(text, true).map_err(|e| {
            ApiError::bad_request(format!("cannot tokenize the prompt: {e}"), Some("prompt"))
        }),
    }
}

/// Logprobs of `lps`, whose text starts `offset` bytes into the completion.
pub fn logprobs(job: &Job, lps: &[TokenLogprob], mut offset: usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for lp in lps {
        let text = job.token_text(lp.token);
        out.text_offset.push(offset);
        offset += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(
            lp.top
                .iter()
                .map(|&(id, logprob)| (job.token_text(id), logprob))
                .collect::<BTreeMap<_, _>>(),
        );
    }
    out
}

fn base(job: &Job, choices: Vec<CompletionChoice>) -> Completion<'_> {
    Completion {
        id: &job.id,
        object: OBJECT,
        created: job.created,
        model: &job.model,
        choices,
        usage: None,
    }
}

pub fn chunk(
    job: &Job,
    index: usize,
    text: &str,
    lps: &[TokenLogprob],
    offset: usize,
    finish: Option<&FinishReason>,
) -> Bytes {
    let choice = CompletionChoice {
        index,
        text: text.to_string(),
        logprobs: job.want_logprobs.then(|| logprobs(job, lps, offset)),
        finish_reason: finish.map(FinishReason::as_str),
    };
    let mut c = base(job, vec![choice]);
    c.usage = job.include_usage.then_some(None);
    sse::event(&c)
}

pub fn usage_chunk(job: &Job, usage: UsageInfo) -> Bytes {
    let mut c = base(job, vec![]);
    c.usage = Some(Some(usage));
    sse::event(&c)
}

pub fn response<'a>(job: &'a Job, choices: &[Choice]) -> Completion<'a> {
    let out = choices
        .iter()
        .enumerate()
        .map(|(index, c)| CompletionChoice {
            index,
            text: c.text.clone(),
            logprobs: job.want_logprobs.then(|| logprobs(job, &c.logprobs, 0)),
            finish_reason: c.finish.as_ref().map(FinishReason::as_str),
        })
        .collect();
    let mut c = base(job, out);
    c.usage = Some(Some(job.usage(choices)));
    c
}
