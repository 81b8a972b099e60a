//! Which request fields the server acts on, and the 400 for those it cannot honour.
//!
//! Every field the OpenAI API defines for `/v1/completions` and `/v1/chat/completions`, and the
//! vLLM extensions tandem reads, has one row in [`FIELDS`]. A client that
//! asks for something tandem does not do gets a 400 naming the field instead of a different
//! answer than it asked for. Fields in neither table are ignored, as OpenAI ignores fields it
//! does not know; a `null` value is the same as an absent field. README's field table mirrors
//! these tables (a test checks it).

use serde_json::{Map, Value};

use super::{Endpoint, ValidationError};

/// What the server does with a field.
#[derive(Debug, Clone, Copy)]
pub enum Policy {
    /// Read by `validate` (or the chat template) and acted on.
    Honoured,
    /// Accepted whatever its value: by OpenAI's own definition it does not change the output.
    NoOp(&'static str),
    /// Accepted only with a value that asks for nothing tandem lacks (`accept`); otherwise a 400
    /// saying `why`.
    Only {
        accept: fn(&Value, &Map<String, Value>) -> bool,
        why: &'static str,
    },
    /// Any value is a 400 saying why.
    Refused(&'static str),
}

/// Which endpoints a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Both,
    Chat,
    Completions,
}

impl On {
    fn covers(self, endpoint: Endpoint) -> bool {
        match self {
            On::Both => true,
            On::Chat => endpoint == Endpoint::Chat,
            On::Completions => endpoint == Endpoint::Completions,
        }
    }
}

pub struct Field {
    pub name: &'static str,
    pub on: On,
    pub policy: Policy,
}

const fn f(name: &'static str, on: On, policy: Policy) -> Field {
    Field { name, on, policy }
}

use On::{Both, Chat, Completions};
use Policy::{Honoured, NoOp, Only, Refused};

/// Every other field the server knows, in the order of README's table.
pub const FIELDS: &[Field] = &[
    // Structured outputs and biases (server/validate/constraint.rs, device/sampling/grammar/).
    f("response_format", Both, Honoured),
    f("logit_bias", Both, Honoured),
    f("guided_json", Both, Honoured),
    f("guided_regex", Both, Honoured),
    f("guided_choice", Both, Honoured),
    f("guided_grammar", Both, Honoured),
    f("structured_outputs", Both, Honoured),
    // OpenAI, chat: tool calling (server/tools/).
    f("tools", Chat, Honoured),
    f("tool_choice", Chat, Honoured),
    f("parallel_tool_calls", Chat, Honoured),
    // OpenAI, both endpoints.
    f("model", Both, Honoured),
    f("frequency_penalty", Both, Honoured),
    f("presence_penalty", Both, Honoured),
    f("logprobs", Both, Honoured),
    f("max_tokens", Both, Honoured),
    f("n", Both, Honoured),
    f("seed", Both, Honoured),
    f("stop", Both, Honoured),
    f("stream", Both, Honoured),
    f("stream_options", Both, Honoured),
    f("temperature", Both, Honoured),
    f("top_p", Both, Honoured),
    f("user", Both, Honoured),
    // OpenAI, completions.
    f("prompt", Completions, Honoured),
    f(
        "best_of",
        Completions,
        Only {
            accept: best_of_is_n,
            why: "only best_of equal to n (no server-side selection among extra samples)",
        },
    ),
    f(
        "echo",
        Completions,
        Only {
            accept: is_false,
            why: "the prompt is not echoed; only echo: false",
        },
    ),
    f(
        "suffix",
        Completions,
        Only {
            accept: is_empty_string,
            why: "no fill-in-the-middle; only an empty suffix",
        },
    ),
    // OpenAI, chat.
    f("messages", Chat, Honoured),
    f("max_completion_tokens", Chat, Honoured),
    f("top_logprobs", Chat, Honoured),
    // Passed to the chat template; a 400 when the model's template does not read it.
    f("reasoning_effort", Chat, Honoured),
    f(
        "store",
        Chat,
        NoOp("nothing is stored; storing does not change the answer"),
    ),
    f(
        "metadata",
        Chat,
        NoOp("tags for stored completions; nothing is stored"),
    ),
    f(
        "service_tier",
        Chat,
        NoOp("one tier; the tier does not change the answer"),
    ),
    f(
        "prompt_cache_key",
        Chat,
        NoOp("prefix caching is automatic; the key is a routing hint"),
    ),
    f(
        "safety_identifier",
        Chat,
        NoOp("an abuse-monitoring id; it does not change the answer"),
    ),
    f(
        "modalities",
        Chat,
        Only {
            accept: text_only,
            why: "text output only; only [\"text\"]",
        },
    ),
    f(
        "verbosity",
        Chat,
        Only {
            accept: is_medium,
            why: "the answer's length is not steered; only the default \"medium\"",
        },
    ),
    f("audio", Chat, Refused("no audio output")),
    f("prediction", Chat, Refused("no predicted outputs")),
    f("web_search_options", Chat, Refused("no web search")),
    f(
        "functions",
        Chat,
        Refused("deprecated by OpenAI; use tools"),
    ),
    f(
        "function_call",
        Chat,
        Refused("deprecated by OpenAI; use tool_choice"),
    ),
    // vLLM extensions tandem implements.
    f("top_k", Both, Honoured),
    f("min_p", Both, Honoured),
    f("repetition_penalty", Both, Honoured),
    f("stop_token_ids", Both, Honoured),
    f("ignore_eos", Both, Honoured),
    f("priority", Both, Honoured),
    f("add_generation_prompt", Chat, Honoured),
    f("continue_final_message", Chat, Honoured),
    f("chat_template_kwargs", Chat, Honoured),
    // vLLM extensions tandem does not implement: refused unless they ask for the default.
    f(
        "use_beam_search",
        Both,
        Only {
            accept: is_false,
            why: "no beam search",
        },
    ),
    f(
        "min_tokens",
        Both,
        Only {
            accept: is_zero,
            why: "no minimum length; only 0",
        },
    ),
    f(
        "prompt_logprobs",
        Both,
        Refused("no logprobs of prompt tokens"),
    ),
    f("allowed_token_ids", Both, Refused("no allowed-token list")),
    f(
        "bad_words",
        Both,
        Only {
            accept: is_empty_array,
            why: "no banned words; only []",
        },
    ),
    f(
        "include_stop_str_in_output",
        Both,
        Only {
            accept: is_false,
            why: "stop strings are always cut from the output",
        },
    ),
    f(
        "skip_special_tokens",
        Both,
        Only {
            accept: is_true,
            why: "special tokens are always left out of the text",
        },
    ),
    f(
        "truncate_prompt_tokens",
        Both,
        Refused("prompts are never truncated"),
    ),
    f(
        "chat_template",
        Chat,
        Refused("only the model's own chat template"),
    ),
    f(
        "echo",
        Chat,
        Only {
            accept: is_false,
            why: "the last message is not echoed; only echo: false",
        },
    ),
];

/// The row for `name` on `endpoint`, if the server knows the field there.
pub fn policy(name: &str, endpoint: Endpoint) -> Option<Policy> {
    FIELDS
        .iter()
        .find(|r| r.name == name && r.on.covers(endpoint))
        .map(|r| r.policy)
}

/// A 400 for the first field of `obj` (in table order) the server cannot honour on `endpoint`.
pub fn check(obj: &Map<String, Value>, endpoint: Endpoint) -> Result<(), ValidationError> {
    for row in FIELDS.iter().filter(|r| r.on.covers(endpoint)) {
        let Some(value) = obj.get(row.name).filter(|v| !v.is_null()) else {
            continue;
        };
        let why = match row.policy {
            Refused(why) => why,
            Only { accept, why } if !accept(value, obj) => why,
            _ => continue,
        };
        return Err(ValidationError::Unsupported {
            param: row.name,
            why,
        });
    }
    Ok(())
}

fn is_false(v: &Value, _: &Map<String, Value>) -> bool {
    v == &Value::Bool(false)
}

fn is_true(v: &Value, _: &Map<String, Value>) -> bool {
    v == &Value::Bool(true)
}

fn is_zero(v: &Value, _: &Map<String, Value>) -> bool {
    v.as_f64() == Some(0.0)
}

fn is_empty_string(v: &Value, _: &Map<String, Value>) -> bool {
    v.as_str() == Some("")
}

fn is_empty_array(v: &Value, _: &Map<String, Value>) -> bool {
    v.as_array().is_some_and(Vec::is_empty)
}

fn is_medium(v: &Value, _: &Map<String, Value>) -> bool {
    v.as_str() == Some("medium")
}

fn text_only(v: &Value, _: &Map<String, Value>) -> bool {
    v.as_array()
        .is_some_and(|m| m.iter().all(|x| x.as_str() == Some("text")))
}

/// `best_of` equal to `n` (1 when `n` is absent) samples exactly what `n` alone would.
fn best_of_is_n(v: &Value, obj: &Map<String, Value>) -> bool {
    let n = obj
        .get("n")
        .filter(|n| !n.is_null())
        .map_or(Some(1.0), Value::as_f64);
    v.as_f64().is_some() && v.as_f64() == n
}
