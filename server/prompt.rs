//! A request's input as token ids: a completions prompt (text or ids) or chat messages rendered
//! with the model's chat template.

use serde_json::{Map, Value};

use crate::model::chat_template::{ChatTemplate, TemplateError};
use crate::model::tokenizer::Tokenizer;

use super::error::ApiError;
use super::state::AppState;
use super::tools::request::ToolRequest;
use super::tools::template::template_input;
use super::validate::{Input, Prompt, TemplateArgs};

/// The token ids of `input`; `tools` (chat only) reach the template or its fallback prompt.
pub fn prompt_ids(
    state: &AppState,
    input: &Input,
    template: &TemplateArgs,
    tools: Option<&ToolRequest>,
) -> Result<Vec<u32>, ApiError> {
    match input {
        Input::Prompt(p) => completion_ids(&state.tokenizer, p),
        Input::Messages(m) => chat_ids(state, m, template, tools),
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
    tools: Option<&ToolRequest>,
) -> Result<Vec<u32>, ApiError> {
    let text = chat_text(state, messages, template, tools)?;
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
    tools: Option<&ToolRequest>,
) -> Result<String, ApiError> {
    let template = state
        .template
        .as_ref()
        .map_err(|why| ApiError::bad_request(why.clone(), Some("messages")))?;
    render(template, messages, args, tools)
}

fn render(
    template: &ChatTemplate,
    messages: &[Value],
    args: &TemplateArgs,
    tools: Option<&ToolRequest>,
) -> Result<String, ApiError> {
    let vars = template_vars(template, args)?;
    // A template without tool support gets them as a system prompt, and earlier calls and
    // results as plain text.
    let input = template_input(messages, tools, template.uses_tools());
    let render = |messages: &[Value]| {
        template
            .render_with(
                messages,
                args.add_generation_prompt,
                input.tools.as_deref(),
                &vars,
            )
            // The template compiled at startup, so whatever fails now fails for these messages
            // (e.g. a ChatML template concatenating the null content of a tool-calling turn).
            .map_err(|e: TemplateError| ApiError::bad_request(e.to_string(), Some("messages")))
    };
    let text = render(&input.messages)?;
    if !args.continue_final_message {
        return Ok(text);
    }
    open_final_message(text, &input.messages, render)
}

/// The variables the template gets besides those the renderer sets: `chat_template_kwargs`,
/// and `reasoning_effort` where the template reads it.
fn template_vars(
    template: &ChatTemplate,
    args: &TemplateArgs,
) -> Result<Map<String, Value>, ApiError> {
    let mut vars = args.kwargs.clone();
    if let Some(effort) = &args.reasoning_effort {
        // A template that never reads it would render the same prompt whatever the effort.
        if !template.reads("reasoning_effort") {
            return Err(ApiError::bad_request(
                "'reasoning_effort' is not supported: the model's chat template does not read it",
                Some("reasoning_effort"),
            ));
        }
        vars.insert("reasoning_effort".into(), Value::String(effort.clone()));
    }
    Ok(vars)
}

/// Stands in for the final message's content to find where the template writes it.
const MARKER: &str = "\u{FDD0}tandem-final-message\u{FDD0}";

/// `text` cut right after the final message's content, dropping the end-of-turn the template
/// put after it, so generation continues that message. Where the content starts is found by
/// rendering once more with [`MARKER`] in its place: searching `text` for the content itself
/// could match elsewhere (a final message "a" inside "</assistant>").
fn open_final_message(
    mut text: String,
    messages: &[Value],
    render: impl Fn(&[Value]) -> Result<String, ApiError>,
) -> Result<String, ApiError> {
    let refuse = |why: &str| Err(ApiError::bad_request(why, Some("continue_final_message")));
    let content = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    if content.is_empty() {
        return refuse("the final message has no text to continue");
    }
    let mut marked = messages.to_vec();
    if let Some(last) = marked.last_mut() {
        last["content"] = Value::String(MARKER.into());
    }
    let end = render(&marked)?
        .find(MARKER)
        .and_then(|at| Some(at + text.get(at..)?.find(content)? + content.len()));
    match end {
        Some(end) => {
            text.truncate(end);
            Ok(text)
        }
        None => refuse("the chat template does not write the final message's text as it is"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EFFORT: &str = "{% if reasoning_effort is defined %}[{{ reasoning_effort }}]{% endif %}{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}";

    fn args(v: Value) -> TemplateArgs {
        let mut a = TemplateArgs::default();
        if let Some(e) = v.get("reasoning_effort") {
            a.reasoning_effort = e.as_str().map(str::to_string);
        }
        if let Some(Value::Object(k)) = v.get("kwargs") {
            a.kwargs = k.clone();
        }
        a
    }

    #[test]
    fn reasoning_effort_reaches_a_template_that_reads_it() {
        let t = ChatTemplate::new(EFFORT, "", "").unwrap();
        let vars = template_vars(
            &t,
            &args(json!({"reasoning_effort": "high", "kwargs": {"x": 1}})),
        )
        .unwrap();
        assert_eq!(vars["reasoning_effort"], "high");
        assert_eq!(vars["x"], 1);
        let msgs = [json!({"role": "user", "content": "q"})];
        assert_eq!(
            t.render_with(&msgs, true, None, &vars).unwrap(),
            "[high]<user>q</user>"
        );

        let plain = ChatTemplate::new("{{ messages[0].content }}", "", "").unwrap();
        let e = template_vars(&plain, &args(json!({"reasoning_effort": "high"}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
        assert!(template_vars(&plain, &args(json!({}))).is_ok());
    }

    #[test]
    fn the_final_message_is_left_open() {
        let t = ChatTemplate::new(EFFORT, "", "").unwrap();
        let mut continued = TemplateArgs {
            add_generation_prompt: false,
            continue_final_message: true,
            ..TemplateArgs::default()
        };
        let msgs = [
            json!({"role": "user", "content": "q"}),
            json!({"role": "assistant", "content": "a"}),
        ];
        // "a" also occurs in "</assistant>", after the content: the cut is after the content.
        assert_eq!(
            render(&t, &msgs, &continued, None).unwrap(),
            "<user>q</user><assistant>a"
        );
        continued.reasoning_effort = Some("low".into());
        assert_eq!(
            render(&t, &msgs, &continued, None).unwrap(),
            "[low]<user>q</user><assistant>a"
        );

        // Nothing to continue, or a template that rewrites the content: a 400 naming the flag.
        continued.reasoning_effort = None;
        let upper = ChatTemplate::new(
            "{% for m in messages %}{{ m.content.upper() }};{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let empty = [json!({"role": "assistant", "content": null})];
        for e in [
            render(&upper, &msgs, &continued, None).unwrap_err(),
            render(&t, &empty, &continued, None).unwrap_err(),
        ] {
            assert_eq!(e.param.as_deref(), Some("continue_final_message"));
        }
    }
}
