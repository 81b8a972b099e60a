//! What the grammar tests share: a nested schema a random model finishes, its checker, a
//! grammar compiler for a test server's tokenizer, and running one request on the engine.

// Each test binary that includes this uses part of it.
#![allow(dead_code)]

use std::sync::Arc;

use serde_json::{json, Value};
use tandem::device::sampling::grammar::{CompiledGrammar, GrammarCompiler, GrammarStats};
use tandem::engine::request::{Event, FinishReason, Request, SamplingParams};
use tandem::engine::EngineHandle;
use tandem::model::token_env::token_env;

use super::common_server::TestServer;

/// A nested object with an enum, a bounded array and bounded strings, so even a random model
/// finishes it well within the tiny model's 256-token context.
pub fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "color": {"enum": ["red", "green", "blue"]},
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
            "inner": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["ok", "n"],
                "additionalProperties": false
            }
        },
        "required": ["name", "color", "flags", "inner"],
        "additionalProperties": false
    })
}

/// Panics unless `v` is a valid [`person_schema`] instance.
pub fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["color", "flags", "inner", "name"], "{text}");
    assert!(
        v["name"].as_str().is_some_and(|s| s.chars().count() <= 6),
        "{text}"
    );
    assert!(
        ["red", "green", "blue"].contains(&v["color"].as_str().unwrap_or("")),
        "{text}"
    );
    let flags = v["flags"].as_array().expect("flags is an array");
    assert!(
        (1..=3).contains(&flags.len()) && flags.iter().all(Value::is_boolean),
        "{text}"
    );
    assert!(v["inner"]["ok"].is_boolean(), "{text}");
    assert!(v["inner"]["n"].as_u64().is_some_and(|n| n <= 99), "{text}");
    assert_eq!(v["inner"].as_object().unwrap().len(), 2, "{text}");
}

/// The engine's tokens and finish reason for `params` on `prompt`.
pub async fn run(
    h: &EngineHandle,
    prompt: &[u32],
    params: SamplingParams,
) -> (Vec<u32>, FinishReason) {
    let mut stream = h.submit(Request::new(prompt.to_vec(), params)).unwrap();
    let mut ids = Vec::new();
    loop {
        match stream.recv().await.expect("stream ends with Finished") {
            Event::Tokens { ids: more, .. } => ids.extend(more),
            Event::Finished { reason, .. } => return (ids, reason),
        }
    }
}

pub fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

pub fn compiler(s: &TestServer) -> (GrammarCompiler, Arc<GrammarStats>) {
    let stats = Arc::new(GrammarStats::default());
    let env = token_env(s.tokenizer.clone(), s.handle.model().vocab_size).unwrap();
    let c = GrammarCompiler::new(env, stats.clone()).expect("a compiler for the tiny tokenizer");
    (c, stats)
}

pub fn with_grammar(g: &Arc<CompiledGrammar>, mut p: SamplingParams) -> SamplingParams {
    p.constraint = Some(g.clone());
    p.ignore_eos = false;
    p
}
