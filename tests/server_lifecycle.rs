//! The server's lifecycle: clients that vanish, graceful drain, a stopped engine, slow headers.

#[path = "common/server.rs"]
mod common_server;

use common_server::*;
use hyper::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tandem::engine::FaultPlan;
use tandem::server::ServerConfig;

/// A server whose engine takes at least 40 ms a step: a 250-token request runs for 10 s or more,
/// so a disconnect that the server notices at all stops it before its end, however a busy
/// machine schedules the test (at full speed the tiny model would finish it in about 0.1 s, and
/// the abort count and token bound below would depend on who won that race).
async fn slow_server() -> TestServer {
    let faults = FaultPlan {
        min_step_time: Some(Duration::from_millis(40)),
        ..FaultPlan::default()
    };
    TestServer::start_with_faults(engine_config(), ServerConfig::default(), faults).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_frees_its_request() {
    use http_body_util::BodyExt;
    let s = slow_server().await;
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
    let first = within("the stream's first event", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert!(first.data_ref().is_some());
    let running = s.handle.stats().running;
    drop(body);
    conn.abort();
    eprintln!(
        "disconnected {:?} after the request, {running} running",
        started.elapsed()
    );
    s.wait_idle().await;
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
    let s = slow_server().await;
    let body = completion(json!({"prompt": [1, 2, 3], "max_tokens": 250, "n": 4})).to_string();
    let mut client = connect(s.addr).await;
    let request = format!(
        "POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    within(
        "the request to be written",
        client.write_all(request.as_bytes()),
    )
    .await
    .unwrap();
    // Wait until the engine is working on it, then hang up.
    eventually("the engine runs the request", || {
        s.handle.stats().running > 0
    })
    .await;
    drop(client);
    s.wait_idle().await;
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
    let mut slow = connect(s.addr).await;
    let head = format!(
        "POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    within("the request head to be written", async {
        slow.write_all(head.as_bytes()).await?;
        slow.write_all(a).await
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    s.begin_shutdown();
    let deadline = Instant::now() + LIMIT;
    while get(s.addr, "/health").await.status != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "/health never said 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = post(s.addr, COMPLETIONS, &completion(json!({}))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers.contains_key("retry-after"));

    within("the rest of the body to be written", slow.write_all(b))
        .await
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("\"usage\"") {
        let n = within("the in-flight request's answer", slow.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"finish_reason\":\"length\""), "{reply}");
    s.finish().await.unwrap();
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
    // Half a request head, then nothing: only the header deadline can end this connection, so
    // the server closing it at all is the check (how soon is the deadline's business, and a
    // loaded machine's).
    let mut c = connect(s.addr).await;
    within(
        "the request head to be written",
        c.write_all(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\n"),
    )
    .await
    .unwrap();
    let (reply, closed) = read_until_closed(&mut c).await;
    assert!(closed, "not cut off: {reply:?}");
    // The server is still fine.
    assert_eq!(get(s.addr, "/health").await.status, StatusCode::OK);
    s.finish().await.unwrap();
}
