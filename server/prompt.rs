//! A request's input as token ids: a completions prompt (text or ids) or chat messages rendered
//! with the model's chat template.

use serde_json::Value;

use crate::model::chat_template::TemplateError;
use crate::model::tokenizer::Tokenizer;

use super::error::ApiError;
use super::state::AppState;
use super::tools::request::ToolRequest;
use super::tools::template::template_input;
use super::validate::{Input, Prompt};

/// The token ids of `input`.
pub fn prompt_ids(
    state: &AppState,
    input: &Input,
    add_generation_prompt: bool,
    tools: Option<&ToolRequest>,
) -> Result<Vec<u32>, ApiError> {
    match input {
        Input::Prompt(p) => completion_ids(&state.tokenizer, p),
        Input::Messages(m) => chat_ids(state, m, add_generation_prompt, tools),
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
    add_generation_prompt: bool,
    tools: Option<&ToolRequest>,
) -> Result<Vec<u32>, ApiError> {
    let template = state
        .template
        .as_ref()
        .map_err(|why| ApiError::bad_request(why.clone(), Some("messages")))?;
    let input = template_input(messages, tools, template.uses_tools());
    let text = template
        .render_with_tools(
            &input.messages,
            add_generation_prompt,
            input.tools.as_deref(),
        )
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
