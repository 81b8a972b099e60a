//! Raw request JSON → a typed [`ValidRequest`], or the one rule it broke.
//!
//! Fields are read one by one from a `serde_json::Value` rather than through a derived
//! `Deserialize`, so that every failure can name its `param` (OpenAI's error envelope does), nulls
//! mean "absent", and unknown fields are ignored. Each rule is one [`ValidationError`] variant.
//! Which fields are honoured, and which refused, is decided in one place: [`fields`].

use serde_json::{Map, Value};

use crate::device::sampling::grammar::ConstraintSpec;
use crate::engine::admission::{self, Rejection};
use crate::engine::request::SamplingParams;

use super::error::ApiError;
use super::messages::{parse_messages, MessageError};
use super::tools::forced::forced_call_schema;
use super::tools::history::parse_tool_call_arguments;
use super::tools::request::{parse_tool_fields, ToolError, ToolRequest};

pub mod fields;
mod template_args;
mod tokenize;
pub use template_args::{TemplateArgs, RESERVED as RESERVED_TEMPLATE_VARS};
pub use tokenize::{
    detokenize_request, tokenize_request, DetokenizeRequest, TokenizeInput, TokenizeRequest,
};

mod constraint;
pub use constraint::{RequestedConstraint, MAX_LOGIT_BIAS};

/// Most choices one request may ask for (`n`).
pub const MAX_N: usize = 16;
/// Most alternatives per token (`logprobs` for completions, `top_logprobs` for chat).
pub const MAX_LOGPROBS: usize = 20;
/// Most stop strings, and the longest one in bytes: the engine thread matches every stop string
/// against each new piece of text (work that grows with their count and length squared).
pub const MAX_STOP: usize = 16;
pub const MAX_STOP_BYTES: usize = 256;
/// Most `stop_token_ids`.
pub const MAX_STOP_TOKEN_IDS: usize = 256;
/// The longest `user` in bytes: the fairness policy keeps a counter per user while it has
/// requests in the server.
pub const MAX_USER_BYTES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Prompt(Prompt),
    /// Chat messages, normalized: `content` is a string (or null), other keys kept as sent.
    Messages(Vec<Value>),
}

/// A request that passed every check that needs no tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    pub endpoint: Endpoint,
    pub model: Option<String>,
    pub input: Input,
    /// `None`: the endpoint's default (completions 16, chat the rest of the context).
    pub max_tokens: Option<usize>,
    /// The name the client used for the limit, for error messages.
    pub max_tokens_param: &'static str,
    /// Everything but `max_tokens`, which is decided once the prompt length is known.
    pub params: SamplingParams,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// Whether to return logprobs at all (chat's `logprobs: true`, completions' `logprobs: k`).
    pub want_logprobs: bool,
    /// The chat template's inputs besides the messages (defaults for completions).
    pub template: TemplateArgs,
    pub priority: i32,
    /// The OpenAI `user` field: who sent it, for the fairness policy (`vtc`).
    pub user: Option<String>,
    /// `ttft_slo_ms` (a tandem extension): the request's TTFT SLO, for the `deadline` policy.
    pub ttft_slo: Option<std::time::Duration>,
    /// Chat `tools` and how the model may use them; `None` without tools.
    pub tools: Option<ToolRequest>,
    /// The structured-output constraint, compiled into `params.constraint` once the tokenizer
    /// is at hand.
    pub constraint: Option<RequestedConstraint>,
}

