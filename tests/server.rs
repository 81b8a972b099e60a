//! The OpenAI-compatible server end to end, against the tiny Llama on 127.0.0.1:0: every
//! endpoint's shape, streaming framing, n, logprobs and stop strings.

#[path = "common/server.rs"]
mod common_server;

use common_server::*;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tandem::server::state::ServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_models_and_metrics() {
    let s = TestServer::start().await;
    let r = get(s.addr, "/health").await;
    assert_eq!(r.status, StatusCode::OK);

    let r = get(s.addr, "/v1/models").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["max_model_len"], 256);
    assert_eq!(
        get(s.addr, &format!("/v1/models/{MODEL}")).await.json()["id"],
        MODEL
    );
    let r = get(s.addr, "/v1/models/other").await;
    assert_eq!(
        (r.status, r.error_param().as_deref()),
        (StatusCode::NOT_FOUND, Some("model"))
    );

    assert_eq!(
        post(s.addr, COMPLETIONS, &completion(json!({})))
            .await
            .status,
        StatusCode::OK
    );
    // The engine publishes its stats after the step that finished the request: poll for them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (r, m) = loop {
        let r = get(s.addr, "/metrics").await;
        let m = r.text();
        if metric(&m, "tandem:generation_tokens_total") == Some(8.0) || Instant::now() > deadline {
            break (r, m);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for name in [
        "tandem:num_requests_running",
        "tandem:num_requests_waiting",
        "tandem:kv_cache_usage_perc",
        "tandem:num_preemptions_total",
        "tandem:client_disconnects_total",
        "tandem:inter_token_latency_seconds_count",
        "tandem:e2e_request_latency_seconds_count",
        "tandem:request_queue_time_seconds_count",
    ] {
        assert!(metric(&m, name).is_some(), "no {name} in\n{m}");
    }
    assert!(metric(&m, "tandem:prompt_tokens_total").unwrap() >= 2.0);
    assert_eq!(metric(&m, "tandem:generation_tokens_total"), Some(8.0));
    assert_eq!(
        metric(&m, "tandem:time_to_first_token_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "tandem:request_success_total{finished_reason=\"length\"}"
        ),
        Some(1.0)
    );
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_has_openais_shape() {
    let s = TestServer::start().await;
    let r = post(s.addr, COMPLETIONS, &completion(json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], MODEL);
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert!(c["text"].is_string());
    assert!(c["logprobs"].is_null());
    assert_eq!(c["finish_reason"], "length");
    let prompt_tokens = s.tokenizer.encode("Hello there", true).unwrap().len();
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 8);

    // The same prompt as token ids gives the same (greedy) text.
    let ids = s.tokenizer.encode("Hello there", true).unwrap();
    let by_ids = post(s.addr, COMPLETIONS, &completion(json!({"prompt": ids})))
        .await
        .json();
    assert_eq!(by_ids["choices"][0]["text"], c["text"]);
    // Unknown fields are ignored; the model may be left out.
    let body = json!({"prompt": "Hello there", "max_tokens": 8, "ignore_eos": true, "user": "x", "foo": [1]});
    assert_eq!(
        post(s.addr, COMPLETIONS, &body).await.json()["choices"][0]["text"],
        c["text"]
    );
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_renders_the_template_and_defaults_to_the_rest_of_the_context() {
    let s = TestServer::start().await;
    let r = post(s.addr, CHAT, &chat(json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].is_string());
    let rendered = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    let prompt_tokens = s.tokenizer.encode(rendered, false).unwrap().len();
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);

    // No max_tokens: the rest of the 256-token context.
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "ignore_eos": true});
    let v = post(s.addr, CHAT, &body).await.json();
    assert_eq!(v["usage"]["completion_tokens"], 256 - prompt_tokens);
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // Template syntax inside a message is only text.
    let evil = "{{ raise_exception('x') }}{% for i in range(99999) %}{% endfor %}";
    let body = chat(json!({"messages": [{"role": "user", "content": evil}], "max_tokens": 1}));
    assert_eq!(post(s.addr, CHAT, &body).await.status, StatusCode::OK);
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_stream_as_sse_with_usage_last() {
    let s = TestServer::start().await;
    let whole = post(s.addr, COMPLETIONS, &completion(json!({})))
        .await
        .json();

    let r = post(s.addr, COMPLETIONS, &completion(json!({"stream": true}))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let events = parse_events(&r);
    assert!(
        events.iter().all(|e| e.get("usage").is_none()),
        "usage only with include_usage"
    );
    assert!(events
        .iter()
        .all(|e| e["object"] == "text_completion" && e["id"] == events[0]["id"]));
    let (texts, finish) = collect_stream(&events);
    assert_eq!(texts[0], whole["choices"][0]["text"].as_str().unwrap());
    assert_eq!(finish[0].as_deref(), Some("length"));

    let body = completion(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let events = parse_events(&post(s.addr, COMPLETIONS, &body).await);
    let (last, rest) = events.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 8);
    assert_eq!(
        last["usage"]["prompt_tokens"],
        whole["usage"]["prompt_tokens"]
    );
    assert!(rest
        .iter()
        .all(|e| e["usage"].is_null() && e.get("usage").is_some()));
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_start_with_the_role() {
    let s = TestServer::start().await;
    let whole = post(s.addr, CHAT, &chat(json!({}))).await.json();
    let body = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let events = parse_events(&post(s.addr, CHAT, &body).await);
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(events[1..].iter().all(|e| e["choices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["delta"].get("role").is_none())));
    let (texts, finish) = collect_stream(&events);
    assert_eq!(
        texts[0],
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(finish[0].as_deref(), Some("length"));
    assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], 8);
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_are_seeded_and_reproducible() {
    let s = TestServer::start().await;
    let body = completion(json!({"n": 3, "temperature": 1.0, "seed": 42}));
    let a = post(s.addr, COMPLETIONS, &body).await.json();
    let b = post(s.addr, COMPLETIONS, &body).await.json();
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&a), texts(&b), "same seed, same choices");
    let idx: Vec<u64> = a["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [0, 1, 2]);
    assert_eq!(a["usage"]["completion_tokens"], 24);
    // Choice i is seeded seed + i: the first equals a single request with the same seed.
    let one = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"temperature": 1.0, "seed": 42})),
    )
    .await
    .json();
    assert_eq!(one["choices"][0]["text"], a["choices"][0]["text"]);

    let body = chat(json!({"n": 2, "temperature": 1.0, "seed": 7, "stream": true}));
    let events = parse_events(&post(s.addr, CHAT, &body).await);
    let (_, finish) = collect_stream(&events);
    assert_eq!(finish[..2], [Some("length".into()), Some("length".into())]);
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_in_both_layouts() {
    let s = TestServer::start().await;
    let v = post(s.addr, COMPLETIONS, &completion(json!({"logprobs": 3})))
        .await
        .json();
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 8, "{lp}");
    let token_lps = lp["token_logprobs"].as_array().unwrap();
    let tops = lp["top_logprobs"].as_array().unwrap();
    assert_eq!((token_lps.len(), tops.len()), (8, 8));
    for (chosen, top) in token_lps.iter().zip(tops) {
        let chosen = chosen.as_f64().unwrap();
        assert!(chosen <= 0.0);
        let top = top.as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= 3);
        // Greedy: the chosen token is the most likely one.
        let best = top
            .values()
            .map(|x| x.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!((best - chosen).abs() < 1e-4, "{best} vs {chosen}");
    }
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));

    let v = post(
        s.addr,
        CHAT,
        &chat(json!({"logprobs": true, "top_logprobs": 2})),
    )
    .await
    .json();
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 8);
    for t in content {
        assert!(
            t["token"].is_string()
                && t["logprob"].as_f64().unwrap() <= 0.0
                && t["bytes"].is_array()
        );
        assert_eq!(t["top_logprobs"].as_array().unwrap().len(), 2);
    }
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_string_ends_the_text_before_it() {
    let s = TestServer::start().await;
    let full = post(s.addr, COMPLETIONS, &completion(json!({"max_tokens": 24})))
        .await
        .json();
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(
        chars.len() >= 6,
        "greedy text too short to test stops: {text:?}"
    );
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let v = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"max_tokens": 24, "stop": [stop]})),
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["text"], cut, "stop {stop:?} in {text:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_and_detokenize_round_trip() {
    let s = TestServer::start().await;
    let text = "Hello there, general Kenobi";
    let r = post(
        s.addr,
        "/tokenize",
        &json!({"model": MODEL, "prompt": text}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let want = s.tokenizer.encode(text, true).unwrap();
    assert_eq!(v["tokens"], json!(want));
    assert_eq!(v["count"], want.len());
    assert_eq!(v["max_model_len"], 256);
    assert!(v["token_strs"].is_null());

    let v = post(
        s.addr,
        "/tokenize",
        &json!({"prompt": text, "add_special_tokens": false, "return_token_strs": true}),
    )
    .await
    .json();
    let ids: Vec<u32> = serde_json::from_value(v["tokens"].clone()).unwrap();
    let strs: Vec<String> = serde_json::from_value(v["token_strs"].clone()).unwrap();
    assert_eq!(strs.len(), ids.len());
    for (id, spelled) in ids.iter().zip(&strs) {
        assert_eq!(
            s.tokenizer.id_to_token(*id).as_deref(),
            Some(spelled.as_str())
        );
    }
    let r = post(s.addr, "/detokenize", &json!({"tokens": ids})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["prompt"], text);

    // Messages count exactly what a chat completion of them is charged.
    let messages = json!([{"role": "user", "content": "Hi"}]);
    let counted = post(s.addr, "/tokenize", &json!({"messages": messages}))
        .await
        .json();
    let charged = post(s.addr, CHAT, &chat(json!({"messages": messages})))
        .await
        .json();
    assert_eq!(counted["count"], charged["usage"]["prompt_tokens"]);
    let without = post(
        s.addr,
        "/tokenize",
        &json!({"messages": messages, "add_generation_prompt": false}),
    )
    .await
    .json();
    let rendered = "<|im_start|>user\nHi<|im_end|>\n";
    assert_eq!(
        without["tokens"],
        json!(s.tokenizer.encode(rendered, false).unwrap())
    );
    s.finish().await.unwrap();
}

/// `continue_final_message` leaves the assistant's last turn open, both when counting and when
/// generating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_message_can_be_continued() {
    let s = TestServer::start().await;
    let messages = json!([
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, I am"}
    ]);
    let open = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello, I am";
    let want = s.tokenizer.encode(open, false).unwrap();
    let body = json!({"messages": messages, "continue_final_message": true});
    let v = post(s.addr, "/tokenize", &body).await.json();
    assert_eq!(v["tokens"], json!(want));
    let r = post(s.addr, CHAT, &chat(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["usage"]["prompt_tokens"], want.len());
    s.finish().await.unwrap();
}

/// The tiny model's ChatML template has no `tools` variable, so tools reach it through the
/// fallback system prompt and earlier tool use as text; its random prose is never a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_with_tools_renders_the_fallback_and_answers_in_shape() {
    use tandem::server::tools::request::parse_tool_fields;
    use tandem::server::tools::template::fallback_system_prompt;

    let s = TestServer::start().await;
    // Small: the fallback prompt must leave room in the tiny model's 256-token context.
    let tools = json!([{"type": "function", "function": {"name": "get_weather"}}]);
    let chatml = |turns: &[(&str, &str)]| -> usize {
        let mut text: String = turns
            .iter()
            .map(|(role, content)| format!("<|im_start|>{role}\n{content}<|im_end|>\n"))
            .collect();
        text.push_str("<|im_start|>assistant\n");
        s.tokenizer.encode(&text, false).unwrap().len()
    };
    let parsed = parse_tool_fields(json!({"tools": tools}).as_object().unwrap())
        .unwrap()
        .unwrap();
    let system = fallback_system_prompt(&parsed);

    let r = post(s.addr, CHAT, &chat(json!({"tools": tools}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    let c = &v["choices"][0];
    assert!(c["message"]["content"].is_string(), "{v}");
    assert!(c["message"].get("tool_calls").is_none(), "{v}");
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(
        v["usage"]["prompt_tokens"],
        chatml(&[("system", &system), ("user", "Hi")])
    );

    let none = post(
        s.addr,
        CHAT,
        &chat(json!({"tools": tools, "tool_choice": "none"})),
    )
    .await;
    assert_eq!(
        none.json()["usage"]["prompt_tokens"],
        chatml(&[("user", "Hi")])
    );

    // Streaming reads the same answer the same way.
    let body = chat(json!({"tools": tools, "stream": true}));
    let events = parse_events(&post(s.addr, CHAT, &body).await);
    let (texts, finish) = collect_stream(&events);
    assert_eq!(texts[0], c["message"]["content"].as_str().unwrap());
    assert_eq!(finish[0].as_deref(), Some("length"));
    assert!(events
        .iter()
        .all(|e| e["choices"][0]["delta"].get("tool_calls").is_none()));

    // A tool result round trip: the earlier call and its result are rendered as text (without
    // the system prompt, which would leave the tiny context too little room).
    let messages = json!([
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "-3C"}
    ]);
    let body = chat(json!({"tools": tools, "tool_choice": "none", "messages": messages}));
    let r = post(s.addr, CHAT, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Oslo\"}}\n</tool_call>";
    assert_eq!(
        r.json()["usage"]["prompt_tokens"],
        chatml(&[
            ("user", "Hi"),
            ("assistant", call),
            ("user", "<tool_response>\n-3C\n</tool_response>")
        ])
    );

    for (extra, param) in [
        (
            json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "other"}}}),
            "tool_choice",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}),
            "tools[0].function.name",
        ),
    ] {
        let r = post(s.addr, CHAT, &chat(extra)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.error_param().as_deref(), Some(param), "{}", r.text());
    }
    s.finish().await.unwrap();
}

