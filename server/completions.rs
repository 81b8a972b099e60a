//! `/v1/completions` wire format: chunks, the final response and the legacy logprobs layout
//! (parallel `tokens` / `token_logprobs` / `top_logprobs` / `text_offset` arrays).

use bytes::Bytes;
use hyper::{Response, StatusCode};
use std::collections::BTreeMap;

use crate::engine::request::{FinishReason, TokenLogprob};

use super::job::{Choice, Job};
use super::openai::{Completion, CompletionChoice, CompletionLogprobs, UsageInfo};
use super::response;
use super::sse::{self, Body};
use super::validate::Endpoint;
use super::wire::WireFormat;

const OBJECT: &str = "text_completion";
/// `max_tokens` when the request names none (OpenAI's default).
const DEFAULT_MAX_TOKENS: usize = 16;

/// The `/v1/completions` format.
pub struct Completions;

impl WireFormat for Completions {
    const ENDPOINT: Endpoint = Endpoint::Completions;
    const ID_PREFIX: &'static str = "cmpl";
    const INPUT: &'static str = "prompt";

    fn default_max_tokens(_prompt_tokens: usize, _max_context: usize) -> usize {
        DEFAULT_MAX_TOKENS
    }

    fn response(job: &Job, choices: &[Choice]) -> Response<Body> {
        response::json(StatusCode::OK, &completion(job, choices))
    }

    fn chunk(
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

    fn usage_chunk(job: &Job, usage: UsageInfo) -> Bytes {
        let mut c = base(job, vec![]);
        c.usage = Some(Some(usage));
        sse::event(&c)
    }
}

/// Logprobs of `lps`, whose text starts `offset` bytes into the completion.
fn logprobs(job: &Job, lps: &[TokenLogprob], mut offset: usize) -> CompletionLogprobs {
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

fn completion<'a>(job: &'a Job, choices: &[Choice]) -> Completion<'a> {
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
