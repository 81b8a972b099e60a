//! The ways models write tool calls, which one a model uses, and how a finished call region is
//! read.
//!
//! - `hermes` (Qwen 2.5/3, Hermes, and the fallback prompt): `<tool_call>{"name": …, "arguments":
//!   {…}}</tool_call>`, any number of them, text around them;
//! - `llama3-json` (Llama 3.1–3.3): the whole answer is `{"name": …, "parameters": {…}}`
//!   (`arguments` also read), optionally after `<|python_tag|>`, several separated by `;`;
//! - `mistral`: `[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`, or the newer
//!   `[TOOL_CALLS]name[ARGS]{…}` (repeated per call).
//!
//! `<|python_tag|>` and `[TOOL_CALLS]` are special tokens, which the detokenizer drops from the
//! text; so a whole answer that is a JSON object (llama3-json) or array of calls (mistral) is read
//! as calls without its marker too.

use serde_json::Value;

pub const HERMES_START: &str = "<tool_call>";
pub const HERMES_END: &str = "</tool_call>";
pub const PYTHON_TAG: &str = "<|python_tag|>";
pub const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
pub const MISTRAL_ARGS: &str = "[ARGS]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolSyntax {
    Hermes,
    #[value(name = "llama3-json")]
    Llama3Json,
    Mistral,
    /// The output of a forced call: a JSON object `{"name", "arguments"}` or an array of them
    /// (the format `forced::forced_call_schema` constrains).
    #[value(skip)]
    ForcedJson,
}

/// One parsed call: a tool the request offered and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: String,
}

impl ToolSyntax {
    /// Picks the syntax from the chat template's source and the vocabulary's tokens. A template
    /// that does not use `tools` gets the fallback prompt, which teaches `hermes`.
    pub fn detect(
        template: Option<&str>,
        template_uses_tools: bool,
        has_token: &dyn Fn(&str) -> bool,
    ) -> ToolSyntax {
        let src = template.unwrap_or_default();
        if !template_uses_tools || src.contains(HERMES_START) {
            ToolSyntax::Hermes
        } else if src.contains(MISTRAL_CALLS) || has_token(MISTRAL_CALLS) {
            ToolSyntax::Mistral
        } else if src.contains(PYTHON_TAG) || src.contains("ipython") || has_token(PYTHON_TAG) {
            ToolSyntax::Llama3Json
        } else {
            ToolSyntax::Hermes
        }
    }

    /// Markers that open a call region in the middle of the text.
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            ToolSyntax::Hermes => &[HERMES_START],
            ToolSyntax::Llama3Json => &[PYTHON_TAG],
            ToolSyntax::Mistral => &[MISTRAL_CALLS],
            ToolSyntax::ForcedJson => &[],
        }
    }

    /// Whether an answer whose first non-space byte is `b` may be a call region to its end.
    pub fn whole_answer_starts_with(self, b: u8) -> bool {
        match self {
            ToolSyntax::Hermes => false,
            ToolSyntax::Llama3Json => b == b'{',
            ToolSyntax::Mistral => b == b'[',
            ToolSyntax::ForcedJson => b == b'{' || b == b'[',
        }
    }

    /// Whether the region after a marker runs to the end of the answer (rather than to an end
    /// marker, as hermes' `</tool_call>`).
    pub fn region_runs_to_end(self) -> bool {
        self != ToolSyntax::Hermes
    }

    /// The calls in a region that runs to the end of the answer (its marker included), or `None`
    /// when any part of it is not a call of an offered tool.
    pub fn parse_region(self, region: &str, tools: &[String]) -> Option<Vec<ParsedCall>> {
        let region = region.trim();
        let calls = match self {
            ToolSyntax::Hermes => {
                let body = region.strip_prefix(HERMES_START)?;
                let body = body.strip_suffix(HERMES_END).unwrap_or(body);
                vec![call_of_json(body, tools)?]
            }
            ToolSyntax::Llama3Json => {
                let body = region.strip_prefix(PYTHON_TAG).unwrap_or(region);
                json_values(body, b';')?
                    .iter()
                    .map(|v| call_of_value(v, tools))
                    .collect::<Option<Vec<_>>>()?
            }
            ToolSyntax::Mistral => mistral(region, tools)?,
            ToolSyntax::ForcedJson => match serde_json::from_str::<Value>(region).ok()? {
                Value::Array(items) => items
                    .iter()
                    .map(|v| call_of_value(v, tools))
                    .collect::<Option<Vec<_>>>()?,
                v => vec![call_of_value(&v, tools)?],
            },
        };
        (!calls.is_empty()).then_some(calls)
    }
}

fn mistral(region: &str, tools: &[String]) -> Option<Vec<ParsedCall>> {
    let body = region
        .strip_prefix(MISTRAL_CALLS)
        .unwrap_or(region)
        .trim_start();
    if body.starts_with('[') {
        let Value::Array(items) = serde_json::from_str(body).ok()? else {
            return None;
        };
        return items.iter().map(|v| call_of_value(v, tools)).collect();
    }
    // `name[ARGS]{…}` per call, each after its own `[TOOL_CALLS]`.
    body.split(MISTRAL_CALLS)
        .map(|part| {
            let (name, args) = part.split_once(MISTRAL_ARGS)?;
            let name = name.trim();
            let args: Value = serde_json::from_str(args).ok()?;
            (args.is_object() && tools.iter().any(|t| t == name)).then(|| ParsedCall {
                name: name.to_string(),
                arguments: args.to_string(),
            })
        })
        .collect()
}

