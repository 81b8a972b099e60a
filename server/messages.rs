//! Chat `messages` → the list the chat template renders.
//!
//! OpenAI allows `content` as a string, as null (an assistant turn with tool calls), or as a list
//! of parts; only text parts are supported here, joined with newlines (as vLLM does). Keys other
//! than `role` and `content` (`name`, `tool_calls`, `tool_call_id`, …) pass through to the template.

use serde_json::{Map, Value};

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("Invalid type for 'messages': expected an array of message objects.")]
    NotArray,
    #[error("'messages' must not be empty")]
    Empty,
    #[error("Invalid type for 'messages[{0}]': expected an object.")]
    NotObject(usize),
    #[error("Missing required parameter: 'messages[{0}].role'.")]
    MissingRole(usize),
    #[error("'messages[{index}].role' must be one of system, developer, user, assistant, tool; got {role:?}")]
    BadRole { index: usize, role: String },
    #[error("Missing required parameter: 'messages[{0}].content'.")]
    MissingContent(usize),
    #[error(
        "Invalid type for 'messages[{0}].content': expected a string or an array of text parts."
    )]
    BadContent(usize),
    #[error("'messages[{index}].content[{part}]': only parts of type 'text' are supported")]
    UnsupportedPart { index: usize, part: usize },
}

impl MessageError {
    pub fn param(&self) -> String {
        use MessageError::*;
        match self {
            NotArray | Empty => "messages".into(),
            NotObject(i) => format!("messages[{i}]"),
            MissingRole(i) | BadRole { index: i, .. } => format!("messages[{i}].role"),
            MissingContent(i) | BadContent(i) => format!("messages[{i}].content"),
            UnsupportedPart { index, part } => format!("messages[{index}].content[{part}]"),
        }
    }
}

/// Checks `messages` and normalizes each one's `content` to a string (or null).
pub fn parse_messages(v: &Value) -> Result<Vec<Value>, MessageError> {
    let Value::Array(items) = v else {
        return Err(MessageError::NotArray);
    };
    if items.is_empty() {
        return Err(MessageError::Empty);
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(index: usize, v: &Value) -> Result<Value, MessageError> {
    let Value::Object(obj) = v else {
        return Err(MessageError::NotObject(index));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.as_str(),
        Some(Value::String(r)) => {
            return Err(MessageError::BadRole {
                index,
                role: r.clone(),
            });
        }
        Some(other) => {
            return Err(MessageError::BadRole {
                index,
                role: other.to_string(),
            });
        }
        None => return Err(MessageError::MissingRole(index)),
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => Value::String(join_parts(index, parts)?),
        // An assistant turn that only calls tools has no content.
        Some(Value::Null) | None if role == "assistant" => Value::Null,
        None | Some(Value::Null) => return Err(MessageError::MissingContent(index)),
        Some(_) => return Err(MessageError::BadContent(index)),
    };
    let mut out: Map<String, Value> = obj.clone();
    // Templates rarely know "developer" (OpenAI's newer name for the system role).
    let role = if role == "developer" { "system" } else { role };
    out.insert("role".into(), Value::String(role.into()));
    out.insert("content".into(), content);
    Ok(Value::Object(out))
}

fn join_parts(index: usize, parts: &[Value]) -> Result<String, MessageError> {
    let texts = parts
        .iter()
        .enumerate()
        .map(
            |(part, p)| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                (Some("text"), _) => Err(MessageError::BadContent(index)),
                _ => Err(MessageError::UnsupportedPart { index, part }),
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    Ok(texts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_parts_are_joined_and_developer_becomes_system() {
        let m = parse_messages(&json!([
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "x"}
        ]))
        .unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(
            m[1],
            json!({"role": "user", "content": "a\nb", "name": "x"})
        );
    }

    #[test]
    fn malformed_messages_name_the_field() {
        let cases = [
            (json!("hi"), "messages"),
            (json!([]), "messages"),
            (json!([1]), "messages[0]"),
            (json!([{"content": "x"}]), "messages[0].role"),
            (
                json!([{"role": "wizard", "content": "x"}]),
                "messages[0].role",
            ),
            (json!([{"role": 3, "content": "x"}]), "messages[0].role"),
            (json!([{"role": "user"}]), "messages[0].content"),
            (
                json!([{"role": "user", "content": 5}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": "ok"}, {"role": "user", "content": [{"type": "image_url"}]}]),
                "messages[1].content[0]",
            ),
        ];
        for (input, param) in cases {
            let err = parse_messages(&input).unwrap_err();
            assert_eq!(err.param(), param, "{input}");
        }
    }

    #[test]
    fn assistant_may_have_null_content() {
        let m = parse_messages(&json!([{"role": "assistant", "content": null, "tool_calls": []}]));
        assert_eq!(m.unwrap()[0]["content"], Value::Null);
    }
}
