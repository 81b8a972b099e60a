//! The OpenAI-compatible server end to end, against the tiny Llama on 127.0.0.1:0: every
//! endpoint, every error case of the spec, streaming framing, disconnects and graceful drain.

#[path = "common/server.rs"]
mod common_server;

use common_server::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tandem::runtime::engine::EngineConfig;
use tandem::server::ServerConfig;

const COMPLETIONS: &str = "/v1/completions";
const CHAT: &str = "/v1/chat/completions";

/// `base` with `extra`'s fields added or replaced.
fn with(base: Value, extra: Value) -> Value {
    let mut base = base;
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn completion(extra: Value) -> Value {
    with(
        json!({"model": MODEL, "prompt": "Hello there", "max_tokens": 8, "ignore_eos": true}),
        extra,
    )
}

fn chat(extra: Value) -> Value {
    with(
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "ignore_eos": true}),
        extra,
    )
}

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

/// Text deltas and the finish reason of each choice in a completions or chat stream.
fn collect_stream(events: &[Value]) -> (Vec<String>, Vec<Option<String>>) {
    let mut texts = vec![String::new(); 4];
    let mut finish = vec![None; 4];
    for e in events {
        for c in e["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            let t = c["text"]
                .as_str()
                .or_else(|| c["delta"]["content"].as_str())
                .unwrap_or("");
            texts[i].push_str(t);
            if let Some(f) = c["finish_reason"].as_str() {
                assert!(finish[i].is_none(), "two finish reasons for choice {i}");
                finish[i] = Some(f.to_string());
            }
        }
    }
    (texts, finish)
}

