//! Bounded waits for the tests. Every wait on the engine, the server or a child process goes
//! through one of these, so a hang fails its test with a message naming what it waited for,
//! instead of stalling the whole run until CI's own clock kills it without a word.
#![allow(dead_code)]

use std::future::Future;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tandem::engine::request::Event;
use tandem::engine::{Engine, EngineHandle, RequestStream};

/// How long any one wait may take. Generous, so that a loaded 2-core CI machine never fails a
/// test that is merely slow; finite, so that one that hangs fails.
pub const LIMIT: Duration = Duration::from_secs(120);

/// `fut`'s output, or a panic naming `what` once [`LIMIT`] has passed.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("gave up after {LIMIT:?} waiting for {what}"),
    }
}

/// [`within`] for code outside an async runtime (the engine tests' threads).
pub fn block_within<F: Future>(what: &str, fut: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a test runtime");
    }
    RUNTIME.with(|rt| rt.block_on(within(what, fut)))
}

/// Runs `f` on a thread of its own and returns what it returns, or panics naming `what` once
/// [`LIMIT`] has passed (the thread is left behind; the test has failed anyway).
pub fn join_within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("gave up after {LIMIT:?} waiting for {what}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the waiting thread panicked"),
    }
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` once [`LIMIT`] has passed.
pub fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "gave up after {LIMIT:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`until`] for async tests.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "gave up after {LIMIT:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The request's next event (`None` after its last), for code outside an async runtime.
pub fn next_event(stream: &mut RequestStream) -> Option<Event> {
    block_within(
        &format!("the next event of request {}", stream.id),
        stream.recv(),
    )
}

/// Shuts the engine down and waits for its threads to end.
pub fn stop_engine(engine: Engine) {
    engine.handle().shutdown();
    join_within("the engine threads to stop", move || engine.join())
        .expect("the engine threads ended cleanly");
}

/// Whether the engine holds nothing: no request running, waiting or in flight, no KV block used.
pub fn engine_idle(h: &EngineHandle) -> bool {
    let s = h.stats();
    s.running == 0 && s.waiting == 0 && s.kv_usage == 0.0 && h.in_flight() == 0
}

/// Waits until [`engine_idle`]: after every request has finished, a request left running or a
/// KV block never freed fails here, with the engine's numbers.
pub fn until_engine_idle(h: &EngineHandle) {
    let deadline = Instant::now() + LIMIT;
    while !engine_idle(h) {
        assert!(
            Instant::now() < deadline,
            "the engine never went idle: {:?}, {} in flight",
            h.stats(),
            h.in_flight()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `Command::output` with the wait bounded: `cmd.output_within()`.
pub trait OutputWithin {
    fn output_within(&mut self) -> Output;
}

impl OutputWithin for Command {
    fn output_within(&mut self) -> Output {
        output_within(self)
    }
}

/// Runs `cmd` to completion with its output captured, as `Command::output` does; kills it and
/// panics with what it printed so far once [`LIMIT`] has passed.
pub fn output_within(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    // Both pipes drained on threads of their own, so a child that fills one never blocks.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "gave up after {LIMIT:?} waiting for {cmd:?}; its stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