/// A template that lists the tools it is given by name (the fallback prompt for templates
/// without tools leaves the tiny model's 256-token context too little room for an answer).
const TOOL_NAMES_TEMPLATE: &str = "{% if tools %}tools:{% for t in tools %} {{ t.function.name }}{% endfor %}\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// `tool_choice` "required" or a named function: the grammar makes even the tiny random model's
/// answer a call of the tool with arguments matching its schema, read back into `tool_calls`
/// with a `tool_calls` finish, whole and streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_tool_call_is_a_call_of_that_tool() {
    let server_cfg = ServerConfig {
        chat_template: Some(TOOL_NAMES_TEMPLATE.into()),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(engine_config(), server_cfg).await;
    let weather = json!([{"type": "function", "function": {"name": "w", "parameters": {
        "type": "object", "properties": {"c": {"enum": ["a", "b"]}}, "required": ["c"],
        "additionalProperties": false}}}]);
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "w"}}),
    ] {
        let body = chat(
            json!({"tools": weather, "tool_choice": choice, "max_tokens": 30,
            "parallel_tool_calls": false, "temperature": 0}),
        );
        let r = post(s.addr, CHAT, &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        let c = &v["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{v}");
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function", "{v}");
        assert_eq!(call["function"]["name"], "w", "{v}");
        assert!(call["id"].as_str().unwrap().starts_with("call_"), "{v}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(
            args == json!({"c": "a"}) || args == json!({"c": "b"}),
            "{args}"
        );

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let events = parse_events(&post(s.addr, CHAT, &streamed).await);
        let arguments: String = events
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        let streamed_args: Value = serde_json::from_str(&arguments).unwrap();
        assert_eq!(
            streamed_args, args,
            "greedy: the stream makes the same call"
        );
        assert!(events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
    }

    s.finish().await.unwrap();
}