fn parse_events(r: &Reply) -> Vec<Value> {
    let payloads = r.sse();
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{payloads:?}"
    );
    payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap_or_else(|e| panic!("{e}: {p}")))
        .collect()
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
async fn bad_requests_are_400_and_name_the_param() {
    let s = TestServer::start().await;
    let m = json!([{"role": "user", "content": "Hi"}]);
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            COMPLETIONS,
            completion(json!({"max_tokens": 0})),
            Some("max_tokens"),
        ),
        (
            COMPLETIONS,
            completion(json!({"max_tokens": -1})),
            Some("max_tokens"),
        ),
        (
            COMPLETIONS,
            completion(json!({"max_tokens": "8"})),
            Some("max_tokens"),
        ),
        (
            COMPLETIONS,
            completion(json!({"temperature": -1})),
            Some("temperature"),
        ),
        (COMPLETIONS, completion(json!({"top_p": 0})), Some("top_p")),
        (
            COMPLETIONS,
            completion(json!({"top_p": 1.5})),
            Some("top_p"),
        ),
        (COMPLETIONS, completion(json!({"top_k": -5})), Some("top_k")),
        (
            COMPLETIONS,
            completion(json!({"min_p": 1.5})),
            Some("min_p"),
        ),
        (
            COMPLETIONS,
            completion(json!({"presence_penalty": 3})),
            Some("presence_penalty"),
        ),
        (
            COMPLETIONS,
            completion(json!({"frequency_penalty": -2.5})),
            Some("frequency_penalty"),
        ),
        (
            COMPLETIONS,
            completion(json!({"repetition_penalty": -1})),
            Some("repetition_penalty"),
        ),
        (COMPLETIONS, completion(json!({"n": 0})), Some("n")),
        (COMPLETIONS, completion(json!({"n": 1000})), Some("n")),
        (
            COMPLETIONS,
            completion(json!({"logprobs": 21})),
            Some("logprobs"),
        ),
        (COMPLETIONS, completion(json!({"stop": ""})), Some("stop")),
        (
            COMPLETIONS,
            completion(json!({"stop": ["x", ""]})),
            Some("stop"),
        ),
        (
            COMPLETIONS,
            completion(json!({"prompt": [1, 2, 512]})),
            Some("prompt"),
        ),
        (
            COMPLETIONS,
            completion(json!({"prompt": [1, -2]})),
            Some("prompt"),
        ),
        (
            COMPLETIONS,
            completion(json!({"seed": 1.8446744073709552e19})),
            Some("seed"),
        ),
        (
            COMPLETIONS,
            completion(json!({"stream_options": {"include_usage": true}})),
            Some("stream_options"),
        ),
        (
            COMPLETIONS,
            completion(json!({"stream": "yes"})),
            Some("stream"),
        ),
        (
            COMPLETIONS,
            completion(json!({"prompt": ""})),
            Some("prompt"),
        ),
        (
            COMPLETIONS,
            completion(json!({"prompt": []})),
            Some("prompt"),
        ),
        (
            COMPLETIONS,
            completion(json!({"prompt": null})),
            Some("prompt"),
        ),
        (
            COMPLETIONS,
            completion(json!({"prompt": {"text": "x"}})),
            Some("prompt"),
        ),
        (COMPLETIONS, json!([1, 2, 3]), None),
        (CHAT, chat(json!({"messages": []})), Some("messages")),
        (CHAT, chat(json!({"messages": "Hi"})), Some("messages")),
        (
            CHAT,
            chat(json!({"messages": [{"content": "Hi"}]})),
            Some("messages[0].role"),
        ),
        (
            CHAT,
            chat(json!({"messages": [{"role": "user"}]})),
            Some("messages[0].content"),
        ),
        (
            CHAT,
            chat(json!({"messages": [{"role": "user", "content": 3}]})),
            Some("messages[0].content"),
        ),
        (
            CHAT,
            chat(json!({"messages": [{"role": "robot", "content": "x"}]})),
            Some("messages[0].role"),
        ),
        (
            CHAT,
            chat(json!({"messages": m, "logprobs": true, "top_logprobs": 21})),
            Some("top_logprobs"),
        ),
        (
            CHAT,
            chat(json!({"messages": m, "max_completion_tokens": 0})),
            Some("max_completion_tokens"),
        ),
    ];
    for (path, body, param) in cases {
        let r = post(s.addr, path, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert_eq!(r.error_param().as_deref(), param, "{body}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    // Not JSON at all.
    for raw in ["{\"prompt\": ", "not json", ""] {
        let r = send(
            s.addr,
            Method::POST,
            COMPLETIONS,
            Some("application/json"),
            raw,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{raw:?}");
        r.error_param();
    }
    // None of it reached the engine.
    assert_eq!(s.handle.stats().prompt_tokens, 0);
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_routes_and_methods() {
    let s = TestServer::start().await;
    for path in [COMPLETIONS, CHAT] {
        let body = if path == CHAT {
            chat(json!({"model": "gpt-9"}))
        } else {
            completion(json!({"model": "gpt-9"}))
        };
        let r = post(s.addr, path, &body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.error_param().as_deref(), Some("model"));
    }
    let r = post(s.addr, "/v1/nothing", &json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    r.error_param();
    let r = get(s.addr, COMPLETIONS).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
    r.error_param();
    let r = post(s.addr, "/health", &json!({})).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_length_is_checked_before_the_engine() {
    let s = TestServer::start().await;
    let ids: Vec<u32> = (0..250).map(|i| 10 + i % 400).collect();
    let r = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"prompt": ids, "max_tokens": 7})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("maximum context length"), "{}", r.text());
    assert_eq!(r.error_param().as_deref(), Some("prompt"));
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    // 250 + 6 = 256 fits exactly.
    let r = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"prompt": ids, "max_tokens": 6})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let long = "word ".repeat(400);
    let r = post(
        s.addr,
        CHAT,
        &chat(json!({"messages": [{"role": "user", "content": long}]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("maximum context length"));
    assert_eq!(r.error_param().as_deref(), Some("messages"));
    let no_limit = json!({"messages": [{"role": "user", "content": long}]});
    assert_eq!(
        post(s.addr, CHAT, &no_limit).await.status,
        StatusCode::BAD_REQUEST
    );
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_and_body_size_are_enforced() {
    let cfg = ServerConfig {
        max_body_bytes: 1024,
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(engine_config(), cfg).await;
    let body = completion(json!({})).to_string();
    let r = send(
        s.addr,
        Method::POST,
        COMPLETIONS,
        Some("text/plain"),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    r.error_param();
    // No Content-Type at all is taken as JSON (curl without -H still works).
    assert_eq!(
        send(s.addr, Method::POST, COMPLETIONS, None, body)
            .await
            .status,
        StatusCode::OK
    );

    let big = completion(json!({"prompt": "x".repeat(2000)}));
    let r = post(s.addr, COMPLETIONS, &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    r.error_param();

    // A huge declared length is refused from the headers alone, long before any body arrives.
    let head = format!(
        "POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n{{"
    );
    let reply = raw_exchange(s.addr, head.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // A chunked body is cut off once it passes the limit.
    let mut req =
        format!("POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
            .into_bytes();
    for _ in 0..4 {
        req.extend_from_slice(format!("{:x}\r\n{}\r\n", 512, "a".repeat(512)).as_bytes());
    }
    let reply = raw_exchange(s.addr, &req).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    s.finish().await.unwrap();
}

/// Writes `request` on a fresh connection and reads what comes back until the server closes it
/// or 5 s pass.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) if !out.is_empty() => break,
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    // One seat and one queue slot: of 16 choices submitted at once, at most 2 get in.
    let cfg = EngineConfig {
        max_num_seqs: 1,
        max_queue: 1,
        ..engine_config()
    };
    let s = TestServer::start_with(cfg, ServerConfig::default()).await;
    let r = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"n": 16, "max_tokens": 100})),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    // The choices that did get in were aborted with the rest.
    assert!(s.wait_idle(Duration::from_secs(5)).await);
    assert_eq!(
        post(s.addr, COMPLETIONS, &completion(json!({})))
            .await
            .status,
        StatusCode::OK
    );
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_frees_its_request() {
    use http_body_util::BodyExt;
    let s = TestServer::start().await;
    let body = completion(json!({"prompt": [1, 2, 3], "max_tokens": 250, "stream": true}));
    let started = Instant::now();
    let (resp, conn) = open(
        s.addr,
        Method::POST,
        COMPLETIONS,
        Some("application/json"),
        body.to_string(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    let running = s.handle.stats().running;
    drop(body);
    conn.abort();
    eprintln!(
        "disconnected {:?} after the request, {running} running",
        started.elapsed()
    );
    assert!(
        s.wait_idle(Duration::from_secs(5)).await,
        "the request was not freed"
    );
    let stats = s.handle.stats();
    assert!(
        stats.generation_tokens < 250,
        "the request ran to the end: {stats:?}"
    );
    assert_eq!(stats.finished_abort, 1, "{stats:?}");
    let m = get(s.addr, "/metrics").await.text();
    assert_eq!(metric(&m, "tandem:client_disconnects_total"), Some(1.0));
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_before_a_whole_response_frees_its_request() {
    let s = TestServer::start().await;
    let body = completion(json!({"prompt": [1, 2, 3], "max_tokens": 250, "n": 4})).to_string();
    let mut client = TcpStream::connect(s.addr).await.unwrap();
    let request = format!(
        "POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    // Wait until the engine is working on it, then hang up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.handle.stats().running == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(client);
    assert!(
        s.wait_idle(Duration::from_secs(5)).await,
        "the request was not freed"
    );
    let stats = s.handle.stats();
    assert!(
        stats.generation_tokens < 1000,
        "the request ran to the end: {stats:?}"
    );
    assert_eq!(stats.finished_abort, 4, "{stats:?}");
    let m = get(s.addr, "/metrics").await.text();
    assert_eq!(metric(&m, "tandem:client_disconnects_total"), Some(1.0));
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_new_work_and_finishes_in_flight_requests() {
    let mut s = TestServer::start().await;
    // A request whose body is half sent is in flight: the drain must wait for it.
    let body = completion(json!({})).to_string();
    let (a, b) = body.as_bytes().split_at(body.len() / 2);
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    s.begin_shutdown();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(s.addr, "/health").await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "/health never said 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = post(s.addr, COMPLETIONS, &completion(json!({}))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));

    slow.write_all(b).await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("\"usage\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"finish_reason\":\"length\""), "{reply}");
    tokio::time::timeout(Duration::from_secs(10), s.finish())
        .await
        .expect("drain hung")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_engine_makes_health_503() {
    let s = TestServer::start().await;
    s.handle.shutdown();
    let r = get(s.addr, "/health").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = post(s.addr, COMPLETIONS, &completion(json!({}))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    r.error_param();
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_with_its_headers_is_cut_off() {
    let cfg = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(engine_config(), cfg).await;
    let started = Instant::now();
    let reply = raw_exchange(s.addr, b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not cut off: {reply:?}"
    );
    // The server is still fine.
    assert_eq!(get(s.addr, "/health").await.status, StatusCode::OK);
    s.finish().await.unwrap();
}
