//! The accept loop: HTTP/1.1 on hyper over tokio, one task per connection, and graceful shutdown.
//!
//! Shutdown has three phases. Serving, until `shutdown` resolves. Draining: the listener keeps
//! accepting, but `/health` and new generation requests answer 503 (so load balancers move away
//! and clients get an answer rather than a refused connection), while requests already in flight
//! finish — for at most `shutdown_timeout`. Closing: idle keep-alive connections are closed and
//! `serve` returns; the caller then shuts the engine down, which aborts anything left.

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

use crate::engine::handle::EngineHandle;
use crate::model::tokenizer::Tokenizer;

use super::error::ApiError;
use super::io::WriteTimeout;
use super::panic::catch_unwind;
use super::response;
use super::routes::route;
use super::state::{AppState, ServerConfig};

/// How often the drain phase checks whether in-flight requests are done.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How long closing waits for connections once nothing is in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves the OpenAI API on `listener` until `shutdown` resolves and in-flight requests have
/// finished (or `cfg.shutdown_timeout` passed). Does not stop the engine.
pub async fn serve(
    listener: TcpListener,
    handle: EngineHandle,
    tokenizer: Arc<Tokenizer>,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = Arc::new(AppState::new(handle, tokenizer, cfg));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            conn = listener.accept() => accepted(conn, &state, &graceful).await,
        }
    }

    tracing::info!(
        in_flight = state.active(),
        "draining: refusing new requests"
    );
    state.start_draining();
    let deadline = Instant::now() + state.cfg.shutdown_timeout;
    while state.active() > 0 && Instant::now() < deadline {
        tokio::select! {
            _ = tokio::time::sleep(DRAIN_POLL) => {}
            conn = listener.accept() => accepted(conn, &state, &graceful).await,
        }
    }
    if state.active() > 0 {
        tracing::warn!(
            left = state.active(),
            "shutdown timeout reached; aborting what is left"
        );
    }
    drop(listener);
    if tokio::time::timeout(CLOSE_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("some connections did not close in time");
    }
    Ok(())
}

async fn accepted(
    conn: std::io::Result<(TcpStream, std::net::SocketAddr)>,
    state: &Arc<AppState>,
    graceful: &GracefulShutdown,
) {
    match conn {
        Ok((stream, _)) => spawn_connection(stream, state.clone(), graceful),
        Err(e) => {
            // Typically EMFILE: back off instead of spinning on the error.
            tracing::warn!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Read buffer and queued-write limit of one connection (hyper's default is ~400 KiB).
const MAX_BUF_BYTES: usize = 64 << 10;
/// Request heads larger than this get 431; so do more than 100 header fields (hyper's default,
/// kept: setting it moves every request's headers to the heap).
const MAX_HEADER_BYTES: usize = 32 << 10;

fn spawn_connection(stream: TcpStream, state: Arc<AppState>, graceful: &GracefulShutdown) {
    let _ = stream.set_nodelay(true);
    if let Some(bytes) = state.cfg.send_buffer_bytes {
        if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(bytes) {
            tracing::debug!("setting the send buffer failed: {e}");
        }
    }
    let timeout = state.cfg.header_read_timeout;
    let stream = WriteTimeout::new(stream, state.cfg.write_timeout);
    let service = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let resp = catch_unwind(route(req, state)).await.unwrap_or_else(|| {
                response::error(&ApiError::internal("the request handler failed"))
            });
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_BUF_BYTES)
        .max_header_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("connection ended: {e}");
        }
    });
}
