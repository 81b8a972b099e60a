//! The chat wire format of answers read for tool calls and reasoning, from fixed model text.

use super::*;
use crate::engine::request::Usage;
use crate::model::tokenizer::Tokenizer;
use crate::server::tools::request::parse_tool_fields;
use crate::server::tools::support::ModelOutputSupport;
use crate::server::tools::syntax::ToolSyntax;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

/// A chat job whose answers are read as `syntax` calls of `get_weather` (and reasoning).
fn job(syntax: ToolSyntax, reasoning: bool, parallel: bool) -> Job {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/tiny-llama");
    let tokenizer = Arc::new(Tokenizer::from_hf_dir(&dir).unwrap());
    let body = json!({"tools": [{"type": "function", "function": {"name": "get_weather"}}],
        "parallel_tool_calls": parallel});
    let tools = parse_tool_fields(body.as_object().unwrap()).unwrap();
    let support = ModelOutputSupport {
        syntax,
        template_uses_tools: true,
        reasoning,
    };
    let chat_output = ChatOutput::new(&support, tools.as_ref(), &tokenizer, &[1, 2], 1);
    Job {
        id: "chatcmpl-x".into(),
        created: 1,
        model: "m".into(),
        n: 1,
        want_logprobs: false,
        include_usage: false,
        prompt_tokens: 2,
        received: Instant::now(),
        tokenizer,
        chat_output,
    }
}

fn finished(text: &str) -> Choice {
    let mut c = Choice::default();
    c.text = text.into();
    c.finish = Some(FinishReason::Stop);
    c.usage = Usage::default();
    c
}

fn message(job: &Job, text: &str) -> Value {
    serde_json::to_value(completion(job, &[finished(text)])).unwrap()["choices"][0].clone()
}

#[test]
fn a_called_tool_is_in_the_message_with_finish_tool_calls() {
    let job = job(ToolSyntax::Hermes, true, true);
    let text = "<think>Needs the weather.</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\"}}\n</tool_call>";
    let c = message(&job, text);
    assert_eq!(c["finish_reason"], "tool_calls");
    let m = &c["message"];
    assert_eq!(m["content"], Value::Null);
    assert_eq!(m["reasoning_content"], "Needs the weather.");
    let call = &m["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Lima"}));
}

#[test]
fn prose_and_broken_calls_are_content_with_the_engines_finish() {
    let job = job(ToolSyntax::Llama3Json, false, true);
    for text in [
        "It is sunny.",
        "{\"name\": \"get_weather\", \"parameters\": {\"city\":",
    ] {
        let c = message(&job, text);
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(c["message"]["content"], text);
        assert!(c["message"].get("tool_calls").is_none());
        assert!(c["message"].get("reasoning_content").is_none());
    }
    let c = message(&job, "{\"name\": \"get_weather\", \"parameters\": {}}");
    assert_eq!(c["finish_reason"], "tool_calls");
}

#[test]
fn plain_chat_keeps_its_text_as_sent() {
    let mut job = job(ToolSyntax::Hermes, false, true);
    job.chat_output = None;
    let c = message(&job, " <tool_call>{\"name\": \"get_weather\"}</tool_call> ");
    assert_eq!(
        c["message"]["content"],
        " <tool_call>{\"name\": \"get_weather\"}</tool_call> "
    );
    assert_eq!(c["finish_reason"], "stop");
}

/// The events of `pieces` streamed into choice 0, then its finish.
fn stream(job: &Job, pieces: &[&str]) -> Vec<Value> {
    let mut bytes = Vec::new();
    for p in pieces {
        bytes.extend_from_slice(&Chat::chunk(job, 0, p, &[], 0, None));
    }
    bytes.extend_from_slice(&Chat::chunk(job, 0, "", &[], 0, Some(&FinishReason::Stop)));
    String::from_utf8(bytes)
        .unwrap()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[test]
fn streamed_calls_are_deltas_whose_arguments_concatenate_to_json() {
    let job = job(ToolSyntax::Hermes, true, true);
    let text = "<think>hm</think>Checking.<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\"}}</tool_call><tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Quito\"}}</tool_call>";
    // Three bytes at a time, so markers arrive split.
    let pieces: Vec<&str> = text
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let events = stream(&job, &pieces);
    let deltas: Vec<&Value> = events.iter().map(|e| &e["choices"][0]["delta"]).collect();
    let text_of = |key: &str| -> String { deltas.iter().filter_map(|d| d[key].as_str()).collect() };
    assert_eq!(text_of("reasoning_content"), "hm");
    assert_eq!(text_of("content"), "Checking.");
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for d in &deltas {
        let Some(tc) = d["tool_calls"].as_array() else {
            continue;
        };
        let tc = &tc[0];
        let index = tc["index"].as_u64().unwrap() as usize;
        if let Some(id) = tc["id"].as_str() {
            assert_eq!(index, calls.len(), "a call opens with the next index");
            assert_eq!(tc["type"], "function");
            let name = tc["function"]["name"].as_str().unwrap();
            calls.push((id.into(), name.into(), String::new()));
        }
        calls[index]
            .2
            .push_str(tc["function"]["arguments"].as_str().unwrap());
    }
    let cities: Vec<Value> = calls
        .iter()
        .map(|(_, name, args)| {
            assert_eq!(name, "get_weather");
            serde_json::from_str::<Value>(args).unwrap()["city"].clone()
        })
        .collect();
    assert_eq!(cities, [json!("Lima"), json!("Quito")]);
    let last = &events.last().unwrap()["choices"][0];
    assert_eq!(last["finish_reason"], "tool_calls");
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| e["choices"][0]["finish_reason"].is_null()));
}

#[test]
fn parallel_off_streams_one_call_and_held_text_ends_as_content() {
    let job = job(ToolSyntax::Hermes, false, false);
    let two = "<tool_call>{\"name\": \"get_weather\"}</tool_call><tool_call>{\"name\": \"get_weather\"}</tool_call>";
    let events = stream(&job, &[two]);
    let opened = events
        .iter()
        .filter(|e| e["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
        .count();
    assert_eq!(opened, 1);

    let job = self::job(ToolSyntax::Hermes, false, true);
    let events = stream(&job, &["Almost <tool_", "call> but not"]);
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Almost <tool_call> but not");
    assert_eq!(
        events.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}
