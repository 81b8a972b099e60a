//! Soak: for a set time, concurrent clients mix valid requests (whole and streaming, chat and
//! completions, varied sampling), malformed ones (broken JSON, invalid UTF-8, 5,000 nested
//! brackets, huge numbers, oversized prompts and bodies, `n` and `logprobs` far over their caps)
//! and clients that vanish mid-stream. Pass: every valid request answers 200 with a complete,
//! well-formed body; every malformed one a 4xx with an error envelope; nothing answers 5xx;
//! afterwards no request is left running or waiting and the KV cache is back to empty; resident
//! memory after warm-up (the first half) grows less than 10%.
//!
//! `soak_in_suite` (~20 s) runs this package's `tandem serve` on the tiny model as a child
//! process (so its resident memory is the server's alone).
//! `scripts/soak.sh` runs `soak_external` against a real `tandem serve` for longer
//! (`TANDEM_SOAK_ADDR`, `TANDEM_SOAK_PID` for its RSS, `TANDEM_SOAK_SECS`), on any model (valid
//! requests name the model the server reports). With `TANDEM_SOAK_ROUNDS` = 3 or more it runs that
//! many rounds back to back against the one server and reads its resident memory at idle after
//! each: a leak grows from round to round, allocator retention levels off after the first, so
//! round 3 is compared with round 2 (`ROUND_GROWTH`).

#[path = "common/server.rs"]
mod common_server;

use bytes::Bytes;
use common_server::*;
use hyper::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the clients did, and what went wrong.
#[derive(Default, Debug)]
struct Tally {
    valid: u64,
    streamed: u64,
    malformed: u64,
    vanished: u64,
    probes: u64,
    /// Tokens (completion_tokens) in the valid answers.
    tokens: u64,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        if self.failures.len() < 20 {
            self.failures.push(what);
        }
    }
}

