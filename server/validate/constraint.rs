//! The structured-output fields of a request (`response_format`, vLLM's `structured_outputs`
//! and `guided_*`) → at most one [`ConstraintSpec`], and `logit_bias` → (id, bias) pairs.
//! Compiling the spec needs the tokenizer, so it happens later (`server/generate.rs`).

use serde_json::{json, Value};

use super::{wrong, Fields, Limits, ValidationError, R};
use crate::device::sampling::grammar::ConstraintSpec;

/// Most `logit_bias` entries (OpenAI's limit).
pub const MAX_LOGIT_BIAS: usize = 300;
/// `logit_bias` values are clamped by OpenAI to this range; tandem refuses values outside it.
pub const MAX_BIAS: f64 = 100.0;

/// A constraint and the request field it came from (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedConstraint {
    pub spec: ConstraintSpec,
    pub param: &'static str,
}

/// The request's one constraint, if any; two or more is an error naming the second.
pub(super) fn constraint(f: &Fields) -> R<Option<RequestedConstraint>> {
    let mut found: Vec<RequestedConstraint> = Vec::new();
    let mut add = |spec: Option<ConstraintSpec>, param: &'static str| {
        if let Some(spec) = spec {
            found.push(RequestedConstraint { spec, param });
        }
    };
    add(response_format(f)?, "response_format");
    add(
        f.get("guided_json")
            .map(|v| schema(v, "guided_json"))
            .transpose()?,
        "guided_json",
    );
    add(
        f.get("guided_regex")
            .map(|v| regex(v, "guided_regex"))
            .transpose()?,
        "guided_regex",
    );
    add(
        f.get("guided_choice")
            .map(|v| choice(v, "guided_choice"))
            .transpose()?,
        "guided_choice",
    );
    add(
        f.get("guided_grammar")
            .map(|v| grammar(v, "guided_grammar"))
            .transpose()?,
        "guided_grammar",
    );
    if let Some(so) = f.get("structured_outputs") {
        let Value::Object(o) = so else {
            return Err(wrong("structured_outputs", "an object"));
        };
        let so = Fields(o);
        add(
            so.get("json")
                .map(|v| schema(v, "structured_outputs.json"))
                .transpose()?,
            "structured_outputs",
        );
        add(
            so.get("regex")
                .map(|v| regex(v, "structured_outputs.regex"))
                .transpose()?,
            "structured_outputs",
        );
        add(
            so.get("choice")
                .map(|v| choice(v, "structured_outputs.choice"))
                .transpose()?,
            "structured_outputs",
        );
        add(
            so.get("grammar")
                .map(|v| grammar(v, "structured_outputs.grammar"))
                .transpose()?,
            "structured_outputs",
        );
        if so.bool("json_object")? == Some(true) {
            add(Some(any_object()), "structured_outputs");
        }
        if so.get("structural_tag").is_some() {
            return Err(ValidationError::Unsupported {
                param: "structured_outputs.structural_tag",
                why: "structural tags are not supported; use json, regex, choice or grammar",
            });
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(ValidationError::ConflictingConstraints {
            first: found[0].param,
            second: found[1].param,
        }),
    }
}

fn any_object() -> ConstraintSpec {
    ConstraintSpec::JsonSchema(json!({"type": "object"}))
}

/// OpenAI's `response_format`: `text` (no constraint), `json_object`, or `json_schema`.
fn response_format(f: &Fields) -> R<Option<ConstraintSpec>> {
    let Some(rf) = f.get("response_format") else {
        return Ok(None);
    };
    let Value::Object(o) = rf else {
        return Err(wrong("response_format", "an object"));
    };
    let rf = Fields(o);
    match rf
        .string("type")
        .map_err(|_| wrong("response_format.type", "a string"))?
        .as_deref()
    {
        None => Err(ValidationError::Missing("response_format.type")),
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(any_object())),
        Some("json_schema") => {
            let Some(Value::Object(js)) = rf.get("json_schema") else {
                return Err(match rf.get("json_schema") {
                    None => ValidationError::Missing("response_format.json_schema"),
                    Some(_) => wrong("response_format.json_schema", "an object"),
                });
            };
            match Fields(js).get("schema") {
                Some(s) => schema(s, "response_format.json_schema.schema").map(Some),
                None => Err(ValidationError::Missing(
                    "response_format.json_schema.schema",
                )),
            }
        }
        Some(_) => Err(ValidationError::Invalid {
            param: "response_format.type".into(),
            why: "must be 'text', 'json_object' or 'json_schema'".into(),
        }),
    }
}

