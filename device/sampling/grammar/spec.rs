//! What a request constrains its output to, as parsed from the body: `response_format`, vLLM's
//! `structured_outputs` and its older `guided_*` fields all land here.

use llguidance::api::TopLevelGrammar;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum ConstraintSpec {
    /// A JSON schema (`json_object` is `{"type": "object"}`).
    JsonSchema(Value),
    /// A regular expression the whole output matches (Rust regex syntax).
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A Lark grammar (llguidance's dialect).
    Grammar(String),
}

impl ConstraintSpec {
    /// The key compiled grammars are cached under: the kind and the text.
    pub fn cache_key(&self) -> String {
        match self {
            ConstraintSpec::JsonSchema(s) => format!("json:{s}"),
            ConstraintSpec::Regex(r) => format!("regex:{r}"),
            ConstraintSpec::Choice(c) => format!("choice:{}", json!(c)),
            ConstraintSpec::Grammar(g) => format!("grammar:{g}"),
        }
    }

    /// The grammar llguidance compiles.
    ///
    /// JSON schemas are generated compactly (`,` and `:` without spaces) unless the schema's own
    /// `x-guidance` options say otherwise: free whitespace lets a weak model pad forever.
    pub fn to_grammar(&self) -> TopLevelGrammar {
        match self {
            ConstraintSpec::JsonSchema(schema) => {
                let mut schema = schema.clone();
                if let Value::Object(o) = &mut schema {
                    o.entry("x-guidance")
                        .or_insert_with(|| json!({"whitespace_flexible": false}));
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            ConstraintSpec::Regex(r) => TopLevelGrammar::from_regex(r),
            ConstraintSpec::Choice(choices) => {
                // Lark string literals take JSON's escapes, so a JSON-quoted choice is literal.
                let alts: Vec<String> = choices.iter().map(|c| json!(c).to_string()).collect();
                TopLevelGrammar::from_lark(format!("start: {}", alts.join(" | ")))
            }
            ConstraintSpec::Grammar(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }
}
