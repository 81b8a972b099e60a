//! Faults cost the requests they hit and nothing else, and load costs only latency: a request
//! whose sampling or detokenization fails gets an error while its batch-mates finish; the engine
//! thread dying turns /health to 503 and fails every pending request with a clear error; slow
//! readers, header floods, slow headers and slow bodies are cut off without stalling anyone; a
//! burst far beyond the KV cache completes through preemption with each request's greedy output.
//!
//! Faults are injected through `engine::start_with_faults` (tests only), which marks requests by
//! their exact prompt.

#[path = "common/server.rs"]
mod common_server;

use common_server::*;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use tandem::engine::{EngineConfig, FaultPlan};
use tandem::server::ServerConfig;

/// The prompt that triggers the injected fault.
const MARKER: [u32; 3] = [7, 7, 7];
/// Prompts of well-behaved requests.
const PROMPTS: [[u32; 3]; 3] = [[1, 2, 3], [4, 5, 6], [8, 9, 10]];

fn greedy(prompt: &[u32], max_tokens: usize, stream: bool) -> Value {
    completion(
        json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": stream}),
    )
}

/// The completion text of a whole (non-streaming) 200 response.
fn text_of(r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

/// One request's fault fails it alone: the requests decoding in the same steps finish with the
/// output they have alone, and the engine stays healthy.
async fn only_the_faulty_request_fails(faults: FaultPlan, expected: &str) {
    // Each good request alone first, for its reference output, on a server at full speed.
    let reference = TestServer::start().await;
    let mut alone = Vec::new();
    for p in PROMPTS {
        alone.push(text_of(
            &post(reference.addr, COMPLETIONS, &greedy(&p, 240, false)).await,
        ));
    }
    reference.finish().await.unwrap();
    // Slow steps keep the good requests running (240 steps, at least 7 s) while the faulty ones
    // fail within their first step, however a busy machine schedules this test: the faulty
    // requests sharing steps with the good ones holds by construction, not by a race.
    let faults = FaultPlan {
        min_step_time: Some(Duration::from_millis(30)),
        ..faults
    };
    let s = TestServer::start_with_faults(engine_config(), ServerConfig::default(), faults).await;

    // The good ones start, then the faulty one joins their batch (whole and streaming).
    let addr = s.addr;
    let good: Vec<_> = PROMPTS
        .iter()
        .map(|p| {
            let body = greedy(p, 240, false);
            tokio::spawn(async move { post(addr, COMPLETIONS, &body).await })
        })
        .collect();
    eventually("the good requests run", || s.handle.stats().running == 3).await;
    let steps_before = s.handle.stats().steps;
    let bad = post(s.addr, COMPLETIONS, &greedy(&MARKER, 120, false)).await;
    assert!(
        s.handle.stats().running > 0,
        "the faulty request did not share steps with the good ones"
    );
    let bad_stream = post(s.addr, COMPLETIONS, &greedy(&MARKER, 120, true)).await;

    assert_eq!(
        bad.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        bad.text()
    );
    let message = bad.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains(expected), "{message}");
    // A stream fails inside the 200 it already started: an error event, then [DONE].
    assert_eq!(bad_stream.status, StatusCode::OK);
    let events = bad_stream.sse();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        err["error"]["message"].as_str().unwrap().contains(expected),
        "{err}"
    );

    for (g, want) in good.into_iter().zip(&alone) {
        assert_eq!(
            &text_of(&g.await.unwrap()),
            want,
            "a batch-mate's output changed"
        );
    }
    let stats = s.handle.stats();
    assert!(
        stats.steps > steps_before,
        "the faulty requests joined running steps"
    );
    assert_eq!(stats.finished_error, 2, "{stats:?}");
    assert!(s.handle.is_alive());
    assert_eq!(get(s.addr, "/health").await.status, StatusCode::OK);
    s.wait_idle().await;
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sampler_fails_only_its_own_request() {
    let faults = FaultPlan {
        panic_sampling: Some(MARKER.to_vec()),
        ..FaultPlan::default()
    };
    only_the_faulty_request_fails(faults, "sampling failed: injected sampling fault").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_detokenizer_fails_only_its_own_request() {
    let faults = FaultPlan {
        panic_detokenizing: Some(MARKER.to_vec()),
        ..FaultPlan::default()
    };
    only_the_faulty_request_fails(
        faults,
        "detokenization failed: injected detokenization fault",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_thread_panic_fails_pending_requests_and_turns_health_to_503() {
    let faults = FaultPlan {
        panic_engine: Some(MARKER.to_vec()),
        // The pending requests must still be pending when the engine dies: their 240 steps take
        // at least 12 s (0.1 s at full speed, which one stall of a busy CI machine can eat),
        // and the engine dies on the killer's submission, a few steps in.
        min_step_time: Some(Duration::from_millis(50)),
        ..FaultPlan::default()
    };
    let s = TestServer::start_with_faults(engine_config(), ServerConfig::default(), faults).await;
    let addr = s.addr;
    // Pending work of every kind: running whole and streaming, and waiting in the queue.
    let cfg = engine_config();
    let pending: Vec<_> = (0..cfg.max_num_seqs + 2)
        .map(|i| {
            let body = greedy(&PROMPTS[i % 3], 240, i % 2 == 0);
            tokio::spawn(async move { post(addr, COMPLETIONS, &body).await })
        })
        .collect();
    eventually("the requests run", || s.handle.stats().running > 0).await;
    assert_eq!(get(s.addr, "/health").await.status, StatusCode::OK);

    let started = Instant::now();
    let killer = post(s.addr, COMPLETIONS, &greedy(&MARKER, 8, false)).await;
    assert!(
        killer.status.is_server_error(),
        "{} {}",
        killer.status,
        killer.text()
    );
    assert!(killer.text().contains("engine"), "{}", killer.text());
    let stats = s.handle.stats();
    assert_eq!(
        stats.finished_length + stats.finished_stop,
        0,
        "a pending request finished before the engine died: {stats:?}"
    );

    for p in pending {
        let r = within("a pending request's answer after the engine died", p)
            .await
            .unwrap();
        let text = r.text();
        if r.headers["content-type"] == "text/event-stream" {
            // Streams already answered 200: they end with an error event, then [DONE].
            let events = r.sse();
            assert_eq!(events.last().unwrap(), "[DONE]");
            assert!(
                events[events.len() - 2]
                    .contains("the engine thread panicked: injected engine fault"),
                "{text}"
            );
        } else {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
            assert!(
                text.contains("the engine thread panicked: injected engine fault"),
                "{text}"
            );
        }
    }
    eprintln!(
        "every pending request failed within {:?}",
        started.elapsed()
    );

    assert!(!s.handle.is_alive());
    let why = s.handle.death_reason().unwrap();
    assert!(why.contains("injected engine fault"), "{why}");
    let r = get(s.addr, "/health").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = post(s.addr, COMPLETIONS, &completion(json!({}))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.text().contains("injected engine fault"), "{}", r.text());
    s.finish().await.unwrap();
}

/// A client with a tiny receive window that asks for a large streamed response and then reads
/// one byte per second.
async fn slow_reader(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = within("a connection to the server", socket.connect(addr))
        .await
        .unwrap();
    let body = completion(json!({
        "prompt": [1, 2, 3], "max_tokens": 240, "n": 4, "logprobs": 20, "stream": true,
        "temperature": 1.0, "seed": 1
    }))
    .to_string();
    let request = format!(
        "POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    within(
        "the request to be written",
        stream.write_all(request.as_bytes()),
    )
    .await
    .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_cannot_stall_the_engine_or_other_clients() {
    const SLOW: usize = 4;
    // The slow readers are cut off once this passes without their reading; until then they hold
    // their streams, and whatever they could stall is stalled (see below).
    let write_timeout = Duration::from_secs(5);
    // Small kernel buffers on both sides, so the responses (about 1 MB each) back up into the
    // server instead of disappearing into loopback's autotuned socket buffers.
    let cfg = ServerConfig {
        write_timeout,
        send_buffer_bytes: Some(16 << 10),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(engine_config(), cfg).await;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        slow.push(slow_reader(s.addr).await);
    }
    let readers: Vec<_> = slow
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                // One byte per second, for a while.
                let mut got = 0;
                for _ in 0..3 {
                    let mut b = [0u8; 1];
                    if within("a slow reader's next byte", c.read(&mut b))
                        .await
                        .unwrap_or(0)
                        == 0
                    {
                        break;
                    }
                    got += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                (c, got)
            })
        })
        .collect();

    // Meanwhile everyone else is served, and the engine keeps stepping. Were the slow readers
    // stalling the engine or the server, the normal requests could only finish once the slow
    // ones were cut off: so each must finish while no slow reader has been cut off yet (an
    // order, not a time; the write timeout leaves a loaded machine seconds for 6 short requests).
    let started = Instant::now();
    for i in 0..6 {
        let r = post(
            s.addr,
            COMPLETIONS,
            &greedy(&PROMPTS[i % 3], 64, i % 2 == 0),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let m = get(s.addr, "/metrics").await.text();
        assert_eq!(
            metric(&m, "tandem:client_disconnects_total"),
            Some(0.0),
            "normal request {i} was served only once slow readers had been cut off"
        );
    }
    eprintln!(
        "6 normal requests beside {SLOW} slow readers in {:?}",
        started.elapsed()
    );

    // The slow connections are cut off after the write timeout: their streams never complete,
    // the server counts them as gone, and nothing stays held.
    let deadline = Instant::now() + LIMIT;
    loop {
        let m = get(s.addr, "/metrics").await.text();
        if metric(&m, "tandem:client_disconnects_total") == Some(SLOW as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow readers were not cut off:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in readers {
        let (mut c, got) = r.await.unwrap();
        assert!(got > 0, "the slow reader got its first bytes");
        // Read what is left as fast as possible: the connection ends without [DONE].
        let mut rest = Vec::new();
        let read = tokio::time::timeout(LIMIT, c.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        assert!(read.is_ok(), "the server never closed the slow connection");
        assert!(!rest.contains("[DONE]"), "the slow reader got everything");
    }
    s.wait_idle().await;
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_slow_headers_and_slow_bodies_are_cut_off() {
    let cfg = ServerConfig {
        header_read_timeout: Duration::from_millis(600),
        body_read_timeout: Duration::from_millis(600),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(engine_config(), cfg).await;

    // Too many header fields; one enormous header.
    let mut flood = b"GET /health HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..10_000 {
        flood.extend_from_slice(format!("x-flood-{i}: y\r\n").as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    let huge = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    // Each case below is a connection that only the server's limits can end: the client never
    // finishes its request and never closes. So the server closing it at all is the check; how
    // soon is the deadline's business (and a loaded machine's), not this test's.
    for request in [flood, huge.into_bytes()] {
        let mut c = connect(s.addr).await;
        // The server may close before reading everything: a failed write is fine.
        let _ = within("the flood to be written", c.write_all(&request)).await;
        let (reply, closed) = read_until_closed(&mut c).await;
        assert!(closed, "a header flood was not cut off: {reply:?}");
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
            "{reply:?}"
        );
    }

    // Headers trickled in one byte every 50 ms, for ever: an idle timer that each byte resets
    // would never fire, only a deadline on the whole head ends the connection.
    let mut c = connect(s.addr).await;
    let head = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec();
    let deadline = Instant::now() + LIMIT;
    let mut buf = [0u8; 256];
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "trickled headers were not cut off"
        );
        let byte = head.get(i).copied().unwrap_or(b'a');
        if c.write_all(&[byte]).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(50), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) | Err(_) => {}
        }
    }

    // An idle keep-alive connection is closed after the same deadline.
    let mut c = connect(s.addr).await;
    within(
        "the request to be written",
        c.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"),
    )
    .await
    .unwrap();
    let (reply, closed) = read_until_closed(&mut c).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(closed, "an idle connection stayed open");

    // A body that never finishes arriving: 408, then the connection closes.
    let mut c = connect(s.addr).await;
    within(
        "the request to be written",
        c.write_all(
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"pro",
        ),
    )
    .await
    .unwrap();
    let (reply, closed) = read_until_closed(&mut c).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(closed, "a stalled body's connection stayed open");

    // And the server is fine.
    assert_eq!(get(s.addr, "/health").await.status, StatusCode::OK);
    let r = post(s.addr, COMPLETIONS, &completion(json!({}))).await;
    assert_eq!(r.status, StatusCode::OK);
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_far_beyond_the_kv_cache_completes_through_preemption() {
    // 20 blocks of 16 tokens: 320 tokens of cache. The burst: 12 requests of 3 + 150 tokens,
    // 1,836 tokens in all, each of which fits alone.
    let cfg = EngineConfig {
        num_blocks: 20,
        ..engine_config()
    };
    let s = TestServer::start_with(cfg, ServerConfig::default()).await;
    let prompts: Vec<Vec<u32>> = (0..12u32).map(|i| vec![1 + i, 40 + i, 90 + i]).collect();
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(text_of(
            &post(s.addr, COMPLETIONS, &greedy(p, 150, false)).await,
        ));
    }
    let m = get(s.addr, "/metrics").await.text();
    assert_eq!(metric(&m, "tandem:num_preemptions_total"), Some(0.0));

    let addr = s.addr;
    let burst: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let body = greedy(p, 150, i % 3 == 0);
            tokio::spawn(async move { post(addr, COMPLETIONS, &body).await })
        })
        .collect();
    for ((i, r), want) in burst.into_iter().enumerate().zip(&alone) {
        let r = r.await.unwrap();
        let text = if i % 3 == 0 {
            let events = parse_events(&r);
            let (texts, finish) = collect_stream(&events);
            assert_eq!(finish[0].as_deref(), Some("length"));
            texts[0].clone()
        } else {
            text_of(&r)
        };
        assert_eq!(&text, want, "request {i} differs from its run alone");
    }
    let deadline = Instant::now() + LIMIT;
    let preemptions = loop {
        let m = get(s.addr, "/metrics").await.text();
        let p = metric(&m, "tandem:num_preemptions_total").unwrap();
        if p > 0.0 || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("{preemptions} preemptions");
    assert!(preemptions > 0.0, "the burst was meant to preempt");
    s.wait_idle().await;
    s.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_does_not_hold_up_the_drain() {
    // The drain waits for requests between arrival and response: one whose body stops arriving
    // must leave at the body deadline, not hold the shutdown for its whole timeout. That timeout
    // is set far past the tests' wait limit, so a drain that waits on the upload fails `finish`
    // by construction, not by a race against a few seconds.
    let cfg = ServerConfig {
        body_read_timeout: Duration::from_millis(300),
        shutdown_timeout: LIMIT * 10,
        ..ServerConfig::default()
    };
    let mut s = TestServer::start_with(engine_config(), cfg).await;
    let mut c = connect(s.addr).await;
    within("the request to be written", c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"mes\r\n"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.begin_shutdown();
    let (reply, _) = read_until_closed(&mut c).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    s.finish().await.unwrap();
}

/// Found by the chat-template fuzzer: an assistant turn with `content: null` (OpenAI's shape for
/// a turn that only calls tools) made ChatML's `+` fail, and the failure answered 500. Such a turn
/// now reaches a template without tool support as text; a template that still cannot render
/// the messages is a 400 naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_template_cannot_render_are_a_400_not_a_500() {
    let body = chat(json!({"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": null, "tool_calls": []},
        {"role": "user", "content": "Go on"}
    ]}));
    let s = TestServer::start().await;
    let r = post(s.addr, CHAT, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    s.finish().await.unwrap();

    // `+` on a field the messages do not have (undefined): the render fails.
    let cfg = ServerConfig {
        chat_template: Some("{% for m in messages %}{{ m.role + m.name }}{% endfor %}".into()),
        ..ServerConfig::default()
    };
    let s = TestServer::start_with(engine_config(), cfg).await;
    let r = post(s.addr, CHAT, &body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.error_param().as_deref(), Some("messages"));
    s.finish().await.unwrap();
}

/// A prompt of megabytes cannot fit a 256-token context whatever it tokenizes to: it is refused
/// from its length, without the seconds of CPU that tokenizing it would cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_far_over_the_context_is_refused_without_tokenizing() {
    let s = TestServer::start().await;
    for (path, body) in [
        (
            COMPLETIONS,
            completion(json!({"prompt": "lorem ipsum ".repeat(300_000)})),
        ),
        (
            CHAT,
            chat(json!({"messages": [{"role": "user", "content": "x".repeat(3_000_000)}]})),
        ),
    ] {
        let started = Instant::now();
        let r = post(s.addr, path, &body).await;
        eprintln!("{path}: refused in {:?}", started.elapsed());
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bytes of text"),
            "{v}"
        );
    }
    // Just under the bound, the prompt is tokenized and the exact count reported.
    let r = post(
        s.addr,
        COMPLETIONS,
        &completion(json!({"prompt": "lorem ipsum ".repeat(1000)})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("tokens in the prompt") || r.text().contains("in the prompt"),
        "{}",
        r.text()
    );
    s.finish().await.unwrap();
}