/// A JSON schema: an object (or `true`), or a string holding one.
fn schema(v: &Value, param: &'static str) -> R<ConstraintSpec> {
    let parsed;
    let v = match v {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|e| ValidationError::Invalid {
                param: param.into(),
                why: format!("is not valid JSON: {e}"),
            })?;
            &parsed
        }
        v => v,
    };
    match v {
        Value::Object(_) | Value::Bool(true) => Ok(ConstraintSpec::JsonSchema(v.clone())),
        _ => Err(wrong(param, "a JSON schema object")),
    }
}

fn regex(v: &Value, param: &'static str) -> R<ConstraintSpec> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(ConstraintSpec::Regex(s.clone())),
        Value::String(_) => Err(ValidationError::Empty(param)),
        _ => Err(wrong(param, "a string")),
    }
}

fn grammar(v: &Value, param: &'static str) -> R<ConstraintSpec> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(ConstraintSpec::Grammar(s.clone())),
        Value::String(_) => Err(ValidationError::Empty(param)),
        _ => Err(wrong(param, "a string")),
    }
}

fn choice(v: &Value, param: &'static str) -> R<ConstraintSpec> {
    let Value::Array(items) = v else {
        return Err(wrong(param, "an array of strings"));
    };
    let choices = items
        .iter()
        .map(|i| match i {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(wrong(param, "an array of non-empty strings")),
        })
        .collect::<R<Vec<_>>>()?;
    if choices.is_empty() {
        return Err(ValidationError::Empty(param));
    }
    Ok(ConstraintSpec::Choice(choices))
}

/// `logit_bias`: `{"<token id>": bias}`, ids inside the vocabulary, biases in [-100, 100].
pub(super) fn logit_bias(f: &Fields, limits: Limits) -> R<Vec<(u32, f32)>> {
    const PARAM: &str = "logit_bias";
    let Some(v) = f.get(PARAM) else {
        return Ok(Vec::new());
    };
    let Value::Object(o) = v else {
        return Err(wrong(PARAM, "an object mapping token ids to numbers"));
    };
    if o.len() > MAX_LOGIT_BIAS {
        return Err(ValidationError::Invalid {
            param: PARAM.into(),
            why: format!("may hold at most {MAX_LOGIT_BIAS} entries"),
        });
    }
    let invalid = |why: String| ValidationError::Invalid {
        param: PARAM.into(),
        why,
    };
    let mut out: Vec<(u32, f32)> = o
        .iter()
        .map(|(k, v)| {
            let id: u32 = k
                .trim()
                .parse()
                .map_err(|_| invalid(format!("key '{k}' is not a token id")))?;
            if id as usize >= limits.vocab_size {
                return Err(ValidationError::TokenOutOfVocab {
                    param: PARAM,
                    id: id.into(),
                    vocab: limits.vocab_size,
                });
            }
            let b = v
                .as_f64()
                .ok_or_else(|| invalid(format!("the bias of token {id} is not a number")))?;
            if !(-MAX_BIAS..=MAX_BIAS).contains(&b) {
                return Err(invalid(format!(
                    "the bias of token {id} is {b}, outside [-{MAX_BIAS}, {MAX_BIAS}]"
                )));
            }
            Ok((id, b as f32))
        })
        .collect::<R<_>>()?;
    out.sort_unstable_by_key(|&(id, _)| id);
    Ok(out)
}
