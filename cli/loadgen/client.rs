//! One streaming completion request over hyper's client, timed chunk by chunk.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::Value;
use std::time::Instant;

use super::report::Outcome;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn new_client() -> HttpClient {
    Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends `body` to `uri` and reads the SSE stream to `[DONE]`.
pub async fn run_one(client: &HttpClient, uri: &Uri, body: &Value) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome::default();
    if let Err(e) = stream(client, uri, body, start, &mut out).await {
        out.ok = false;
        out.error = e;
    }
    out.e2e = start.elapsed();
    out
}

async fn stream(
    client: &HttpClient,
    uri: &Uri,
    body: &Value,
    start: Instant,
    out: &mut Outcome,
) -> Result<(), String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&text)));
    }
    let mut buf = Vec::new();
    let mut last: Option<Instant> = None;
    let mut chunks = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the stream failed: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(end) = find(&buf, b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let Some(payload) = text.trim().strip_prefix("data: ") else {
                continue;
            };
            if payload == "[DONE]" {
                out.ok = true;
                if out.output_tokens == 0 {
                    out.output_tokens = chunks;
                }
                return Ok(());
            }
            let v: Value = serde_json::from_str(payload).map_err(|e| format!("bad chunk: {e}"))?;
            if let Some(err) = v.get("error") {
                return Err(format!("error in stream: {err}"));
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
                out.prompt_tokens = n("prompt_tokens");
                out.output_tokens = n("completion_tokens");
            }
            let has_text = v["choices"]
                .as_array()
                .and_then(|c| c.first())
                .and_then(|c| c["text"].as_str())
                .is_some_and(|t| !t.is_empty());
            if has_text {
                let now = Instant::now();
                match last {
                    None => out.ttft = now - start,
                    Some(prev) => out.itl.push(now - prev),
                }
                last = Some(now);
                chunks += 1;
            }
        }
    }
    Err("the stream ended without [DONE]".into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
