//! `tandem serve` as a process: it logs its URL when ready, and on SIGTERM it refuses new work
//! (503), lets the in-flight request finish, and exits 0.

#[path = "common/wait.rs"]
mod wait;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wait::LIMIT;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `request` and reads the reply until the server closes the connection.
fn exchange(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn get(addr: &str, path: &str) -> String {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/tiny-llama");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "serve",
            "--model",
            model,
            "--port",
            "0",
            "--shutdown-timeout",
            "20",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tandem serve");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);

    // The URL it logs when ready (port 0: the OS picked one). Its log is read on a thread of its
    // own, to the end (so it never blocks on a full pipe), and the URL waited for with a limit.
    let (ready, url) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("http://").nth(1) {
                let _ = ready.send(rest.split('/').next().unwrap().to_string());
            }
        }
    });
    let addr = url
        .recv_timeout(LIMIT)
        .expect("tandem serve exited, or did not say it was ready within the limit");
    assert!(get(&addr, "/health").starts_with("HTTP/1.1 200"));

    // An in-flight request: headers and half the body sent.
    let body = r#"{"prompt": "Hello", "max_tokens": 16, "ignore_eos": true}"#;
    let (a, b) = body.split_at(body.len() / 2);
    let mut slow = TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{a}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + LIMIT;
    while !get(&addr, "/health").starts_with("HTTP/1.1 503") {
        assert!(Instant::now() < deadline, "/health never said 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = exchange(
        &addr,
        &format!(
            "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");

    slow.write_all(b.as_bytes()).unwrap();
    slow.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"completion_tokens\":16"), "{reply}");

    let mut server = server;
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tandem serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}