/// What validation needs to know about the served model.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub vocab_size: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("the request body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the request body must be a JSON object")]
    NotObject,
    #[error("Invalid type for '{param}': expected {expected}.")]
    WrongType {
        param: String,
        expected: &'static str,
    },
    #[error("Missing required parameter: '{0}'.")]
    Missing(&'static str),
    #[error("'{0}' must not be empty")]
    Empty(&'static str),
    #[error("give 'prompt' or 'messages', not both")]
    PromptAndMessages,
    #[error("a batch of prompts is not supported; send one prompt per request")]
    BatchedPrompt,
    #[error("token id {id} in '{param}' is outside the vocabulary (size {vocab})")]
    TokenOutOfVocab {
        param: &'static str,
        id: i128,
        vocab: usize,
    },
    #[error("'{0}' must be at least 1")]
    MaxTokensNotPositive(&'static str),
    #[error("'temperature' must be >= 0")]
    TemperatureNegative,
    #[error("'top_p' must be in (0, 1]")]
    TopPOutOfRange,
    #[error("'top_k' must be -1 (off), 0 (off) or a positive integer")]
    TopKOutOfRange,
    #[error("'min_p' must be in [0, 1]")]
    MinPOutOfRange,
    #[error("'{0}' must be in [-2, 2]")]
    PenaltyOutOfRange(&'static str),
    #[error("'repetition_penalty' must be in (0, 2]")]
    RepetitionPenaltyOutOfRange,
    #[error("'n' must be between 1 and {MAX_N}")]
    NOutOfRange,
    #[error("'{0}' must be between 0 and {MAX_LOGPROBS}")]
    LogprobsOutOfRange(&'static str),
    #[error("'top_logprobs' needs 'logprobs' to be true")]
    TopLogprobsWithoutLogprobs,
    #[error("'stop' must not contain an empty string")]
    EmptyStop,
    #[error("'stop' may hold at most {MAX_STOP} strings of at most {MAX_STOP_BYTES} bytes each")]
    StopTooLarge,
    #[error("'stop_token_ids' may hold at most {MAX_STOP_TOKEN_IDS} ids")]
    TooManyStopTokenIds,
    #[error("'seed' must fit in 64 bits")]
    SeedOutOfRange,
    #[error("'user' may be at most {MAX_USER_BYTES} bytes")]
    UserTooLong,
    #[error("'stream_options' is only allowed when 'stream' is true")]
    StreamOptionsWithoutStream,
    #[error("'{param}' is not supported: {why}")]
    Unsupported {
        param: &'static str,
        why: &'static str,
    },
    #[error("'chat_template_kwargs' may not set '{0}', which the server sets")]
    ReservedTemplateKwarg(&'static str),
    #[error("'continue_final_message' and 'add_generation_prompt' cannot both be true")]
    ContinueWithGenerationPrompt,
    #[error("{0}")]
    Message(#[from] MessageError),
    #[error("{0}")]
    Tools(#[from] ToolError),
    #[error("Invalid '{param}': {why}")]
    Invalid { param: String, why: String },
    #[error(
        "'{first}' and '{second}' both constrain the output; a request may use only one \
         structured-output constraint"
    )]
    ConflictingConstraints {
        first: &'static str,
        second: &'static str,
    },
    /// Text so long that it cannot fit the context whatever it tokenizes to: refused before
    /// tokenizing (seconds of CPU for a few MiB).
    #[error(
        "This model's maximum context length is {max_context} tokens. However, your {input} \
         has {bytes} bytes of text, and no more than {max_bytes} can fit in it. Please reduce \
         the length of the {input}."
    )]
    TextTooLong {
        max_context: usize,
        bytes: usize,
        max_bytes: usize,
        input: &'static str,
    },
    #[error(
        "This model's maximum context length is {max_context} tokens. However, you requested \
         {total} tokens ({prompt_tokens} in the {input}, {max_tokens} in the completion). \
         Please reduce the length of the {input} or completion."
    )]
    ContextLength {
        max_context: usize,
        total: usize,
        prompt_tokens: usize,
        max_tokens: usize,
        /// "prompt" or "messages".
        input: &'static str,
    },
}

impl ValidationError {
    /// The request field at fault.
    pub fn param(&self) -> Option<String> {
        use ValidationError::*;
        let p: &str = match self {
            NotJson(_) | NotObject | BatchedPrompt => return None,
            WrongType { param, .. } | Invalid { param, .. } => param,
            ConflictingConstraints { second, .. } => second,
            Missing(p) | Empty(p) | MaxTokensNotPositive(p) | PenaltyOutOfRange(p) => p,
            LogprobsOutOfRange(p) | Unsupported { param: p, .. } => p,
            ReservedTemplateKwarg(key) => return Some(format!("chat_template_kwargs.{key}")),
            ContinueWithGenerationPrompt => "continue_final_message",
            PromptAndMessages => "prompt",
            TokenOutOfVocab { param, .. } => param,
            TemperatureNegative => "temperature",
            TopPOutOfRange => "top_p",
            TopKOutOfRange => "top_k",
            MinPOutOfRange => "min_p",
            RepetitionPenaltyOutOfRange => "repetition_penalty",
            NOutOfRange => "n",
            TopLogprobsWithoutLogprobs => "top_logprobs",
            EmptyStop | StopTooLarge => "stop",
            TooManyStopTokenIds => "stop_token_ids",
            SeedOutOfRange => "seed",
            UserTooLong => "user",
            StreamOptionsWithoutStream => "stream_options",
            Message(m) => return Some(m.param()),
            Tools(t) => return Some(t.param()),
            ContextLength { input, .. } | TextTooLong { input, .. } => input,
        };
        Some(p.to_string())
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        let code = match e {
            ValidationError::ContextLength { .. } | ValidationError::TextTooLong { .. } => {
                Some("context_length_exceeded")
            }
            _ => None,
        };
        let mut err = ApiError::bad_request(e.to_string(), e.param().as_deref());
        err.code = code;
        err
    }
}

type R<T> = Result<T, ValidationError>;

/// Parses and checks a request body for `endpoint`.
pub fn validate(body: &[u8], endpoint: Endpoint, limits: Limits) -> R<ValidRequest> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ValidationError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ValidationError::NotObject);
    };
    fields::check(&obj, endpoint)?;
    let f = Fields(&obj);

    let model = f.string("model")?;
    let input = match endpoint {
        Endpoint::Completions => Input::Prompt(prompt(&f, limits)?),
        Endpoint::Chat => {
            let msgs = f
                .get("messages")
                .ok_or(ValidationError::Missing("messages"))?;
            let mut msgs = parse_messages(msgs)?;
            parse_tool_call_arguments(&mut msgs)?;
            Input::Messages(msgs)
        }
    };
    let tools = match endpoint {
        Endpoint::Chat => parse_tool_fields(&obj)?,
        Endpoint::Completions => None,
    };

    let (max_tokens, max_tokens_param) = match endpoint {
        Endpoint::Chat if f.get("max_completion_tokens").is_some() => {
            (f.int("max_completion_tokens")?, "max_completion_tokens")
        }
        _ => (f.int("max_tokens")?, "max_tokens"),
    };
    let max_tokens = match max_tokens {
        Some(m) if m < 1 => return Err(ValidationError::MaxTokensNotPositive(max_tokens_param)),
        Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
        None => None,
    };

    let mut p = SamplingParams::default();
    if let Some(t) = f.num("temperature")? {
        if t < 0.0 {
            return Err(ValidationError::TemperatureNegative);
        }
        p.temperature = t as f32;
    }
    if let Some(t) = f.num("top_p")? {
        if !(t > 0.0 && t <= 1.0) {
            return Err(ValidationError::TopPOutOfRange);
        }
        p.top_p = t as f32;
    }
    if let Some(k) = f.int("top_k")? {
        if k < -1 {
            return Err(ValidationError::TopKOutOfRange);
        }
        p.top_k = usize::try_from(k.max(0)).unwrap_or(usize::MAX);
    }
    if let Some(m) = f.num("min_p")? {
        if !(0.0..=1.0).contains(&m) {
            return Err(ValidationError::MinPOutOfRange);
        }
        p.min_p = m as f32;
    }
    for (name, slot) in [
        ("presence_penalty", &mut p.presence_penalty),
        ("frequency_penalty", &mut p.frequency_penalty),
    ] {
        if let Some(v) = f.num(name)? {
            if !(-2.0..=2.0).contains(&v) {
                return Err(ValidationError::PenaltyOutOfRange(name));
            }
            *slot = v as f32;
        }
    }
    if let Some(v) = f.num("repetition_penalty")? {
        if !(v > 0.0 && v <= 2.0) {
            return Err(ValidationError::RepetitionPenaltyOutOfRange);
        }
        p.repetition_penalty = v as f32;
    }
    if let Some(s) = f.int("seed")? {
        // Negative seeds are accepted (as their two's-complement bits), like vLLM.
        if s < i64::MIN as i128 || s > u64::MAX as i128 {
            return Err(ValidationError::SeedOutOfRange);
        }
        p.seed = Some(if s < 0 { s as i64 as u64 } else { s as u64 });
    }
    p.stop = stop(&f)?;
    if let Some(ids) = f.get("stop_token_ids") {
        p.stop_token_ids = token_ids(ids, "stop_token_ids", limits)?;
        if p.stop_token_ids.len() > MAX_STOP_TOKEN_IDS {
            return Err(ValidationError::TooManyStopTokenIds);
        }
    }
    p.ignore_eos = f.bool("ignore_eos")?.unwrap_or(false);
    p.logit_bias = constraint::logit_bias(&f, limits)?;
    let mut constraint = constraint::constraint(&f)?;
    // A forced tool call (`required`, or a named function) is a JSON-schema constraint of its
    // own, read back as plain JSON calls (server/tools/forced.rs).
    if let Some(schema) = tools.as_ref().and_then(forced_call_schema) {
        if let Some(c) = &constraint {
            return Err(ValidationError::ConflictingConstraints {
                first: c.param,
                second: "tool_choice",
            });
        }
        constraint = Some(RequestedConstraint {
            spec: ConstraintSpec::JsonSchema(schema),
            param: "tool_choice",
        });
    }

    let n = match f.int("n")? {
        None => 1,
        Some(n) if (1..=MAX_N as i128).contains(&n) => n as usize,
        Some(_) => return Err(ValidationError::NOutOfRange),
    };

    let (want_logprobs, top) = logprobs(&f, endpoint)?;
    p.logprobs = want_logprobs.then_some(top);

    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(_) if !stream => return Err(ValidationError::StreamOptionsWithoutStream),
        Some(Value::Object(o)) => Fields(o)
            .bool("include_usage")
            .map_err(|_| wrong("stream_options.include_usage", "a boolean"))?
            .unwrap_or(false),
        Some(_) => return Err(wrong("stream_options", "an object")),
    };
    let template = match endpoint {
        Endpoint::Chat => template_args::template_args(&f)?,
        Endpoint::Completions => TemplateArgs::default(),
    };
    let priority = match f.int("priority")? {
        None => 0,
        Some(v) => i32::try_from(v).map_err(|_| wrong("priority", "a 32-bit integer"))?,
    };

    let user = f.string("user")?;
    if user.as_ref().is_some_and(|u| u.len() > MAX_USER_BYTES) {
        return Err(ValidationError::UserTooLong);
    }

    let ttft_slo = match f.num("ttft_slo_ms")? {
        None => None,
        Some(ms) => Some(
            std::time::Duration::try_from_secs_f64(ms / 1e3)
                .map_err(|_| wrong("ttft_slo_ms", "a number of milliseconds >= 0"))?,
        ),
    };

    Ok(ValidRequest {
        endpoint,
        model,
        input,
        max_tokens,
        max_tokens_param,
        params: p,
        n,
        stream,
        include_usage,
        want_logprobs,
        template,
        priority,
        user,
        ttft_slo,
        tools,
        constraint,
    })
}

