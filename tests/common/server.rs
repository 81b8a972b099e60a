//! Shared by the server tests: a tandem server with the tiny Llama on 127.0.0.1:0, and a small
//! HTTP/1.1 client (one connection per request, so tests control disconnects exactly).
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::header::{HeaderMap, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tandem::device::cpu::CpuBackend;
use tandem::engine::{self, Engine, EngineConfig, EngineHandle, FaultPlan};
use tandem::model::loader::ModelSource;
use tandem::model::tokenizer::Tokenizer;
use tandem::model::StepLimits;
use tandem::server::{serve, ServerConfig};

#[path = "wait.rs"]
pub mod wait;
#[allow(unused_imports)]
pub use wait::{eventually, within, LIMIT};

pub const MODEL: &str = "tiny-llama";

pub fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(MODEL)
}

/// A small engine: the tiny model's context is 256 tokens.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        max_num_seqs: 8,
        max_batch_tokens: 256,
        block_size: 16,
        num_blocks: 128,
        max_queue: 64,
        ..EngineConfig::default()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<anyhow::Result<()>>>,
    engine: Option<Engine>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(engine_config(), ServerConfig::default()).await
    }

    pub async fn start_with(cfg: EngineConfig, server_cfg: ServerConfig) -> Self {
        Self::start_with_faults(cfg, server_cfg, FaultPlan::default()).await
    }

    /// [`start_with`](Self::start_with) on an engine that injects `faults` (tests/faults.rs).
    pub async fn start_with_faults(
        cfg: EngineConfig,
        server_cfg: ServerConfig,
        faults: FaultPlan,
    ) -> Self {
        let source = ModelSource::open(&model_dir()).expect("open the tiny model");
        let limits = StepLimits {
            max_tokens: cfg.max_batch_tokens,
            max_seqs: cfg.max_num_seqs,
        };
        let (model, tokenizer) =
            tandem::runner::load(source, CpuBackend::new(), limits).expect("load it");
        let tokenizer = Arc::new(tokenizer);
        let engine = engine::start_with_faults(model, tokenizer.clone(), MODEL.into(), cfg, faults)
            .expect("start the engine");
        let handle = engine.handle();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(
            listener,
            handle.clone(),
            tokenizer.clone(),
            server_cfg,
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            handle,
            tokenizer,
            stop: Some(stop),
            served: Some(served),
            engine: Some(engine),
        }
    }

    /// Like SIGTERM: starts the drain; `finish` waits for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `serve` to return, then stops the engine.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        let served = self.served.take().expect("serve task");
        let served = within("the server to drain", served).await?;
        self.handle.shutdown();
        if let Some(engine) = self.engine.take() {
            let joined = tokio::task::spawn_blocking(move || engine.join());
            within("the engine threads to stop", joined).await??;
        }
        served
    }

    /// Polls until the engine runs nothing, queues nothing and holds no KV blocks; panics with
    /// the engine's numbers if that never happens.
    pub async fn wait_idle(&self) {
        let deadline = Instant::now() + LIMIT;
        while !wait::engine_idle(&self.handle) {
            assert!(
                Instant::now() < deadline,
                "the engine never went idle: {:?}, {} in flight",
                self.handle.stats(),
                self.handle.in_flight()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
        self.handle.shutdown();
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error envelope's `param`, checking the envelope has all four fields.
    pub fn error_param(&self) -> Option<String> {
        let v = self.json();
        let e = &v["error"];
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "error envelope without {k}: {v}");
        }
        e["param"].as_str().map(str::to_string)
    }

    /// The `data:` payloads of an SSE body, checking the framing of every event.
    pub fn sse(&self) -> Vec<String> {
        sse_payloads(&self.text())
    }
}

pub fn sse_payloads(text: &str) -> Vec<String> {
    assert!(
        text.ends_with("\n\n"),
        "an SSE body ends with a blank line: {text:?}"
    );
    text.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|ev| {
            let payload = ev
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {ev:?}"));
            assert!(!payload.contains('\n'), "one line per event: {ev:?}");
            payload.to_string()
        })
        .collect()
}

/// Opens a connection and sends one request; the response's body is left unread.
pub async fn open(
    addr: SocketAddr,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> (Response<Incoming>, JoinHandle<()>) {
    let stream = connect(addr).await;
    let (mut sender, conn) = within("the HTTP handshake", http1::handshake(TokioIo::new(stream)))
        .await
        .expect("handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let resp = within(
        &format!("the response head to {path}"),
        sender.send_request(req),
    )
    .await
    .expect("send");
    (resp, conn)
}

/// A TCP connection to the server.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    within("a connection to the server", TcpStream::connect(addr))
        .await
        .expect("connect")
}

pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Reply {
    let (resp, _conn) = open(addr, method, path, content_type, body).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = within(
        &format!("the whole response body of {path}"),
        resp.into_body().collect(),
    )
    .await
    .expect("read body")
    .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    send(
        addr,
        Method::POST,
        path,
        Some("application/json"),
        body.to_string(),
    )
    .await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Method::GET, path, None, Bytes::new()).await
}

/// The value of a Prometheus sample line `name value` in `/metrics`.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

// Request builders and response readers shared by the server test files.

pub const COMPLETIONS: &str = "/v1/completions";
pub const CHAT: &str = "/v1/chat/completions";

/// `base` with `extra`'s fields added or replaced.
pub fn with(base: Value, extra: Value) -> Value {
    let mut base = base;
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

pub fn completion(extra: Value) -> Value {
    with(
        json!({"model": MODEL, "prompt": "Hello there", "max_tokens": 8, "ignore_eos": true}),
        extra,
    )
}

pub fn chat(extra: Value) -> Value {
    with(
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "ignore_eos": true}),
        extra,
    )
}

/// Text deltas and the finish reason of each choice in a completions or chat stream.
pub fn collect_stream(events: &[Value]) -> (Vec<String>, Vec<Option<String>>) {
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

pub fn parse_events(r: &Reply) -> Vec<Value> {
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

/// Reads until the server closes the connection or [`LIMIT`] passes; returns what came and
/// whether the server closed it. Tests of the server's own deadlines use it: the server must
/// end the connection, however long a loaded machine makes it take.
pub async fn read_until_closed(c: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

/// Writes `request` on a fresh connection and reads what comes back until the server closes it
/// or 5 s pass.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = connect(addr).await;
    within("the request to be written", stream.write_all(request))
        .await
        .unwrap();
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
