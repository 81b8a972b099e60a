//! `tandem serve`: load a model, start the engine, serve the OpenAI API until SIGTERM/SIGINT.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::model::default_model::ensure_default_model;
use crate::model::llama::StepLimits;
use crate::model::loader::ModelSource;
use crate::runtime::cpu::CpuBackend;
use crate::runtime::engine::{self, EngineConfig};

use super::http::serve;
use super::state::ServerConfig;

/// The name the default model is served under when `--model` is absent.
const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// An HF model directory or a .gguf file; the default model (SmolLM2-135M-Instruct) if absent.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The model id clients send as `model`; defaults to `--model` as given (as vLLM does).
    #[arg(long)]
    pub served_model_name: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Most requests running at once [default: the engine's].
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Most tokens in one forward step; longer prompts are prefilled in chunks [default: the engine's].
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    /// Tokens per KV-cache block [default: the engine's].
    #[arg(long)]
    pub block_size: Option<usize>,
    /// KV-cache blocks (capacity = blocks × block size tokens) [default: the engine's].
    #[arg(long)]
    pub num_kv_blocks: Option<usize>,
    /// Scheduling policy: fcfs, prefill-first, decode-first, shortest-prompt-first, priority.
    #[arg(long)]
    pub policy: Option<String>,
    /// Plan each step only after the previous one finished (no CPU/GPU overlap).
    #[arg(long)]
    pub no_overlap: bool,
    /// Turn off automatic prefix caching.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Most requests waiting for admission; beyond it requests get 429 [default: the engine's].
    #[arg(long)]
    pub max_queue: Option<usize>,
    /// Larger request bodies get 413.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Seconds SIGTERM/SIGINT waits for in-flight requests before aborting them.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Seconds a client has to send its request headers.
    #[arg(long, default_value_t = 10.0)]
    pub header_read_timeout: f64,
}

impl ServeArgs {
    fn engine_config(&self) -> EngineConfig {
        let d = EngineConfig::default();
        EngineConfig {
            max_num_seqs: self.max_num_seqs.unwrap_or(d.max_num_seqs),
            max_batch_tokens: self.max_batch_tokens.unwrap_or(d.max_batch_tokens),
            block_size: self.block_size.unwrap_or(d.block_size),
            num_blocks: self.num_kv_blocks.unwrap_or(d.num_blocks),
            policy: self.policy.clone().unwrap_or(d.policy),
            overlap: !self.no_overlap,
            max_queue: self.max_queue.unwrap_or(d.max_queue),
            enable_prefix_caching: !self.no_prefix_caching,
        }
    }

    fn server_config(&self) -> Result<ServerConfig> {
        let secs = |v: f64, flag: &str| {
            Duration::try_from_secs_f64(v)
                .with_context(|| format!("--{flag} must be a non-negative number of seconds"))
        };
        anyhow::ensure!(self.max_body_bytes > 0, "--max-body-bytes must be positive");
        Ok(ServerConfig {
            max_body_bytes: self.max_body_bytes,
            shutdown_timeout: secs(self.shutdown_timeout, "shutdown-timeout")?,
            header_read_timeout: secs(self.header_read_timeout, "header-read-timeout")?,
        })
    }
}

pub fn run_serve(args: ServeArgs) -> Result<()> {
    if args.device == Device::Cuda {
        anyhow::bail!(if cfg!(feature = "cuda") {
            "`serve --device cuda` is not supported yet; use --device cpu"
        } else {
            "this tandem was built without CUDA support (rebuild with `--features cuda`)"
        });
    }
    let server_cfg = args.server_config()?;
    let cfg = args.engine_config();
    let (path, default_name) = match &args.model {
        Some(p) => (p.clone(), p.display().to_string()),
        None => (ensure_default_model()?, DEFAULT_MODEL_NAME.to_string()),
    };
    let name = args.served_model_name.clone().unwrap_or(default_name);
    let source = ModelSource::open(&path)?;
    tracing::info!(path = %source.path.display(), arch = ?source.config.arch, "loading model");
    let limits = StepLimits {
        max_tokens: cfg.max_batch_tokens,
        max_seqs: cfg.max_num_seqs,
    };
    let (model, tokenizer) = source.into_model(CpuBackend::new(), limits)?;
    let tokenizer = Arc::new(tokenizer);
    let engine = engine::start(model, tokenizer.clone(), name.clone(), cfg)?;
    let handle = engine.handle();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tandem-http")
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        tracing::info!("serving {name} at http://{addr}/v1 (Ctrl-C to stop)");
        serve(
            listener,
            handle.clone(),
            tokenizer,
            server_cfg,
            shutdown_signal(),
        )
        .await
    });
    handle.shutdown();
    // Tasks still streaming see their requests aborted; don't wait on them past a moment.
    runtime.shutdown_timeout(Duration::from_secs(1));
    engine.join()?;
    served
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}
