//! `tandem serve`: load a model, start the engine, serve the OpenAI API until SIGTERM/SIGINT.

use anyhow::{Context, Result};
use clap::Args;
use std::time::Duration;

use crate::cli::engine_args::EngineArgs;
use crate::model::chat_template::ChatTemplate;

use crate::server::http::serve;
use crate::server::state::ServerConfig;
use crate::server::tools::support::{OutputParsers, ReasoningParser};
use crate::server::tools::syntax::ToolSyntax;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Larger request bodies get 413.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Seconds SIGTERM/SIGINT waits for in-flight requests before aborting them.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Seconds a client has to send its request headers (and an idle connection stays open).
    #[arg(long, default_value_t = 10.0)]
    pub header_read_timeout: f64,
    /// Seconds a client has to send its request body.
    #[arg(long, default_value_t = 30.0)]
    pub body_read_timeout: f64,
    /// Seconds a client may read nothing of its response before the connection is closed.
    #[arg(long, default_value_t = 30.0)]
    pub write_timeout: f64,
    /// Kernel send buffer per connection in bytes (default: the kernel's autotuning).
    #[arg(long)]
    pub send_buffer_bytes: Option<usize>,
    /// How the model writes tool calls (default: picked from the chat template and vocabulary).
    #[arg(long, value_enum)]
    pub tool_call_parser: Option<ToolSyntax>,
    /// Split `<think>` reasoning into `reasoning_content` (auto: when `<think>` is a token).
    #[arg(long, value_enum, default_value_t = ReasoningParser::Auto)]
    pub reasoning_parser: ReasoningParser,
    /// A Jinja chat template file to render chat requests with instead of the model's own.
    #[arg(long)]
    pub chat_template: Option<std::path::PathBuf>,
}

impl ServeArgs {
    fn server_config(&self) -> Result<ServerConfig> {
        let secs = |v: f64, flag: &str| {
            Duration::try_from_secs_f64(v)
                .with_context(|| format!("--{flag} must be a non-negative number of seconds"))
        };
        anyhow::ensure!(self.max_body_bytes > 0, "--max-body-bytes must be positive");
        let chat_template = match &self.chat_template {
            Some(path) => {
                let src = std::fs::read_to_string(path)
                    .with_context(|| format!("--chat-template: cannot read {}", path.display()))?;
                // Refused at startup rather than on every chat request.
                ChatTemplate::new(&src, "", "")
                    .with_context(|| format!("--chat-template {}", path.display()))?;
                Some(src)
            }
            None => None,
        };
        Ok(ServerConfig {
            max_body_bytes: self.max_body_bytes,
            shutdown_timeout: secs(self.shutdown_timeout, "shutdown-timeout")?,
            header_read_timeout: secs(self.header_read_timeout, "header-read-timeout")?,
            body_read_timeout: secs(self.body_read_timeout, "body-read-timeout")?,
            write_timeout: secs(self.write_timeout, "write-timeout")?,
            send_buffer_bytes: self.send_buffer_bytes,
            output_parsers: OutputParsers {
                tool_call: self.tool_call_parser,
                reasoning: self.reasoning_parser,
            },
            chat_template,
        })
    }
}

pub fn run_serve(args: ServeArgs) -> Result<()> {
    let server_cfg = args.server_config()?;
    let (engine, tokenizer) = args.engine.launch()?;
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
        let name = &handle.model().name;
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
