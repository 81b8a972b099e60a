//! What every request handler shares: the engine handle, the tokenizer and chat template, the
//! metrics, the configuration, and the drain state used for graceful shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::device::sampling::grammar::{GrammarCompiler, GrammarStats};
use crate::engine::handle::EngineHandle;
use crate::model::token_env::token_env;
use crate::model::tokenizer::Tokenizer;
use std::sync::OnceLock;

use super::metrics::Metrics;
use super::tools::support::{ModelOutputSupport, OutputParsers};
use crate::model::chat_template::ChatTemplate;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Larger request bodies get 413 (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// How long a SIGTERM/SIGINT waits for in-flight requests (`--shutdown-timeout`).
    pub shutdown_timeout: Duration,
    /// A client must send its request headers within this (slowloris protection); also how
    /// long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// A client must send its whole request body within this (408 otherwise).
    pub body_read_timeout: Duration,
    /// A connection whose client reads nothing of its response for this long is closed.
    pub write_timeout: Duration,
    /// The kernel send buffer of each connection (`SO_SNDBUF`); `None` leaves it to the kernel's
    /// autotuning (up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default).
    pub send_buffer_bytes: Option<usize>,
    /// `--tool-call-parser` and `--reasoning-parser`.
    pub output_parsers: OutputParsers,
    /// `--chat-template`: a Jinja template used instead of the model's own.
    pub chat_template: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 4 << 20,
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            send_buffer_bytes: None,
            output_parsers: OutputParsers::default(),
            chat_template: None,
        }
    }
}

pub struct AppState {
    pub handle: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    /// The compiled chat template, or why there is none.
    pub template: Result<ChatTemplate, String>,
    /// The model's tool-call syntax and reasoning parser.
    pub output_support: ModelOutputSupport,
    pub metrics: Metrics,
    pub cfg: ServerConfig,
    /// Prompt text (or message contents) longer than this cannot fit the model's context, so it
    /// is refused without tokenizing (see [`max_text_bytes`]).
    pub max_text_bytes: usize,
    /// Structured-output counters (`/metrics`), shared with the compiler.
    pub grammar_stats: Arc<GrammarStats>,
    /// Built on the first constrained request: the token trie costs a pass over the vocabulary.
    grammars: OnceLock<Result<GrammarCompiler, String>>,
    draining: AtomicBool,
    /// Generation requests between arrival and their response's last byte.
    active: AtomicUsize,
}

impl AppState {
    pub fn new(handle: EngineHandle, tokenizer: Arc<Tokenizer>, cfg: ServerConfig) -> Self {
        let template = load_template(&tokenizer, cfg.chat_template.as_deref());
        if let Err(why) = &template {
            tracing::warn!("/v1/chat/completions is unavailable: {why}");
        }
        let max_text_bytes = max_text_bytes(&tokenizer, handle.model().max_context);
        let output_support =
            ModelOutputSupport::detect(cfg.output_parsers, &tokenizer, template.as_ref().ok());
        let grammar_stats = Arc::new(GrammarStats::default());
        AppState {
            output_support,
            max_text_bytes,
            metrics: Metrics::new(handle.clone(), grammar_stats.clone()),
            grammar_stats,
            grammars: OnceLock::new(),
            handle,
            tokenizer,
            template,
            cfg,
            draining: AtomicBool::new(false),
            active: AtomicUsize::new(0),
        }
    }

    /// The grammar compiler for this model's tokenizer, or why there cannot be one.
    pub fn grammars(&self) -> Result<&GrammarCompiler, &str> {
        self.grammars
            .get_or_init(|| {
                token_env(self.tokenizer.clone(), self.handle.model().vocab_size)
                    .and_then(|env| GrammarCompiler::new(env, self.grammar_stats.clone()))
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(String::as_str)
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

/// An upper bound on the text that fits in `max_context` tokens: every token stands for at most
/// its vocabulary spelling's length in input bytes (byte-level BPE spells each byte as one
/// character of at most 2 bytes, SentencePiece a space as the 3-byte `▁`, byte fallback one byte as
/// `<0xNN>`), times 4 for normalizers that drop characters.
fn max_text_bytes(tok: &Tokenizer, max_context: usize) -> usize {
    let longest = tok
        .inner()
        .get_vocab(true)
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(1)
        .max(1);
    max_context.saturating_mul(longest).saturating_mul(4)
}

fn load_template(tok: &Tokenizer, chosen: Option<&str>) -> Result<ChatTemplate, String> {
    let src = chosen.or(tok.chat_template.as_deref()).ok_or(
        "the model has no chat template; use /v1/completions or start the server with \
         --chat-template",
    )?;
    let text = |id: Option<u32>| {
        id.and_then(|i| tok.inner().id_to_token(i))
            .unwrap_or_default()
    };
    ChatTemplate::new(src, &text(tok.bos_id), &text(tok.eos_ids.first().copied()))
        .map_err(|e| e.to_string())
}
