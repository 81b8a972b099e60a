//! Server-sent events as OpenAI streams them (`data: {json}\n\n` … `data: [DONE]\n\n`), and the
//! response body types: a whole buffer, or a channel a producer task feeds.
//!
//! The channel body is what makes disconnects cheap to notice: when hyper drops the body (the
//! client went away), the producer's `Sender::closed()` resolves and it stops the request.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde::Serialize;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Every response body the server sends.
pub type Body = BoxBody<Bytes, Infallible>;

/// The stream terminator.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// One `data:` event carrying `value` as JSON (JSON has no raw newlines, so one line suffices).
pub fn event<T: Serialize>(value: &T) -> Bytes {
    let mut buf = b"data: ".to_vec();
    if serde_json::to_writer(&mut buf, value).is_err() {
        // Our own response types always serialize; never send a broken frame regardless.
        buf.truncate(6);
        buf.extend_from_slice(br#"{"error":{"message":"serialization failed","type":"internal_error","param":null,"code":null}}"#);
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// An event whose JSON is already text (the error envelope).
pub fn raw_event(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body fed by `rx`; it ends when every sender is gone.
pub fn channel(rx: mpsc::Receiver<Bytes>) -> Body {
    ChannelBody { rx }.boxed()
}

struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_framed() {
        assert_eq!(
            &event(&json!({"a": "x\ny"}))[..],
            b"data: {\"a\":\"x\\ny\"}\n\n"
        );
        assert_eq!(&raw_event("{}")[..], b"data: {}\n\n");
    }

    #[tokio::test]
    async fn a_channel_body_yields_what_was_sent_then_ends() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        tx.send(Bytes::from_static(DONE)).await.unwrap();
        drop(tx);
        let all = channel(rx).collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"adata: [DONE]\n\n");
    }

    #[tokio::test]
    async fn dropping_the_body_tells_the_producer() {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        let body = channel(rx);
        drop(body);
        tokio::time::timeout(std::time::Duration::from_secs(1), tx.closed())
            .await
            .unwrap();
    }
}
