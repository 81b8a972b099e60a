//! The server's answers to bad input and overload: 400 naming the param, 404/405, the context
//! check before any engine work, content type and body size, a full queue.

#[path = "common/server.rs"]
mod common_server;

use common_server::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use tandem::engine::scheduler::policy::SloMiss;
use tandem::engine::EngineConfig;
use tandem::server::ServerConfig;

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

/// Fields tandem cannot honour are refused by name rather than ignored (the policy table is
/// server/validate/fields.rs; its unit tests cover every row), no-op fields are accepted, and the
/// chat template's inputs are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhonoured_fields_are_400_naming_them() {
    let s = TestServer::start().await;
    let refused: Vec<(&str, Value, &str)> = vec![
        (COMPLETIONS, completion(json!({"suffix": "x"})), "suffix"),
        (COMPLETIONS, completion(json!({"best_of": 2})), "best_of"),
        (COMPLETIONS, completion(json!({"echo": true})), "echo"),
        (CHAT, chat(json!({"audio": {"voice": "alloy"}})), "audio"),
        (
            CHAT,
            chat(json!({"modalities": ["text", "audio"]})),
            "modalities",
        ),
        (
            CHAT,
            chat(json!({"prediction": {"type": "content", "content": "x"}})),
            "prediction",
        ),
        (
            CHAT,
            chat(json!({"web_search_options": {}})),
            "web_search_options",
        ),
        (
            CHAT,
            chat(json!({"functions": [{"name": "f"}]})),
            "functions",
        ),
        // The tiny model's template never reads it, so it would change nothing.
        (
            CHAT,
            chat(json!({"reasoning_effort": "low"})),
            "reasoning_effort",
        ),
        (
            CHAT,
            chat(json!({"chat_template_kwargs": "enable_thinking"})),
            "chat_template_kwargs",
        ),
        (
            CHAT,
            chat(json!({"chat_template_kwargs": {"bos_token": "x"}})),
            "chat_template_kwargs.bos_token",
        ),
        (
            CHAT,
            chat(json!({"continue_final_message": true, "add_generation_prompt": true})),
            "continue_final_message",
        ),
    ];
    for (path, body, param) in refused {
        let r = post(s.addr, path, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert_eq!(r.error_param().as_deref(), Some(param), "{body}");
    }
    let accepted = [chat(
        json!({"store": true, "metadata": {"k": "v"}, "service_tier": "auto",
            "prompt_cache_key": "p", "safety_identifier": "s", "modalities": ["text"],
            "audio": null, "chat_template_kwargs": {"enable_thinking": false}}),
    )];
    for body in accepted {
        let r = post(s.addr, CHAT, &body).await;
        assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.text());
    }
    let r = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"best_of": 1, "echo": false, "suffix": ""})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenizer_routes_refuse_bad_input() {
    let cfg = ServerConfig {
        max_body_bytes: 1024,
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(engine_config(), cfg).await;
    let vocab = s.tokenizer.vocab_size();
    let cases = [
        ("/detokenize", json!({"tokens": [1, vocab]}), Some("tokens")),
        ("/detokenize", json!({"tokens": [-1]}), Some("tokens")),
        ("/detokenize", json!({"tokens": "hi"}), Some("tokens")),
        ("/detokenize", json!({}), Some("tokens")),
        ("/tokenize", json!({}), Some("prompt")),
        ("/tokenize", json!({"prompt": 5}), Some("prompt")),
        ("/tokenize", json!({"messages": []}), Some("messages")),
        (
            "/tokenize",
            json!({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"messages": 1}}),
            Some("chat_template_kwargs.messages"),
        ),
    ];
    for (path, body, param) in cases {
        let r = post(s.addr, path, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(r.error_param().as_deref(), param, "{path} {body}");
    }
    for path in ["/tokenize", "/detokenize"] {
        let r = post(
            s.addr,
            path,
            &json!({"model": "gpt-9", "prompt": "x", "tokens": [1]}),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.error_param().as_deref(), Some("model"));
        let r = get(s.addr, path).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(r.headers["allow"], "POST");
        // The same body limit as the generation routes.
        let r = post(s.addr, path, &json!({"prompt": "x".repeat(2000)})).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        r.error_param();
        let r = send(s.addr, Method::POST, path, Some("text/plain"), "{}").await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{path}");
        r.error_param();
    }
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
    s.wait_idle().await;
    assert_eq!(
        post(s.addr, COMPLETIONS, &completion(json!({})))
            .await
            .status,
        StatusCode::OK
    );
    s.finish().await.unwrap();
}

/// `ttft_slo_ms` is validated (400 naming it), and under the deadline policy with
/// `--slo-miss refuse` a request that cannot start within its SLO is answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_slo_ms_is_validated_and_a_missed_slo_is_refused_with_503() {
    let cfg = EngineConfig {
        max_num_seqs: 1,
        policy: "deadline".into(),
        slo_miss: SloMiss::Refuse,
        ..engine_config()
    };
    let s = TestServer::start_with(cfg, ServerConfig::default()).await;
    for bad in [json!(-1), json!("5"), json!([5])] {
        let r = post(
            s.addr,
            COMPLETIONS,
            &completion(json!({ "ttft_slo_ms": bad })),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
        assert_eq!(r.error_param().as_deref(), Some("ttft_slo_ms"), "{bad}");
    }
    // One seat: the second choice waits for the first's 32 tokens, far past 1 ms.
    let r = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"n": 2, "max_tokens": 32, "ignore_eos": true, "ttft_slo_ms": 1})),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.text().contains("TTFT SLO"), "{}", r.text());
    s.wait_idle().await;
    // Streaming, the refusal is the stream's error event.
    let r = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({
            "n": 2, "max_tokens": 32, "ignore_eos": true, "ttft_slo_ms": 1, "stream": true
        })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().contains("TTFT SLO") && r.text().contains("service_unavailable"),
        "{}",
        r.text()
    );
    s.wait_idle().await;
    let r = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"n": 2, "ttft_slo_ms": 600000})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    s.finish().await.unwrap();
}
