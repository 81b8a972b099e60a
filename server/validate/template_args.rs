//! What the chat template gets besides the messages: `chat_template_kwargs`, `reasoning_effort`,
//! `add_generation_prompt` and `continue_final_message` (the last three and the first as vLLM
//! defines them).

use serde_json::{Map, Value};

use super::{wrong, Fields, ValidationError, R};

/// Variables the server itself sets in the template's context; `chat_template_kwargs` may not
/// replace them.
pub const RESERVED: &[&str] = &[
    "messages",
    "tools",
    "add_generation_prompt",
    "bos_token",
    "eos_token",
];

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateArgs {
    /// Extra variables for the template, e.g. `{"enable_thinking": false}` for Qwen3.
    pub kwargs: Map<String, Value>,
    /// Set as the template variable of that name; only templates that read it accept it.
    pub reasoning_effort: Option<String>,
    pub add_generation_prompt: bool,
    /// Leave the last message open so the model continues it (no end-of-turn after it).
    pub continue_final_message: bool,
}

impl Default for TemplateArgs {
    fn default() -> Self {
        TemplateArgs {
            kwargs: Map::new(),
            reasoning_effort: None,
            add_generation_prompt: true,
            continue_final_message: false,
        }
    }
}

pub(super) fn template_args(f: &Fields) -> R<TemplateArgs> {
    let kwargs = match f.get("chat_template_kwargs") {
        None => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(wrong("chat_template_kwargs", "an object")),
    };
    if let Some(key) = RESERVED.iter().find(|k| kwargs.contains_key(**k)) {
        return Err(ValidationError::ReservedTemplateKwarg(key));
    }
    let continue_final_message = f.bool("continue_final_message")?.unwrap_or(false);
    // Continuing the last message and opening a new assistant turn exclude each other, so
    // asking for the first turns the second off unless the client asked for both.
    let add_generation_prompt = match f.bool("add_generation_prompt")? {
        Some(true) if continue_final_message => {
            return Err(ValidationError::ContinueWithGenerationPrompt)
        }
        Some(b) => b,
        None => !continue_final_message,
    };
    Ok(TemplateArgs {
        kwargs,
        reasoning_effort: f.string("reasoning_effort")?,
        add_generation_prompt,
        continue_final_message,
    })
}
