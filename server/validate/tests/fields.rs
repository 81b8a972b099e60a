use super::*;
use crate::server::validate::fields;

/// The request fields OpenAI's API reference defines for each endpoint.
const OPENAI_CHAT: &[&str] = &[
    "messages",
    "model",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];
const OPENAI_COMPLETIONS: &[&str] = &[
    "model",
    "prompt",
    "best_of",
    "echo",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "suffix",
    "temperature",
    "top_p",
    "user",
];

fn minimal(endpoint: Endpoint) -> Value {
    match endpoint {
        Endpoint::Chat => json!({"messages": [{"role": "user", "content": "hi"}]}),
        Endpoint::Completions => json!({"prompt": "hi"}),
    }
}

fn with_field(endpoint: Endpoint, name: &str, value: Value) -> R<ValidRequest> {
    let mut body = minimal(endpoint);
    body[name] = value;
    validate(body.to_string().as_bytes(), endpoint, LIMITS)
}

#[test]
fn every_openai_field_has_a_policy() {
    for (endpoint, names) in [
        (Endpoint::Chat, OPENAI_CHAT),
        (Endpoint::Completions, OPENAI_COMPLETIONS),
    ] {
        for name in names {
            assert!(
                fields::policy(name, endpoint).is_some(),
                "{name} on {endpoint:?} has no row in validate/fields.rs"
            );
        }
    }
}

#[test]
fn refused_fields_are_400_naming_the_field() {
    use Endpoint::{Chat, Completions};
    let cases = [
        (Chat, "audio", json!({"voice": "alloy", "format": "mp3"})),
        (Chat, "modalities", json!(["text", "audio"])),
        (
            Chat,
            "prediction",
            json!({"type": "content", "content": "x"}),
        ),
        (Chat, "web_search_options", json!({})),
        (Chat, "functions", json!([{"name": "f"}])),
        (Chat, "function_call", json!("auto")),
        (Chat, "verbosity", json!("low")),
        (Chat, "chat_template", json!("{{ messages }}")),
        (Chat, "echo", json!(true)),
        (Completions, "suffix", json!("def f():")),
        (Completions, "best_of", json!(3)),
        (Completions, "echo", json!(true)),
        (Completions, "use_beam_search", json!(true)),
        (Completions, "min_tokens", json!(4)),
        (Completions, "prompt_logprobs", json!(1)),
        (Completions, "skip_special_tokens", json!(false)),
    ];
    for (endpoint, name, value) in cases {
        let err = with_field(endpoint, name, value.clone()).expect_err(name);
        assert!(
            matches!(err, ValidationError::Unsupported { .. }),
            "{name}: {err}"
        );
        assert_eq!(err.param().as_deref(), Some(name), "{name}={value}");
        let api: ApiError = err.into();
        assert_eq!(api.status, hyper::StatusCode::BAD_REQUEST);
    }
}

/// Every refusing row of the table, not only the ones listed above, answers with its own name.
#[test]
fn every_refusing_row_names_its_field() {
    let samples = [
        json!(true),
        json!("x"),
        json!(7),
        json!(["audio"]),
        json!({}),
    ];
    for row in fields::FIELDS {
        let endpoint = match row.on {
            fields::On::Completions => Endpoint::Completions,
            _ => Endpoint::Chat,
        };
        let refused = |v: &Value| match row.policy {
            fields::Policy::Refused(_) => true,
            fields::Policy::Only { accept, .. } => !accept(v, &Map::new()),
            _ => false,
        };
        let Some(sample) = samples.iter().find(|v| refused(v)) else {
            continue;
        };
        let err = with_field(endpoint, row.name, sample.clone()).expect_err(row.name);
        assert_eq!(
            err.param().as_deref(),
            Some(row.name),
            "{}={sample}",
            row.name
        );
    }
}

#[test]
fn no_op_fields_and_default_values_are_accepted() {
    use Endpoint::{Chat, Completions};
    let cases = [
        (Chat, "store", json!(true)),
        (Chat, "metadata", json!({"team": "a"})),
        (Chat, "service_tier", json!("auto")),
        (Chat, "prompt_cache_key", json!("k")),
        (Chat, "safety_identifier", json!("u-1")),
        (Chat, "modalities", json!(["text"])),
        (Chat, "verbosity", json!("medium")),
        (Chat, "echo", json!(false)),
        (Chat, "audio", Value::Null),
        (Completions, "suffix", json!("")),
        (Completions, "best_of", json!(1)),
        (Completions, "echo", json!(false)),
        (Completions, "use_beam_search", json!(false)),
        (Completions, "min_tokens", json!(0)),
        (Completions, "bad_words", json!([])),
        // Another endpoint's field, and a field no API defines: ignored.
        (Completions, "audio", json!({"voice": "alloy"})),
        (Completions, "not_a_field", json!({"x": 1})),
    ];
    for (endpoint, name, value) in cases {
        if let Err(e) = with_field(endpoint, name, value.clone()) {
            panic!("{name}={value} on {endpoint:?}: {e}");
        }
    }
    let r = completions(json!({"prompt": "x", "n": 2, "best_of": 2})).unwrap();
    assert_eq!(r.n, 2);
    assert!(completions(json!({"prompt": "x", "n": 2, "best_of": 1})).is_err());
}

/// README's field table has a row for every row of the policy tables, with the same verdict.
#[test]
fn the_readme_documents_every_field() {
    let readme = include_str!("../../../README.md");
    let label = |on: fields::On| match on {
        fields::On::Both => "both",
        fields::On::Chat => "chat",
        fields::On::Completions => "completions",
    };
    let row = |name: &str, on: fields::On| {
        let start = format!("| `{name}` | {} |", label(on));
        readme
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("README has no row starting {start:?}"))
    };
    for r in fields::FIELDS {
        let verdict = match r.policy {
            fields::Policy::Honoured => "| honoured |",
            fields::Policy::NoOp(_) => "| no-op |",
            fields::Policy::Only { .. } => "| 400 unless ",
            fields::Policy::Refused(_) => "| 400 |",
        };
        let line = row(r.name, r.on);
        assert!(line.contains(verdict), "{line:?} should say {verdict:?}");
    }
}