/// The prompt/max_tokens check every request passes before the engine sees it.
pub fn check_context(
    prompt_tokens: usize,
    max_tokens: usize,
    max_context: usize,
    endpoint: Endpoint,
) -> R<()> {
    match admission::check_context(prompt_tokens, max_tokens, max_context) {
        Err(Rejection::ContextLength {
            max_context,
            total,
            prompt_tokens,
            max_tokens,
        }) => Err(ValidationError::ContextLength {
            max_context,
            total,
            prompt_tokens,
            max_tokens,
            input: match endpoint {
                Endpoint::Completions => "prompt",
                Endpoint::Chat => "messages",
            },
        }),
        _ => Ok(()),
    }
}

fn wrong(param: &str, expected: &'static str) -> ValidationError {
    ValidationError::WrongType {
        param: param.to_string(),
        expected,
    }
}

/// `prompt`: a string, an array of token ids, or a one-element array of either.
fn prompt(f: &Fields, limits: Limits) -> R<Prompt> {
    const EXPECTED: &str = "a string or an array of token ids";
    match f.get("prompt") {
        None => Err(ValidationError::Missing("prompt")),
        Some(Value::String(s)) if s.is_empty() => Err(ValidationError::Empty("prompt")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) if items.is_empty() => Err(ValidationError::Empty("prompt")),
        Some(Value::Array(items)) => match &items[..] {
            [Value::String(_) | Value::Array(_)] => {
                // `["text"]` or `[[1, 2]]`: a batch of one.
                let inner = Map::from_iter([("prompt".to_string(), items[0].clone())]);
                prompt(&Fields(&inner), limits)
            }
            _ if items.iter().all(Value::is_number) => Ok(Prompt::Ids(token_ids(
                &Value::Array(items.clone()),
                "prompt",
                limits,
            )?)),
            _ if items.iter().all(|i| i.is_string() || i.is_array()) => {
                Err(ValidationError::BatchedPrompt)
            }
            _ => Err(wrong("prompt", EXPECTED)),
        },
        Some(_) => Err(wrong("prompt", EXPECTED)),
    }
}

