//! Request bodies of `/tokenize` and `/detokenize` (vLLM's shapes), checked like the generation
//! endpoints' so every failure names its field.

use serde_json::{Map, Value};

use super::template_args::template_args;
use super::{parse_messages, token_ids, wrong, Fields, Limits, TemplateArgs, ValidationError, R};

#[derive(Debug, Clone, PartialEq)]
pub enum TokenizeInput {
    Text(String),
    /// Chat messages, normalized as for `/v1/chat/completions`, and how to render them.
    Messages(Vec<Value>, TemplateArgs),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub input: TokenizeInput,
    /// Whether the tokenizer adds its special tokens (BOS); by default for a prompt, not for
    /// messages, whose rendered text already has them.
    pub add_special_tokens: bool,
    pub return_token_strs: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

fn object(body: &[u8]) -> R<Map<String, Value>> {
    match serde_json::from_slice(body).map_err(|e| ValidationError::NotJson(e.to_string()))? {
        Value::Object(o) => Ok(o),
        _ => Err(ValidationError::NotObject),
    }
}

/// `{"prompt": "..."}` or `{"messages": [...], "add_generation_prompt"?, ...}`.
pub fn tokenize_request(body: &[u8]) -> R<TokenizeRequest> {
    let obj = object(body)?;
    let f = Fields(&obj);
    let (input, special_default) = match (f.get("prompt"), f.get("messages")) {
        (Some(_), Some(_)) => return Err(ValidationError::PromptAndMessages),
        (None, None) => return Err(ValidationError::Missing("prompt")),
        (Some(Value::String(s)), None) => (TokenizeInput::Text(s.clone()), true),
        (Some(_), None) => return Err(wrong("prompt", "a string")),
        (None, Some(m)) => (
            TokenizeInput::Messages(parse_messages(m)?, template_args(&f)?),
            false,
        ),
    };
    Ok(TokenizeRequest {
        model: f.string("model")?,
        input,
        add_special_tokens: f.bool("add_special_tokens")?.unwrap_or(special_default),
        return_token_strs: f.bool("return_token_strs")?.unwrap_or(false),
    })
}

/// `{"tokens": [...]}`, every id inside `limits.vocab_size`.
pub fn detokenize_request(body: &[u8], limits: Limits) -> R<DetokenizeRequest> {
    let obj = object(body)?;
    let f = Fields(&obj);
    let tokens = f.get("tokens").ok_or(ValidationError::Missing("tokens"))?;
    Ok(DetokenizeRequest {
        model: f.string("model")?,
        tokens: token_ids(tokens, "tokens", limits)?,
    })
}
