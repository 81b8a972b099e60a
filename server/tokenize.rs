//! `POST /tokenize` and `POST /detokenize`, as vLLM serves them: a prompt or chat messages (the
//! latter rendered with the model's chat template, as `/v1/chat/completions` would) to token ids,
//! and token ids back to text. Same body limits and error envelope as the other routes.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use std::sync::Arc;

use super::body::read_json;
use super::error::ApiError;
use super::prompt::chat_text;
use super::response;
use super::sse::Body;
use super::state::AppState;
use super::validate::{
    detokenize_request, tokenize_request, Limits, TokenizeInput, TokenizeRequest, ValidationError,
};

#[derive(Serialize)]
struct Tokenized {
    count: usize,
    max_model_len: usize,
    tokens: Vec<u32>,
    /// The vocabulary's spelling of each token, when `return_token_strs` asked for it.
    token_strs: Option<Vec<String>>,
}

#[derive(Serialize)]
struct Detokenized {
    prompt: String,
}

pub async fn tokenize(
    req: Request<Incoming>,
    state: Arc<AppState>,
) -> Result<Response<Body>, ApiError> {
    let body = read_json(req, state.cfg.max_body_bytes, state.cfg.body_read_timeout).await?;
    let r = tokenize_request(&body)?;
    check_model(&state, r.model.as_deref())?;
    // Templates and tokenizers are CPU work proportional to the (body-bounded) input.
    let st = state.clone();
    let out = tokio::task::spawn_blocking(move || tokenized(&st, r))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))??;
    Ok(response::json(StatusCode::OK, &out))
}

pub async fn detokenize(
    req: Request<Incoming>,
    state: Arc<AppState>,
) -> Result<Response<Body>, ApiError> {
    let body = read_json(req, state.cfg.max_body_bytes, state.cfg.body_read_timeout).await?;
    // The tokenizer's vocabulary, not the model's (which may be padded past it): an id the
    // tokenizer does not know would silently decode to nothing.
    let limits = Limits {
        vocab_size: state.tokenizer.vocab_size(),
    };
    let r = detokenize_request(&body, limits)?;
    check_model(&state, r.model.as_deref())?;
    let tokenizer = state.tokenizer.clone();
    let prompt = tokio::task::spawn_blocking(move || tokenizer.decode(&r.tokens, false))
        .await
        .map_err(|e| ApiError::internal(format!("detokenizing failed: {e}")))?
        .map_err(|e| ApiError::bad_request(e.to_string(), Some("tokens")))?;
    Ok(response::json(StatusCode::OK, &Detokenized { prompt }))
}

fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != state.model_name() => Err(ApiError::model_not_found(m)),
        _ => Ok(()),
    }
}

fn tokenized(state: &AppState, r: TokenizeRequest) -> Result<Tokenized, ApiError> {
    let (text_bytes, input) = match &r.input {
        TokenizeInput::Text(t) => (t.len(), "prompt"),
        TokenizeInput::Messages(m, _) => (
            m.iter()
                .filter_map(|m| m["content"].as_str())
                .map(str::len)
                .sum(),
            "messages",
        ),
    };
    // The same bound as generation: text that cannot fit the context is not worth the CPU.
    let max_context = state.handle.model().max_context;
    if text_bytes > state.max_text_bytes {
        return Err(ValidationError::TextTooLong {
            max_context,
            bytes: text_bytes,
            max_bytes: state.max_text_bytes,
            input,
        }
        .into());
    }
    let text = match r.input {
        TokenizeInput::Text(t) => t,
        TokenizeInput::Messages(m, args) => chat_text(state, &m, &args, None)?,
    };
    let tokens = state
        .tokenizer
        .encode(&text, r.add_special_tokens)
        .map_err(|e| ApiError::bad_request(format!("cannot tokenize: {e}"), Some(input)))?;
    let token_strs = r.return_token_strs.then(|| {
        tokens
            .iter()
            .map(|&id| state.tokenizer.id_to_token(id).unwrap_or_default())
            .collect()
    });
    Ok(Tokenized {
        count: tokens.len(),
        max_model_len: max_context,
        tokens,
        token_strs,
    })
}