/// An array of token ids, each inside the vocabulary.
fn token_ids(v: &Value, param: &'static str, limits: Limits) -> R<Vec<u32>> {
    let Value::Array(items) = v else {
        return Err(wrong(param, "an array of integers"));
    };
    items
        .iter()
        .map(|i| {
            let id = as_int(i).ok_or_else(|| wrong(param, "an array of integers"))?;
            if id < 0 || id >= limits.vocab_size as i128 {
                return Err(ValidationError::TokenOutOfVocab {
                    param,
                    id,
                    vocab: limits.vocab_size,
                });
            }
            Ok(id as u32)
        })
        .collect()
}

/// `stop`: a string or a list of non-empty strings.
fn stop(f: &Fields) -> R<Vec<String>> {
    let stops = match f.get("stop") {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong("stop", "a string or an array of strings"))
            })
            .collect::<R<Vec<_>>>()?,
        Some(_) => return Err(wrong("stop", "a string or an array of strings")),
    };
    if stops.iter().any(String::is_empty) {
        return Err(ValidationError::EmptyStop);
    }
    if stops.len() > MAX_STOP || stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ValidationError::StopTooLarge);
    }
    Ok(stops)
}

/// (whether to return logprobs, how many alternatives per token).
fn logprobs(f: &Fields, endpoint: Endpoint) -> R<(bool, usize)> {
    let in_range = |v: i128, param| {
        if (0..=MAX_LOGPROBS as i128).contains(&v) {
            Ok(v as usize)
        } else {
            Err(ValidationError::LogprobsOutOfRange(param))
        }
    };
    match endpoint {
        Endpoint::Completions => match f.int("logprobs")? {
            None => Ok((false, 0)),
            Some(k) => Ok((true, in_range(k, "logprobs")?)),
        },
        Endpoint::Chat => {
            let on = f.bool("logprobs")?.unwrap_or(false);
            match f.int("top_logprobs")? {
                None => Ok((on, 0)),
                Some(_) if !on => Err(ValidationError::TopLogprobsWithoutLogprobs),
                Some(k) => Ok((true, in_range(k, "top_logprobs")?)),
            }
        }
    }
}

/// An integer, also when written as an integral float (`16.0`); i128 holds every i64 and u64.
fn as_int(v: &Value) -> Option<i128> {
    if let Some(i) = v.as_i64() {
        return Some(i as i128);
    }
    if let Some(u) = v.as_u64() {
        return Some(u as i128);
    }
    // Saturating cast: integral floats past the 64-bit range stay out of range.
    v.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i128)
}

/// Typed, null-tolerant access to the request's fields.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The field, with JSON `null` read as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> R<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(wrong(key, "a string")),
        }
    }

    fn bool(&self, key: &str) -> R<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong(key, "a boolean")),
        }
    }

    fn num(&self, key: &str) -> R<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            // Past f32's range a value would become infinite inside the sampler.
            Some(v) => v
                .as_f64()
                .filter(|x| (*x as f32).is_finite())
                .map(Some)
                .ok_or_else(|| wrong(key, "a number")),
        }
    }

    fn int(&self, key: &str) -> R<Option<i128>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_int(v).map(Some).ok_or_else(|| wrong(key, "an integer")),
        }
    }
}

#[cfg(test)]
mod tests;
