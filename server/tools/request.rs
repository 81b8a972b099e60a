//! The request's `tools`, `tool_choice` and `parallel_tool_calls`, checked field by field so that
//! every refusal names the parameter at fault.

use serde_json::{json, Map, Value};

/// Longest function name OpenAI accepts; names are `[A-Za-z0-9_-]{1,64}`.
const MAX_NAME_LEN: usize = 64;

/// One `{"type": "function", "function": {...}}` entry of `tools`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON schema of the arguments (an object), as sent.
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model is not told about the tools and its output is not parsed for calls.
    None,
    /// The model may call tools; its output is parsed for calls.
    Auto,
    /// The model must call at least one tool (needs constrained decoding).
    Required,
    /// The model must call this tool (needs constrained decoding).
    Named(String),
}

impl ToolChoice {
    /// Whether the output must be a call, which only a grammar can guarantee.
    pub fn forces_call(&self) -> bool {
        matches!(self, ToolChoice::Required | ToolChoice::Named(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    pub tools: Vec<FunctionTool>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls`: false keeps only the first call of an answer.
    pub parallel: bool,
}

impl ToolRequest {
    /// The tools as HF chat templates expect them in their `tools` variable.
    pub fn template_tools(&self) -> Vec<Value> {
        self.tools.iter().map(FunctionTool::to_json).collect()
    }

    pub fn tool(&self, name: &str) -> Option<&FunctionTool> {
        self.tools.iter().find(|t| t.name == name)
    }
}

impl FunctionTool {
    /// `{"type": "function", "function": {name, description?, parameters?, strict?}}`.
    pub fn to_json(&self) -> Value {
        let mut f = Map::new();
        f.insert("name".into(), Value::String(self.name.clone()));
        if let Some(d) = &self.description {
            f.insert("description".into(), Value::String(d.clone()));
        }
        if let Some(p) = &self.parameters {
            f.insert("parameters".into(), p.clone());
        }
        if let Some(s) = self.strict {
            f.insert("strict".into(), Value::Bool(s));
        }
        json!({"type": "function", "function": f})
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    #[error("Invalid type for '{param}': expected {expected}.")]
    WrongType {
        param: String,
        expected: &'static str,
    },
    #[error("Missing required parameter: '{0}'.")]
    Missing(String),
    #[error("'{param}': only tools of type 'function' are supported")]
    UnsupportedType { param: String },
    #[error("'{param}' must match ^[a-zA-Z0-9_-]{{1,{MAX_NAME_LEN}}}$; got {name:?}")]
    BadName { param: String, name: String },
    #[error("'{param}': the function name {name:?} appears more than once in 'tools'")]
    DuplicateName { param: String, name: String },
    #[error("'tool_choice' must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")]
    BadChoice,
    #[error("'tool_choice' names the function {0:?}, which is not in 'tools'")]
    UnknownChoice(String),
    #[error("'tool_choice' {0:?} needs 'tools'")]
    ChoiceWithoutTools(String),
    #[error("Invalid value for '{param}': {why}")]
    BadHistory { param: String, why: String },
}

impl ToolError {
    pub fn param(&self) -> String {
        use ToolError::*;
        match self {
            WrongType { param, .. }
            | Missing(param)
            | UnsupportedType { param }
            | BadName { param, .. }
            | DuplicateName { param, .. }
            | BadHistory { param, .. } => param.clone(),
            BadChoice | UnknownChoice(_) | ChoiceWithoutTools(_) => "tool_choice".into(),
        }
    }
}

fn wrong(param: impl Into<String>, expected: &'static str) -> ToolError {
    ToolError::WrongType {
        param: param.into(),
        expected,
    }
}

/// The tool fields of a chat request (JSON nulls read as absent). `None` when the request has no
/// tools, or none the model may use.
pub fn parse_tool_fields(body: &Map<String, Value>) -> Result<Option<ToolRequest>, ToolError> {
    let get = |k: &str| body.get(k).filter(|v| !v.is_null());
    let tools = match get("tools") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| tool(i, t))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(wrong("tools", "an array of tools")),
    };
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|u| u.name == t.name) {
            return Err(ToolError::DuplicateName {
                param: format!("tools[{i}].function.name"),
                name: t.name.clone(),
            });
        }
    }
    let parallel = match get("parallel_tool_calls") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(wrong("parallel_tool_calls", "a boolean")),
    };
    let choice = match get("tool_choice") {
        None if tools.is_empty() => ToolChoice::None,
        None => ToolChoice::Auto,
        Some(v) => choice(v)?,
    };
    if tools.is_empty() {
        return match choice {
            ToolChoice::None => Ok(None),
            ToolChoice::Auto => Err(ToolError::ChoiceWithoutTools("auto".into())),
            ToolChoice::Required => Err(ToolError::ChoiceWithoutTools("required".into())),
            ToolChoice::Named(n) => Err(ToolError::UnknownChoice(n)),
        };
    }
    if let ToolChoice::Named(n) = &choice {
        if !tools.iter().any(|t| &t.name == n) {
            return Err(ToolError::UnknownChoice(n.clone()));
        }
    }
    Ok(Some(ToolRequest {
        tools,
        choice,
        parallel,
    }))
}

fn tool(i: usize, v: &Value) -> Result<FunctionTool, ToolError> {
    let param = format!("tools[{i}]");
    let Value::Object(t) = v else {
        return Err(wrong(param, "an object"));
    };
    match t.get("type") {
        Some(Value::String(s)) if s == "function" => {}
        Some(Value::String(_)) => return Err(ToolError::UnsupportedType { param }),
        Some(_) => return Err(wrong(format!("{param}.type"), "a string")),
        None => return Err(ToolError::Missing(format!("{param}.type"))),
    }
    let fparam = format!("{param}.function");
    let f = match t.get("function") {
        Some(Value::Object(f)) => f,
        Some(_) => return Err(wrong(fparam, "an object")),
        None => return Err(ToolError::Missing(fparam)),
    };
    let field = |k: &str| f.get(k).filter(|v| !v.is_null());
    let name = match field("name") {
        Some(Value::String(n)) => n.clone(),
        Some(_) => return Err(wrong(format!("{fparam}.name"), "a string")),
        None => return Err(ToolError::Missing(format!("{fparam}.name"))),
    };
    if !valid_name(&name) {
        return Err(ToolError::BadName {
            param: format!("{fparam}.name"),
            name,
        });
    }
    let description = match field("description") {
        None => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => return Err(wrong(format!("{fparam}.description"), "a string")),
    };
    let parameters = match field("parameters") {
        None => None,
        Some(p @ Value::Object(_)) => Some(p.clone()),
        Some(_) => {
            return Err(wrong(
                format!("{fparam}.parameters"),
                "a JSON schema object",
            ))
        }
    };
    let strict = match field("strict") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(wrong(format!("{fparam}.strict"), "a boolean")),
    };
    Ok(FunctionTool {
        name,
        description,
        parameters,
        strict,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn choice(v: &Value) -> Result<ToolChoice, ToolError> {
    match v {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            _ => Err(ToolError::BadChoice),
        },
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ToolError::BadChoice);
            }
            match o.get("function").and_then(|f| f.get("name")) {
                Some(Value::String(n)) => Ok(ToolChoice::Named(n.clone())),
                _ => Err(ToolError::BadChoice),
            }
        }
        _ => Err(ToolError::BadChoice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Option<ToolRequest>, ToolError> {
        parse_tool_fields(v.as_object().unwrap())
    }

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
    }

    #[test]
    fn tools_default_to_auto_and_parallel() {
        let r = parse(json!({"tools": [weather()]})).unwrap().unwrap();
        assert_eq!(r.choice, ToolChoice::Auto);
        assert!(r.parallel);
        assert_eq!(r.tools[0].name, "get_weather");
        assert_eq!(r.template_tools()[0], weather());
    }

    #[test]
    fn every_choice_form_is_read() {
        let with = |c: Value| parse(json!({"tools": [weather()], "tool_choice": c}));
        assert_eq!(
            with(json!("none")).unwrap().unwrap().choice,
            ToolChoice::None
        );
        assert_eq!(
            with(json!("required")).unwrap().unwrap().choice,
            ToolChoice::Required
        );
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "get_weather"}}))
                .unwrap()
                .unwrap()
                .choice,
            ToolChoice::Named("get_weather".into())
        );
        let r = parse(json!({"tools": [weather()], "parallel_tool_calls": false}));
        assert!(!r.unwrap().unwrap().parallel);
    }

    #[test]
    fn no_tools_is_none_and_nulls_are_absent() {
        assert_eq!(parse(json!({})).unwrap(), None);
        assert_eq!(
            parse(json!({"tools": null, "tool_choice": null})).unwrap(),
            None
        );
        assert_eq!(
            parse(json!({"tools": [], "tool_choice": "none"})).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_tool_fields_name_the_param() {
        let f = |v: Value| json!({"type": "function", "function": v});
        let cases = [
            (json!({"tools": {}}), "tools"),
            (json!({"tools": [1]}), "tools[0]"),
            (
                json!({"tools": [{"function": {"name": "a"}}]}),
                "tools[0].type",
            ),
            (json!({"tools": [{"type": "code_interpreter"}]}), "tools[0]"),
            (
                json!({"tools": [{"type": "function"}]}),
                "tools[0].function",
            ),
            (json!({"tools": [f(json!({}))]}), "tools[0].function.name"),
            (
                json!({"tools": [f(json!({"name": 3}))]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [f(json!({"name": "has space"}))]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [f(json!({"name": ""}))]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [f(json!({"name": "a".repeat(65)}))]}),
                "tools[0].function.name",
            ),
            (
                json!({"tools": [weather(), f(json!({"name": "ok", "parameters": "x"}))]}),
                "tools[1].function.parameters",
            ),
            (
                json!({"tools": [f(json!({"name": "a", "description": 1}))]}),
                "tools[0].function.description",
            ),
            (
                json!({"tools": [f(json!({"name": "a", "strict": "yes"}))]}),
                "tools[0].function.strict",
            ),
            (
                json!({"tools": [weather(), weather()]}),
                "tools[1].function.name",
            ),
            (
                json!({"tools": [weather()], "parallel_tool_calls": "no"}),
                "parallel_tool_calls",
            ),
            (
                json!({"tools": [weather()], "tool_choice": "any"}),
                "tool_choice",
            ),
            (
                json!({"tools": [weather()], "tool_choice": 1}),
                "tool_choice",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "other"}}}),
                "tool_choice",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function"}}),
                "tool_choice",
            ),
            (json!({"tool_choice": "auto"}), "tool_choice"),
            (json!({"tool_choice": "required"}), "tool_choice"),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.param(), param, "{body}: {err}");
        }
    }
}
