//! `tool_choice: "required"` and `{"type": "function", "function": {"name": …}}`: the answer must
//! be a call, which only constrained decoding can guarantee. The constrained text is plain JSON —
//! `{"name": …, "arguments": {…}}`, or with parallel calls a non-empty array of them — read back
//! by [`ToolSyntax::ForcedJson`](super::syntax::ToolSyntax::ForcedJson).

use serde_json::{json, Value};

use super::request::{FunctionTool, ToolChoice, ToolRequest};

/// The JSON schema a forced answer must match; `None` unless `tool_choice` forces a call.
/// Named: one call of that tool. Required: one call of any tool (`anyOf`), or with
/// `parallel_tool_calls` an array of at least one.
pub fn forced_call_schema(tools: &ToolRequest) -> Option<Value> {
    match &tools.choice {
        ToolChoice::None | ToolChoice::Auto => None,
        ToolChoice::Named(name) => tools.tool(name).map(call_schema),
        ToolChoice::Required => {
            let one = json!({"anyOf": tools.tools.iter().map(call_schema).collect::<Vec<_>>()});
            Some(if tools.parallel {
                json!({"type": "array", "minItems": 1, "items": one})
            } else {
                one
            })
        }
    }
}

/// `{"name": <the tool's name>, "arguments": <its parameters schema>}`.
fn call_schema(tool: &FunctionTool) -> Value {
    let arguments = tool
        .parameters
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}));
    json!({
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tools::request::parse_tool_fields;
    use crate::server::tools::syntax::ToolSyntax;

    fn request(choice: Value, parallel: bool) -> ToolRequest {
        let body = json!({"tools": [
            {"type": "function", "function": {"name": "add", "parameters": {"type": "object",
                "properties": {"a": {"type": "integer"}}, "required": ["a"]}}},
            {"type": "function", "function": {"name": "now"}}
        ], "tool_choice": choice, "parallel_tool_calls": parallel});
        parse_tool_fields(body.as_object().unwrap())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_named_call_is_that_tool_with_its_parameters() {
        let r = request(
            json!({"type": "function", "function": {"name": "add"}}),
            true,
        );
        let s = forced_call_schema(&r).unwrap();
        assert_eq!(s["properties"]["name"], json!({"const": "add"}));
        assert_eq!(s["properties"]["arguments"]["required"], json!(["a"]));
        assert_eq!(s["required"], json!(["name", "arguments"]));
    }

    #[test]
    fn required_is_any_tool_and_an_array_when_parallel() {
        let single = forced_call_schema(&request(json!("required"), false)).unwrap();
        let names: Vec<&Value> = single["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["properties"]["name"]["const"])
            .collect();
        assert_eq!(names, [&json!("add"), &json!("now")]);
        assert_eq!(
            single["anyOf"][1]["properties"]["arguments"],
            json!({"type": "object"})
        );
        let parallel = forced_call_schema(&request(json!("required"), true)).unwrap();
        assert_eq!(parallel["type"], "array");
        assert_eq!(parallel["minItems"], 1);
        assert_eq!(parallel["items"], single);
        assert_eq!(forced_call_schema(&request(json!("auto"), true)), None);
    }

    #[test]
    fn text_in_the_forced_format_parses_as_calls() {
        let names = vec!["add".to_string(), "now".to_string()];
        let one = r#"{"name": "add", "arguments": {"a": 2}}"#;
        let many = r#"[{"name": "add", "arguments": {"a": 2}}, {"name": "now", "arguments": {}}]"#;
        assert_eq!(
            ToolSyntax::ForcedJson
                .parse_region(one, &names)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            ToolSyntax::ForcedJson
                .parse_region(many, &names)
                .unwrap()
                .len(),
            2
        );
    }
}
