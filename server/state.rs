//! What every request handler shares: the engine handle, the tokenizer and chat template, the
//! metrics, the configuration, and the drain state used for graceful shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::model::tokenizer::Tokenizer;
use crate::runtime::engine::handle::EngineHandle;

use super::chat_template::ChatTemplate;
use super::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Larger request bodies get 413 (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// How long a SIGTERM/SIGINT waits for in-flight requests (`--shutdown-timeout`).
    pub shutdown_timeout: Duration,
    /// A client must send its request headers within this (slowloris protection).
    pub header_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 4 << 20,
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

pub struct AppState {
    pub handle: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    /// The compiled chat template, or why there is none.
    pub template: Result<ChatTemplate, String>,
    pub metrics: Metrics,
    pub cfg: ServerConfig,
    draining: AtomicBool,
    /// Generation requests between arrival and their response's last byte.
    active: AtomicUsize,
}

impl AppState {
    pub fn new(handle: EngineHandle, tokenizer: Arc<Tokenizer>, cfg: ServerConfig) -> Self {
        let template = load_template(&tokenizer);
        if let Err(why) = &template {
            tracing::warn!("/v1/chat/completions is unavailable: {why}");
        }
        AppState {
            metrics: Metrics::new(handle.clone()),
            handle,
            tokenizer,
            template,
            cfg,
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        }
    }

    pub fn model_name(&self) -> &str {
        &self.handle.model().name
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True while shutting down; also when the engine itself is draining or dead.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst) || self.handle.is_draining()
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Counts a generation request as in flight until the guard drops. `None` when draining:
    /// counting first and checking second means the drain either sees the request or the
    /// request sees the drain.
    pub fn enter(self: &Arc<Self>) -> Option<ActiveGuard> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(self.clone());
        (!self.is_draining()).then_some(guard)
    }
}

pub struct ActiveGuard(Arc<AppState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn load_template(tok: &Tokenizer) -> Result<ChatTemplate, String> {
    let src = tok
        .chat_template
        .as_deref()
        .ok_or("the model has no chat template; use /v1/completions")?;
    let text = |id: Option<u32>| {
        id.and_then(|i| tok.inner().id_to_token(i))
            .unwrap_or_default()
    };
    ChatTemplate::new(src, &text(tok.bos_id), &text(tok.eos_ids.first().copied()))
        .map_err(|e| e.to_string())
}
