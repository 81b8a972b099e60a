//! What the chat template renders for a request with tools: the tools in its `tools` variable
//! when the template uses one, otherwise the fallback — a system prompt listing the tools and
//! teaching the `<tool_call>` format, with earlier tool use rewritten as text.

use serde_json::{json, Value};

use super::history;
use super::request::{ToolChoice, ToolRequest};

/// The messages and `tools` variable to render.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateInput {
    pub messages: Vec<Value>,
    pub tools: Option<Vec<Value>>,
}

/// `tool_choice: "none"` hides the tools from the model (as vLLM does by default).
pub fn template_input(
    messages: &[Value],
    tools: Option<&ToolRequest>,
    template_uses_tools: bool,
) -> TemplateInput {
    let offered = tools.filter(|t| t.choice != ToolChoice::None);
    if template_uses_tools {
        return TemplateInput {
            messages: messages.to_vec(),
            tools: offered.map(ToolRequest::template_tools),
        };
    }
    let mut messages = history::as_plain_text(messages);
    if let Some(t) = offered {
        with_system_prompt(&mut messages, &fallback_system_prompt(t));
    }
    TemplateInput {
        messages,
        tools: None,
    }
}

/// The instructions a template without tool support gets (documented in the README).
pub fn fallback_system_prompt(tools: &ToolRequest) -> String {
    let listed: Vec<String> = tools
        .template_tools()
        .iter()
        .map(Value::to_string)
        .collect();
    format!(
        "You can call functions. Their JSON schemas:\n<tools>\n{}\n</tools>\nTo call functions, \
         answer with one block per call:\n<tool_call>\n{{\"name\": <function-name>, \
         \"arguments\": <arguments-object>}}\n</tool_call>",
        listed.join("\n")
    )
}

/// Appends `prompt` to the first message when it is a system message, else prepends one.
fn with_system_prompt(messages: &mut Vec<Value>, prompt: &str) {
    match messages.first_mut() {
        Some(first) if first["role"] == "system" => {
            let content = first["content"].as_str().unwrap_or_default();
            let merged = if content.is_empty() {
                prompt.to_string()
            } else {
                format!("{content}\n\n{prompt}")
            };
            first["content"] = Value::String(merged);
        }
        _ => messages.insert(0, json!({"role": "system", "content": prompt})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tools::request::parse_tool_fields;

    fn tools(choice: &str) -> ToolRequest {
        let body = json!({"tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object"}}}], "tool_choice": choice});
        parse_tool_fields(body.as_object().unwrap())
            .unwrap()
            .unwrap()
    }

    fn user() -> Vec<Value> {
        vec![json!({"role": "user", "content": "weather?"})]
    }

    #[test]
    fn a_tool_aware_template_gets_the_tools_variable() {
        let t = tools("auto");
        let input = template_input(&user(), Some(&t), true);
        assert_eq!(input.messages, user());
        assert_eq!(input.tools.unwrap()[0]["function"]["name"], "get_weather");
        assert_eq!(
            template_input(&user(), Some(&tools("none")), true).tools,
            None
        );
    }

    #[test]
    fn the_fallback_prepends_or_merges_a_system_prompt() {
        let t = tools("auto");
        let input = template_input(&user(), Some(&t), false);
        assert_eq!(input.tools, None);
        assert_eq!(input.messages.len(), 2);
        assert_eq!(input.messages[0]["role"], "system");
        let prompt = input.messages[0]["content"].as_str().unwrap();
        assert!(prompt.contains("\"name\":\"get_weather\"") && prompt.contains("<tool_call>"));

        let mut with_system = vec![json!({"role": "system", "content": "Be brief."})];
        with_system.extend(user());
        let input = template_input(&with_system, Some(&t), false);
        assert_eq!(input.messages.len(), 2);
        let merged = input.messages[0]["content"].as_str().unwrap();
        assert!(merged.starts_with("Be brief.\n\n") && merged.contains("get_weather"));

        let none = template_input(&user(), Some(&tools("none")), false);
        assert_eq!(none.messages, user(), "tool_choice none: no prompt");
    }
}
