//! Command-line engine settings shared by `serve` and `bench`, and starting an engine from them.

use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::model_args::{Device, ModelArgs};
use crate::engine::scheduler::aging::DEFAULT_MAX_WAIT_STEPS;
use crate::engine::scheduler::policy::SloMiss;
use crate::engine::{start, Engine, EngineConfig};
use crate::model::tokenizer::Tokenizer;
use crate::model::StepLimits;

/// KV-cache blocks on the CPU when --num-kv-blocks is not given.
const DEFAULT_CPU_KV_BLOCKS: usize = 1024;

#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Most requests running at once.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Most tokens (decode tokens + prefill chunks) in one step.
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// KV-cache blocks (capacity = blocks × block size tokens). Default: 1024 on the CPU; on
    /// CUDA, as many as --gpu-memory-utilization leaves room for.
    #[arg(long)]
    pub num_kv_blocks: Option<usize>,
    /// Share of the GPU's memory tandem may use in all (weights, workspaces, KV cache); the KV
    /// cache gets what the rest leaves after a warm-up pass. CUDA only.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Scheduling policy: fcfs, prefill-first, decode-first, shortest-prompt-first, priority,
    /// shortest-job-first (on max_tokens: the engine has no length predictor), vtc (fair shares
    /// between the requests' `user`s), deadline (earliest TTFT deadline first; see --ttft-slo-ms).
    #[arg(long, default_value = "fcfs")]
    pub policy: String,
    #[command(flatten)]
    pub aging: AgingArgs,
    #[command(flatten)]
    pub slo: SloArgs,
    /// Plan each step only after the previous one returns (for comparison and debugging).
    #[arg(long)]
    pub no_overlap: bool,
    /// Turn off reuse of cached prompt prefixes.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Most requests waiting for admission; more are refused.
    #[arg(long, default_value_t = 1024)]
    pub max_queue: usize,
}

/// The aging knob, shared by the engine's commands and `tandem sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgingArgs {
    /// Steps after its arrival at which an unfinished request is served ahead of all younger work
    /// (aging): no policy can starve a request past this plus the work that arrived before it.
    #[arg(long, default_value_t = DEFAULT_MAX_WAIT_STEPS)]
    pub max_wait_steps: u64,
    /// Turn aging off: the policy alone decides, and shortest-prompt-first and priority can
    /// starve a request for as long as shorter or more urgent ones keep arriving.
    #[arg(long, conflicts_with = "max_wait_steps")]
    pub no_aging: bool,
}

impl AgingArgs {
    pub fn max_wait_steps(&self) -> Option<u64> {
        (!self.no_aging).then_some(self.max_wait_steps)
    }
}

/// The TTFT SLO knobs, shared by the engine's commands and `tandem sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SloArgs {
    /// TTFT SLO, in milliseconds from arrival, of requests that set none (a request's own
    /// `ttft_slo_ms` overrides it). The deadline policy admits the earliest deadline first.
    #[arg(long, value_parser = parse_slo_ms)]
    pub ttft_slo_ms: Option<Duration>,
    /// What the deadline policy does with a request that missed its TTFT deadline before it was
    /// admitted: serve it after those that can still meet theirs (deprioritise), or give up on it
    /// (refuse: the server answers 503).
    #[arg(long, value_enum, default_value_t = SloMiss::Deprioritise)]
    pub slo_miss: SloMiss,
}

/// A TTFT SLO in milliseconds: a number >= 0.
pub fn parse_slo_ms(s: &str) -> Result<Duration, String> {
    let ms: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of milliseconds"))?;
    Duration::try_from_secs_f64(ms / 1e3)
        .map_err(|_| format!("'{s}' must be a finite number of milliseconds >= 0"))
}

impl EngineArgs {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_num_seqs: self.max_num_seqs,
            max_batch_tokens: self.max_batch_tokens,
            block_size: self.block_size,
            num_blocks: self.num_kv_blocks.unwrap_or(DEFAULT_CPU_KV_BLOCKS),
            policy: self.policy.clone(),
            max_wait_steps: self.aging.max_wait_steps(),
            overlap: !self.no_overlap,
            max_queue: self.max_queue,
            enable_prefix_caching: !self.no_prefix_caching,
            ttft_slo: self.slo.ttft_slo_ms,
            slo_miss: self.slo.slo_miss,
        }
    }

    /// Opens the device, then the model (fetching the default one if needed), and starts an
    /// engine on it.
    pub fn launch(&self) -> Result<(Engine, Arc<Tokenizer>)> {
        let device = self.model.open_device()?;
        let source = self.model.open_source()?;
        let name = model_name(&source.path);
        let limits = StepLimits {
            max_tokens: self.max_batch_tokens,
            max_seqs: self.max_num_seqs,
        };
        match device {
            Device::Cpu(backend) => {
                let (model, tokenizer) = crate::runner::load(source, backend, limits)?;
                let tokenizer = Arc::new(tokenizer);
                let engine = start(model, tokenizer.clone(), name, self.engine_config())?;
                Ok((engine, tokenizer))
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(backend) => {
                let (mut model, tokenizer) = crate::runner::load(source, backend, limits)?;
                let mut config = self.engine_config();
                if self.num_kv_blocks.is_none() {
                    config.num_blocks = crate::engine::kv_sizing::blocks_from_free_memory(
                        &mut model,
                        self.block_size,
                        self.gpu_memory_utilization,
                    )?;
                }
                let tokenizer = Arc::new(tokenizer);
                let engine = start(model, tokenizer.clone(), name, config)?;
                Ok((engine, tokenizer))
            }
        }
    }
}

/// The name clients use for the model: the directory or file name without `.gguf`.
pub fn model_name(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    name.strip_suffix(".gguf")
        .map(str::to_string)
        .unwrap_or(name)
}
