//! The server's lifecycle: clients that vanish, graceful drain, a stopped engine, slow headers.

#[path = "common/server.rs"]
mod common_server;

use common_server::*;
use hyper::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tandem::server::ServerConfig;

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