struct Soak {
    addr: SocketAddr,
    /// How long the load runs (each round's, with several).
    duration: Duration,
    clients: usize,
    /// Rounds of load against the one server, each followed by a reading of its memory at
    /// idle (see [`Soak::rounds`]); 1 runs the single-round checks instead.
    rounds: usize,
    /// Resident memory of the server, in KiB.
    rss: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// The model the server serves: its name (which valid requests must give) and context length.
struct Served {
    name: String,
    max_len: usize,
}

impl Served {
    async fn of(addr: SocketAddr) -> Served {
        let v = get(addr, "/v1/models").await.json();
        let m = &v["data"][0];
        Served {
            name: m["id"].as_str().expect("a model id").to_string(),
            max_len: m["max_model_len"].as_u64().expect("max_model_len") as usize,
        }
    }
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A valid request: (endpoint, body, n, include_usage).
fn valid_request(rng: &mut StdRng, model: &Served) -> (&'static str, Value, bool) {
    let chat = rng.random_bool(0.4);
    let stream = rng.random_bool(0.5);
    let n = if rng.random_bool(0.2) { 2 } else { 1 };
    let mut body = json!({
        "model": model.name,
        "max_tokens": rng.random_range(1..40),
        "n": n,
        "stream": stream,
        "ignore_eos": rng.random_bool(0.5),
    });
    if rng.random_bool(0.5) {
        body["temperature"] = json!(rng.random_range(0.0..1.5));
        body["seed"] = json!(rng.random::<u32>());
        if rng.random_bool(0.5) {
            body["top_p"] = json!(rng.random_range(0.1..1.0));
        }
        if rng.random_bool(0.3) {
            body["top_k"] = json!(rng.random_range(1..50));
        }
        if rng.random_bool(0.3) {
            body["frequency_penalty"] = json!(0.5);
        }
    }
    if rng.random_bool(0.2) {
        body["stop"] = json!(["e", "\n"]);
    }
    if stream && rng.random_bool(0.5) {
        body["stream_options"] = json!({"include_usage": true});
    }
    let words = [
        "The", "cat", "sat", "on", "a", "mat", "😀", "日本", "and", "then",
    ];
    let len = rng.random_range(1..30);
    let text: Vec<&str> = (0..len)
        .map(|_| words[rng.random_range(0..words.len())])
        .collect();
    let text = text.join(" ");
    if chat {
        body["messages"] = json!([{"role": "user", "content": text}]);
        if rng.random_bool(0.3) {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(rng.random_range(0..5));
        }
        (CHAT, body, stream)
    } else {
        body["prompt"] = if rng.random_bool(0.3) {
            json!((0..len)
                .map(|_| rng.random_range(4..500))
                .collect::<Vec<u32>>())
        } else {
            json!(text)
        };
        if rng.random_bool(0.3) {
            body["logprobs"] = json!(rng.random_range(0..5));
        }
        (COMPLETIONS, body, stream)
    }
}

/// Checks a 200 answer to a valid request; returns its completion tokens.
fn check_valid(r: &Reply, body: &Value, stream: bool) -> Result<u64, String> {
    if r.status != StatusCode::OK {
        return Err(format!("{} for {body}: {}", r.status, r.text()));
    }
    let n = body["n"].as_u64().unwrap() as usize;
    let max_tokens = body["max_tokens"].as_u64().unwrap();
    let reasons = ["stop", "length"];
    if !stream {
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| format!("{e}: {}", r.text()))?;
        let choices = v["choices"].as_array().ok_or("no choices")?;
        if choices.len() != n {
            return Err(format!("{} choices for n = {n}: {v}", choices.len()));
        }
        for c in choices {
            let f = c["finish_reason"].as_str().unwrap_or("");
            if !reasons.contains(&f) {
                return Err(format!("finish_reason {f:?}: {v}"));
            }
        }
        let used = v["usage"]["completion_tokens"].as_u64().ok_or("no usage")?;
        if used == 0 || used > max_tokens * n as u64 {
            return Err(format!("{used} completion tokens: {v}"));
        }
        return Ok(used);
    }
    let text = r.text();
    if !text.ends_with("data: [DONE]\n\n") {
        return Err(format!("a stream without [DONE]: {text}"));
    }
    let mut finished = vec![false; n];
    let mut used = 0;
    for ev in text.trim_end_matches("\n\n").split("\n\n") {
        let payload = ev
            .strip_prefix("data: ")
            .ok_or_else(|| format!("not an SSE data event: {ev:?}"))?;
        if payload == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(payload).map_err(|e| format!("{e}: {payload}"))?;
        if v.get("error").is_some() {
            return Err(format!("an error event: {payload}"));
        }
        if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
            used = u;
        }
        for c in v["choices"].as_array().ok_or("no choices")? {
            if let Some(f) = c["finish_reason"].as_str() {
                let i = c["index"].as_u64().unwrap_or(99) as usize;
                if !reasons.contains(&f) || i >= n || finished[i] {
                    return Err(format!("bad finish {f:?} for choice {i}: {payload}"));
                }
                finished[i] = true;
            }
        }
    }
    if !finished.iter().all(|&f| f) {
        return Err(format!("a choice never finished: {text}"));
    }
    Ok(used)
}

