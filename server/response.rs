//! Building responses: JSON bodies and error envelopes with their headers.

use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::error::ApiError;
use super::sse::{full, Body};

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_type(status, "application/json", bytes),
        Err(e) => error(&ApiError::internal(format!(
            "serializing the response failed: {e}"
        ))),
    }
}

pub fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn error(e: &ApiError) -> Response<Body> {
    let mut resp = with_type(e.status, "application/json", e.to_json());
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if e.status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was never read: the connection cannot be reused.
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
