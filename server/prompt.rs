//! A request's input as token ids: a completions prompt (text or ids) or chat messages rendered
//! with the model's chat template.

use serde_json::Value;

use crate::model::chat_template::TemplateError;
use crate::model::tokenizer::Tokenizer;

use super::error::ApiError;
use super::state::AppState;
use super::validate::{Input, Prompt, TemplateArgs};

/// The token ids of `input`.
pub fn prompt_ids(
    state: &AppState,
    input: &Input,
    template: &TemplateArgs,
) -> Result<Vec<u32>, ApiError> {
    match input {
        Input::Prompt(p) => completion_ids(&state.tokenizer, p),
        Input::Messages(m) => chat_ids(state, m, template),
    }
}

fn completion_ids(tok: &Tokenizer, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
    match prompt {
        Prompt::Ids(ids) => Ok(ids.clone()),
        // Raw text gets the tokenizer's special tokens (BOS), as transformers and vLLM add them.
        Prompt::Text(text) => tok.encode(text, true).map_err(|e| {
            ApiError::bad_request(format!("cannot tokenize the prompt: {e}"), Some("prompt"))
        }),
    }
}

/// Renders the messages with the model's template and tokenizes the result. The rendered text
/// already holds the special tokens the template wants, so the tokenizer adds none.
fn chat_ids(
    state: &AppState,
    messages: &[Value],
    template: &TemplateArgs,
) -> Result<Vec<u32>, ApiError> {
    let text = chat_text(state, messages, template)?;
    state.tokenizer.encode(&text, false).map_err(|e| {
        ApiError::bad_request(
            format!("cannot tokenize the messages: {e}"),
            Some("messages"),
        )
    })
}

/// The prompt text the model's chat template makes of `messages`.
pub fn chat_text(
    state: &AppState,
    messages: &[Value],
    args: &TemplateArgs,
) -> Result<String, ApiError> {
    let template = state
        .template
        .as_ref()
        .map_err(|why| ApiError::bad_request(why.clone(), Some("messages")))?;
    let mut extra = args.kwargs.clone();
    if let Some(effort) = &args.reasoning_effort {
        // A template that never reads it would render the same prompt whatever the effort.
        if !template.reads("reasoning_effort") {
            return Err(ApiError::bad_request(
                "'reasoning_effort' is not supported: the model's chat template does not read it",
                Some("reasoning_effort"),
            ));
        }
        extra.insert("reasoning_effort".into(), Value::String(effort.clone()));
    }
    let text = template
        .render_with(messages, args.add_generation_prompt, &extra)
        // The template compiled at startup, so whatever fails now fails for these messages
        // (e.g. a ChatML template concatenating the null content of a tool-calling turn): 400.
        .map_err(|e: TemplateError| ApiError::bad_request(e.to_string(), Some("messages")))?;
    if args.continue_final_message {
        return open_final_message(text, messages);
    }
    Ok(text)
}

/// `text` cut right after the last message's content, dropping the end-of-turn the template
/// put after it, so generation continues that message.
fn open_final_message(mut text: String, messages: &[Value]) -> Result<String, ApiError> {
    let refuse = |why: &str| Err(ApiError::bad_request(why, Some("continue_final_message")));
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    if last.is_empty() {
        return refuse("the final message has no text to continue");
    }
    match text.rfind(last) {
        Some(at) => {
            text.truncate(at + last.len());
            Ok(text)
        }
        None => {
            refuse("the chat template changes the final message's text, so it cannot be continued")
        }
    }
}