/// A malformed request: (path, body bytes).
fn malformed_request(rng: &mut StdRng, model: &Served) -> (&'static str, Vec<u8>) {
    // Well over the context whatever it tokenizes to (each repeat is two tokens or more).
    let over = "lorem ipsum ".repeat(2000.max(2 * model.max_len));
    let path = if rng.random_bool(0.5) {
        COMPLETIONS
    } else {
        CHAT
    };
    let body: Vec<u8> = match rng.random_range(0..10) {
        0 => br#"{"prompt": "Hello", "max_tokens": 4"#.to_vec(),
        1 => b"{\"prompt\": \"\xff\xfe\xc3\", \"messages\": \"\xe2\x82\"}".to_vec(),
        2 => format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        3 => format!(
            "{{\"prompt\": {}1{}, \"messages\": {}{}}}",
            "[".repeat(5000),
            "]".repeat(5000),
            "{\"a\":".repeat(5000),
            "}".repeat(5000)
        )
        .into_bytes(),
        4 => br#"{"prompt": "x", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e999}"#
            .to_vec(),
        5 => br#"{"prompt": "x", "messages": [{"role": "user", "content": "x"}], "max_tokens": 340282366920938463463374607431768211456, "temperature": 1e300}"#
            .to_vec(),
        // Far over the context.
        6 => json!({"prompt": over, "messages": [{"role": "user", "content": over}]})
            .to_string()
            .into_bytes(),
        7 => json!({"prompt": "x", "messages": [{"role": "user", "content": "x"}], "n": 100000, "logprobs": 100000})
            .to_string()
            .into_bytes(),
        8 => json!({"prompt": "x", "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 500, "n": 17})
            .to_string()
            .into_bytes(),
        _ => br#"{"prompt": "x", "messages": [{"role": "user", "content": "x"}], "stop": ["", 3]}"#.to_vec(),
    };
    (path, body)
}

/// A body over the 4 MiB limit, sent raw: the server answers 413 as soon as it sees the
/// declared length, possibly before the client has finished writing (a client library would
/// report a broken pipe instead of the answer).
async fn oversized(addr: SocketAddr, chunked: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = connect(addr).await;
    let size = (4 << 20) + 1;
    let head = if chunked {
        format!("POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{size:x}\r\n")
    } else {
        format!("POST {COMPLETIONS} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n")
    };
    let _ = within("an oversized body to be written or refused", async {
        c.write_all(head.as_bytes()).await?;
        c.write_all(&vec![b' '; size]).await
    })
    .await;
    let mut reply = Vec::new();
    let _ = within("the answer to an oversized body", c.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// A client that asks for a long stream and goes away after its first event (or before its
/// whole answer).
async fn vanish(addr: SocketAddr, rng: &mut StdRng, model: &Served) {
    use http_body_util::BodyExt;
    let stream = rng.random_bool(0.7);
    let body = json!({"model": model.name, "prompt": [1, 2, 3], "max_tokens": 200, "ignore_eos": true,
        "stream": stream, "n": rng.random_range(1..3)});
    let (resp, conn) = open(
        addr,
        Method::POST,
        COMPLETIONS,
        Some("application/json"),
        body.to_string(),
    )
    .await;
    if stream {
        let mut body = resp.into_body();
        let _ = within("a stream's first event", body.frame()).await;
    }
    conn.abort();
}

async fn client(
    addr: SocketAddr,
    model: Arc<Served>,
    id: u64,
    until: Instant,
    tally: Arc<Mutex<Tally>>,
) {
    let mut rng = StdRng::seed_from_u64(0x50a4 + id);
    while Instant::now() < until {
        let roll = rng.random_range(0..100);
        if roll < 55 {
            let (path, body, stream) = valid_request(&mut rng, &model);
            let r = post(addr, path, &body).await;
            let checked = check_valid(&r, &body, stream);
            let mut t = tally.lock().unwrap();
            t.valid += 1;
            t.streamed += stream as u64;
            match checked {
                Ok(tokens) => t.tokens += tokens,
                Err(e) => t.fail(format!("valid {path}: {e}")),
            }
        } else if roll < 57 {
            let reply = oversized(addr, rng.random_bool(0.5)).await;
            let mut t = tally.lock().unwrap();
            t.malformed += 1;
            if !reply.starts_with("HTTP/1.1 413") {
                t.fail(format!("oversized body: {reply:?}"));
            }
        } else if roll < 85 {
            let (path, body) = malformed_request(&mut rng, &model);
            let r = send(
                addr,
                Method::POST,
                path,
                Some("application/json"),
                Bytes::from(body),
            )
            .await;
            let envelope = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string));
            let mut t = tally.lock().unwrap();
            t.malformed += 1;
            if !r.status.is_client_error() || envelope.is_none() {
                t.fail(format!("malformed {path}: {} {}", r.status, r.text()));
            }
        } else if roll < 95 {
            vanish(addr, &mut rng, &model).await;
            tally.lock().unwrap().vanished += 1;
        } else {
            let path = if rng.random_bool(0.5) {
                "/health"
            } else {
                "/metrics"
            };
            let r = get(addr, path).await;
            let mut t = tally.lock().unwrap();
            t.probes += 1;
            if r.status != StatusCode::OK {
                t.fail(format!("{path}: {}", r.status));
            }
        }
    }
}

/// The engine's gauges from /metrics once they settle at idle: (running, waiting, KV usage).
async fn settle(addr: SocketAddr) -> (f64, f64, f64) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let m = get(addr, "/metrics").await.text();
        let g = |name| metric(&m, name).unwrap_or(f64::NAN);
        let now = (
            g("tandem:num_requests_running"),
            g("tandem:num_requests_waiting"),
            g("tandem:kv_cache_usage_perc"),
        );
        if now == (0.0, 0.0, 0.0) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one round of load did and what the server's memory did meanwhile (KiB).
struct Round {
    tally: Tally,
    elapsed: Duration,
    /// The highest reading in the round's first half, which sees every kind of request and its
    /// transient buffers.
    rss_warm: u64,
    /// The highest reading after it.
    rss_peak: u64,
    /// The reading once the server reports idle.
    rss_end: u64,
    /// The engine's gauges once idle: (running, waiting, KV usage).
    idle: (f64, f64, f64),
}

/// After a round, once the server reports idle: lets the allocator and the server's own
/// housekeeping finish before memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Round 3's idle memory may exceed round 2's by at most this fraction. Allocator retention
/// (arenas and caches kept after the first round's peak) does not grow from round to round; a
/// leak grows with every round's requests. Round 1 is not compared: it includes the warm-up.
const ROUND_GROWTH: f64 = 0.10;

impl Soak {
    async fn run(self) {
        let model = Arc::new(Served::of(self.addr).await);
        if self.rounds <= 1 {
            let r = self.round(&model).await;
            r.check_served();
            r.check_memory_within_round();
            return;
        }
        // Several rounds back to back against the one server, its memory read at idle after
        // each: retained memory should level off after the first.
        let mut idle_rss = Vec::new();
        for i in 1..=self.rounds {
            let r = self.round(&model).await;
            r.check_served();
            tokio::time::sleep(SETTLE).await;
            let rss = (self.rss)();
            eprintln!(
                "soak round {i} of {}: {} valid requests in {:.1?}; RSS at idle {rss} KiB",
                self.rounds, r.tally.valid, r.elapsed
            );
            idle_rss.push(rss);
        }
        eprintln!("soak: RSS at idle after each round (KiB): {idle_rss:?}");
        if idle_rss.len() >= 3 && idle_rss[1] > 0 {
            let growth = idle_rss[2] as f64 / idle_rss[1] as f64 - 1.0;
            assert!(
                growth < ROUND_GROWTH,
                "resident memory at idle grew {:.1}% from round 2 to round 3 (a leak): \
                 {idle_rss:?} KiB",
                growth * 100.0
            );
        }
    }

    /// One round of load: every client until the round's time is up, then the server's gauges
    /// once they settle at idle.
    async fn round(&self, model: &Arc<Served>) -> Round {
        let started = Instant::now();
        let until = started + self.duration;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let clients: Vec<_> = (0..self.clients as u64)
            .map(|id| tokio::spawn(client(self.addr, model.clone(), id, until, tally.clone())))
            .collect();
        // A leak grows with the requests served; buffers that come and go do not.
        let halfway = started + self.duration / 2;
        let mut rss_warm = 0;
        let mut rss_peak = 0;
        while Instant::now() < until {
            let rss = (self.rss)();
            if Instant::now() < halfway {
                rss_warm = rss_warm.max(rss);
            } else {
                rss_peak = rss_peak.max(rss);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in clients {
            c.await.expect("a soak client panicked");
        }
        let elapsed = started.elapsed();
        let idle = settle(self.addr).await;
        let rss_end = (self.rss)();
        let tally = std::mem::take(&mut *tally.lock().unwrap());
        let r = Round {
            tally,
            elapsed,
            rss_warm,
            rss_peak,
            rss_end,
            idle,
        };
        let t = &r.tally;
        let total = t.valid + t.malformed + t.vanished + t.probes;
        eprintln!(
            "soak: {total} requests in {elapsed:.1?} by {} clients: {} valid ({} streamed, {} tokens), \
             {} malformed, {} vanished, {} probes; {} failures",
            self.clients,
            t.valid,
            t.streamed,
            t.tokens,
            t.malformed,
            t.vanished,
            t.probes,
            t.failures.len()
        );
        eprintln!(
            "soak: RSS after warm-up {rss_warm} KiB, peak {rss_peak} KiB ({:+.1}%), end \
             {rss_end} KiB ({:+.1}%); idle gauges (running, waiting, kv) {idle:?}",
            r.pct(r.peak()),
            r.pct(rss_end)
        );
        r
    }
}

impl Round {
    fn peak(&self) -> u64 {
        self.rss_peak.max(self.rss_end)
    }

    /// `rss` against the warm-up reading, in percent.
    fn pct(&self, rss: u64) -> f64 {
        (rss as f64 / self.rss_warm.max(1) as f64 - 1.0) * 100.0
    }

    /// Every request answered as it should be, and the server back to idle.
    fn check_served(&self) {
        let t = &self.tally;
        assert!(
            t.failures.is_empty(),
            "failures:\n{}",
            t.failures.join("\n")
        );
        assert!(t.valid > 0 && t.malformed > 0 && t.vanished > 0, "{t:?}");
        assert_eq!(
            self.idle,
            (0.0, 0.0, 0.0),
            "the server did not return to idle"
        );
    }

    /// One round alone: memory once idle (what a leak shows) close to the warm-up level. The
    /// peak may also hold a burst of in-flight buffers (six clients' bodies, up to the body
    /// limit, at the same moment): a few MiB on a ~25 MiB process, so it gets a looser bound.
    fn check_memory_within_round(&self) {
        if self.rss_warm == 0 {
            return;
        }
        let (retained, peak) = (self.pct(self.rss_end), self.pct(self.peak()));
        assert!(
            retained < 10.0,
            "resident memory still {retained:.1}% above warm-up once idle (a leak)"
        );
        assert!(
            peak < 25.0,
            "resident memory peaked {peak:.1}% above warm-up"
        );
    }
}

/// A `tandem serve` child process (the binary this package builds) on the tiny model: its memory
/// is measured apart from the clients'.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn_server() -> (Child, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--model")
        .arg(model_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tandem serve");
    let mut child = Child(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        if within("a connection attempt", tokio::net::TcpStream::connect(addr))
            .await
            .is_ok()
            && get(addr, "/health").await.status == StatusCode::OK
        {
            return (child, addr);
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "tandem serve exited at startup"
        );
        assert!(Instant::now() < deadline, "tandem serve never got healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_in_suite() {
    let secs = std::env::var("TANDEM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let (mut server, addr) = spawn_server().await;
    let pid = server.0.id().to_string();
    Soak {
        addr,
        duration: Duration::from_secs(secs),
        clients: 6,
        rounds: 1,
        rss: Box::new(move || rss_kib(&pid)),
    }
    .run()
    .await;
    // And it still drains and exits cleanly on SIGTERM.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

/// Against a running server (see `scripts/soak.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn soak_external() {
    let addr: SocketAddr = std::env::var("TANDEM_SOAK_ADDR")
        .expect("TANDEM_SOAK_ADDR=host:port of a tandem server on this machine")
        .parse()
        .unwrap();
    assert!(
        addr.ip().is_loopback(),
        "soak only a server on this machine"
    );
    let pid = std::env::var("TANDEM_SOAK_PID").unwrap_or_default();
    let secs = std::env::var("TANDEM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let clients = std::env::var("TANDEM_SOAK_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let rounds = std::env::var("TANDEM_SOAK_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    Soak {
        addr,
        duration: Duration::from_secs(secs),
        clients,
        rounds,
        rss: Box::new(move || if pid.is_empty() { 0 } else { rss_kib(&pid) }),
    }
    .run()
    .await;
}