/// Consecutive JSON values separated by whitespace or `sep`; `None` if anything else is there.
fn json_values(text: &str, sep: u8) -> Option<Vec<Value>> {
    let mut values = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        values.push(it.next()?.ok()?);
        rest = rest[it.byte_offset()..].trim_start();
        if rest.as_bytes().first() == Some(&sep) {
            rest = rest[1..].trim_start();
        }
    }
    Some(values)
}

/// A call written as a JSON object.
pub fn call_of_json(text: &str, tools: &[String]) -> Option<ParsedCall> {
    call_of_value(&serde_json::from_str(text.trim()).ok()?, tools)
}

/// `{"name": <an offered tool>, "arguments"|"parameters": {…}}`; arguments written as a string
/// holding a JSON object are read too; missing arguments are `{}`.
pub fn call_of_value(v: &Value, tools: &[String]) -> Option<ParsedCall> {
    let name = v.get("name")?.as_str()?;
    if !tools.iter().any(|t| t == name) {
        return None;
    }
    let args = v.get("arguments").or_else(|| v.get("parameters"));
    let arguments = match args {
        None | Some(Value::Null) => "{}".to_string(),
        Some(a @ Value::Object(_)) => a.to_string(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s).ok()? {
            a @ Value::Object(_) => a.to_string(),
            _ => return None,
        },
        Some(_) => return None,
    };
    Some(ParsedCall {
        name: name.to_string(),
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<String> {
        vec!["get_weather".into(), "add".into()]
    }

    fn call(name: &str, args: &str) -> ParsedCall {
        ParsedCall {
            name: name.into(),
            arguments: args.into(),
        }
    }

    #[test]
    fn llama3_reads_parameters_arguments_and_the_python_tag() {
        let l = ToolSyntax::Llama3Json;
        let one = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
        assert_eq!(
            l.parse_region(one, &tools()),
            Some(vec![call("get_weather", r#"{"city":"Paris"}"#)])
        );
        let tagged = r#"<|python_tag|>{"name": "add", "arguments": {"a": 1}}; {"name": "add", "arguments": "{\"a\": 2}"}"#;
        assert_eq!(
            l.parse_region(tagged, &tools()),
            Some(vec![call("add", r#"{"a":1}"#), call("add", r#"{"a":2}"#)])
        );
        assert_eq!(
            l.parse_region(r#"{"name": "add"}"#, &tools()),
            Some(vec![call("add", "{}")])
        );
    }

    #[test]
    fn anything_but_calls_of_offered_tools_is_refused() {
        let l = ToolSyntax::Llama3Json;
        for bad in [
            r#"{"name": "rm_rf", "parameters": {}}"#,
            r#"{"name": "add", "parameters": {"a": 1}"#,
            r#"{"name": "add", "parameters": {}} and then some text"#,
            r#"{"name": "add", "parameters": [1]}"#,
            r#"{"name": "add", "arguments": "not json"}"#,
            r#"{"city": "Paris"}"#,
            "",
        ] {
            assert_eq!(l.parse_region(bad, &tools()), None, "{bad}");
        }
        assert_eq!(
            ToolSyntax::Mistral
                .parse_region(r#"[TOOL_CALLS][{"name": "x", "arguments": {}}]"#, &tools()),
            None
        );
    }

    #[test]
    fn mistral_both_formats_with_and_without_the_marker() {
        let m = ToolSyntax::Mistral;
        let want = Some(vec![call("add", r#"{"a":1}"#), call("get_weather", "{}")]);
        let list =
            r#"[{"name": "add", "arguments": {"a": 1}}, {"name": "get_weather", "arguments": {}}]"#;
        assert_eq!(
            m.parse_region(&format!("[TOOL_CALLS]{list}"), &tools()),
            want
        );
        assert_eq!(m.parse_region(list, &tools()), want);
        let newer = r#"[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]get_weather[ARGS]{}"#;
        assert_eq!(m.parse_region(newer, &tools()), want);
        assert_eq!(
            m.parse_region(r#"[TOOL_CALLS]add[ARGS]{"a": "#, &tools()),
            None
        );
    }

    #[test]
    fn forced_json_is_an_object_or_an_array() {
        let f = ToolSyntax::ForcedJson;
        assert_eq!(
            f.parse_region(r#"{"name": "add", "arguments": {"a": 1}}"#, &tools()),
            Some(vec![call("add", r#"{"a":1}"#)])
        );
        assert_eq!(
            f.parse_region(
                r#"[{"name": "add", "arguments": {}}, {"name": "add", "arguments": {}}]"#,
                &tools()
            )
            .map(|c| c.len()),
            Some(2)
        );
        assert_eq!(f.parse_region("[]", &tools()), None);
    }

    #[test]
    fn the_syntax_follows_the_template_and_the_vocabulary() {
        let none = |_: &str| false;
        let detect = |src: &str, uses: bool, tok: &dyn Fn(&str) -> bool| {
            ToolSyntax::detect(Some(src), uses, tok)
        };
        assert_eq!(
            detect("{{ tools }}<tool_call>", true, &none),
            ToolSyntax::Hermes
        );
        assert_eq!(
            detect("{{ tools }}[TOOL_CALLS]", true, &none),
            ToolSyntax::Mistral
        );
        assert_eq!(
            detect("{{ tools }}<|python_tag|>", true, &none),
            ToolSyntax::Llama3Json
        );
        assert_eq!(
            detect("{{ tools }}", true, &|t: &str| t == MISTRAL_CALLS),
            ToolSyntax::Mistral
        );
        assert_eq!(detect("{{ tools }}", true, &none), ToolSyntax::Hermes);
        assert_eq!(
            detect("[TOOL_CALLS] but no tools variable", false, &none),
            ToolSyntax::Hermes,
            "the fallback prompt teaches hermes"
        );
    }
}
