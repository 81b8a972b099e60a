//! The seam between the generation driver (`generate`) and an endpoint's wire format
//! (`completions`, `chat`): the driver is written once against [`WireFormat`], and the route
//! picks the implementation.

use bytes::Bytes;
use hyper::Response;

use crate::engine::request::{FinishReason, TokenLogprob};

use super::job::{Choice, Job};
use super::openai::UsageInfo;
use super::sse::Body;
use super::validate::Endpoint;

/// How one endpoint's responses look on the wire.
pub trait WireFormat: Send + Sync + 'static {
    /// The request shape `validate` checks for.
    const ENDPOINT: Endpoint;
    /// The prefix of response ids (`{prefix}-…`).
    const ID_PREFIX: &'static str;
    /// What the client calls its input, for error messages.
    const INPUT: &'static str;

    /// `max_tokens` when the request names none.
    fn default_max_tokens(prompt_tokens: usize, max_context: usize) -> usize;

    /// The whole (non-streaming) 200 response.
    fn response(job: &Job, choices: &[Choice]) -> Response<Body>;

    /// The event that opens choice `index` of a stream before any of its text, if the format
    /// has one.
    fn opening_chunk(_job: &Job, _index: usize) -> Option<Bytes> {
        None
    }

    /// The event carrying `text` (and its logprobs `lps`) of choice `index`, whose text so far
    /// is `offset` bytes long; with `finish`, the choice's last event.
    fn chunk(
        job: &Job,
        index: usize,
        text: &str,
        lps: &[TokenLogprob],
        offset: usize,
        finish: Option<&FinishReason>,
    ) -> Bytes;

    /// The stream's closing event with the usage over all choices.
    fn usage_chunk(job: &Job, usage: UsageInfo) -> Bytes;
}
