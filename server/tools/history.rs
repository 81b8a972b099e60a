//! Earlier tool use in `messages`: assistant turns carrying `tool_calls` and `tool` results.
//!
//! Clients send each call's `function.arguments` as a JSON string; templates iterate over it or
//! `tojson` it, so it is parsed to a value before rendering (as vLLM does). For templates that know
//! nothing of tools, [`as_plain_text`] rewrites the history into the text format the fallback
//! system prompt teaches (see `template.rs`).

use serde_json::{json, Value};

use super::request::ToolError;

/// Checks the `tool_calls` of assistant turns and the `tool_call_id` of tool results, and parses
/// each call's `arguments` string into JSON.
pub fn parse_tool_call_arguments(messages: &mut [Value]) -> Result<(), ToolError> {
    for (i, m) in messages.iter_mut().enumerate() {
        if let Some(id) = m.get("tool_call_id").filter(|v| !v.is_null()) {
            if !id.is_string() {
                return Err(ToolError::WrongType {
                    param: format!("messages[{i}].tool_call_id"),
                    expected: "a string",
                });
            }
        }
        let Some(calls) = m.get_mut("tool_calls") else {
            continue;
        };
        let calls = match calls {
            Value::Null => continue,
            Value::Array(calls) => calls,
            _ => {
                return Err(ToolError::WrongType {
                    param: format!("messages[{i}].tool_calls"),
                    expected: "an array of tool calls",
                })
            }
        };
        for (j, call) in calls.iter_mut().enumerate() {
            let param = format!("messages[{i}].tool_calls[{j}].function");
            let Some(f) = call.get_mut("function").and_then(Value::as_object_mut) else {
                return Err(ToolError::Missing(param));
            };
            if !f.get("name").is_some_and(Value::is_string) {
                return Err(ToolError::Missing(format!("{param}.name")));
            }
            let args = match f.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(s)) => {
                    serde_json::from_str(s).map_err(|e| ToolError::BadHistory {
                        param: format!("{param}.arguments"),
                        why: format!("not valid JSON ({e})"),
                    })?
                }
                Some(v @ Value::Object(_)) => v.clone(),
                Some(_) => {
                    return Err(ToolError::WrongType {
                        param: format!("{param}.arguments"),
                        expected: "a JSON string",
                    })
                }
            };
            f.insert("arguments".into(), args);
        }
    }
    Ok(())
}

/// The history with tool use written as text: an assistant turn's calls appended to its content
/// as `<tool_call>{"name": …, "arguments": …}</tool_call>` blocks, and each tool result turned
/// into a user turn holding `<tool_response>…</tool_response>`.
pub fn as_plain_text(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let role = m["role"].as_str().unwrap_or_default();
            let mut out = m.clone();
            let Some(obj) = out.as_object_mut() else {
                return out;
            };
            if role == "tool" {
                let content = m["content"].as_str().unwrap_or_default();
                obj.insert("role".into(), json!("user"));
                obj.insert(
                    "content".into(),
                    json!(format!("<tool_response>\n{content}\n</tool_response>")),
                );
                obj.remove("tool_call_id");
            } else if let Some(Value::Array(calls)) = obj.remove("tool_calls") {
                let mut text = m["content"].as_str().unwrap_or_default().to_string();
                for call in &calls {
                    let f = &call["function"];
                    let block = call_text(&f["name"], &f["arguments"]);
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("<tool_call>\n{block}\n</tool_call>"));
                }
                obj.insert("content".into(), json!(text));
            }
            out
        })
        .collect()
}

/// `{"name": …, "arguments": …}` with the name first, as the fallback prompt shows it.
pub fn call_text(name: &Value, arguments: &Value) -> String {
    format!("{{\"name\": {name}, \"arguments\": {arguments}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: Value) -> Value {
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": args}}
        ]})
    }

    #[test]
    fn argument_strings_become_json() {
        let mut m = vec![call(json!("{\"x\": 1}")), call(json!({"y": 2}))];
        parse_tool_call_arguments(&mut m).unwrap();
        assert_eq!(
            m[0]["tool_calls"][0]["function"]["arguments"],
            json!({"x": 1})
        );
        assert_eq!(
            m[1]["tool_calls"][0]["function"]["arguments"],
            json!({"y": 2})
        );
    }

    #[test]
    fn broken_history_names_the_field() {
        let cases = [
            (
                call(json!("{not json")),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                call(json!(5)),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"role": "assistant", "tool_calls": {}}),
                "messages[0].tool_calls",
            ),
            (
                json!({"role": "assistant", "tool_calls": [{"id": "x"}]}),
                "messages[0].tool_calls[0].function",
            ),
            (
                json!({"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}),
                "messages[0].tool_calls[0].function.name",
            ),
            (
                json!({"role": "tool", "content": "x", "tool_call_id": 3}),
                "messages[0].tool_call_id",
            ),
        ];
        for (m, param) in cases {
            let err = parse_tool_call_arguments(&mut [m.clone()]).expect_err(&m.to_string());
            assert_eq!(err.param(), param, "{m}");
        }
    }

    #[test]
    fn plain_text_history_spells_calls_and_results() {
        let mut m = vec![
            call(json!("{\"city\": \"Paris\"}")),
            json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"}),
        ];
        parse_tool_call_arguments(&mut m).unwrap();
        let t = as_plain_text(&m);
        assert_eq!(
            t[0],
            json!({"role": "assistant",
                "content": "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>"})
        );
        assert_eq!(
            t[1],
            json!({"role": "user", "content": "<tool_response>\n18C\n</tool_response>"})
        );
    }
}
