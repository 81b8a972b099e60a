//! The asynchronous continuous-batching engine.
//!
//! Two threads. The engine thread owns the scheduler: it takes submissions and aborts, plans
//! steps, and turns samples into events. The executor thread owns the model and the KV cache and
//! runs steps in order. With overlap on, the engine plans step N+1 while step N runs — step N's
//! samples enter step N+1 as placeholders the executor fills in — so the model never waits for
//! planning; with `overlap: false` it plans only after each step returns (same outputs, slower).
//!
//! ```text
//!  handles ──Submit/Abort──▶ engine thread ──Batch (≤ 2 in flight)──▶ executor thread
//!     ▲                        │  scheduler, outputs                    │ model, KV cache, samplers
//!     └──── Event streams ◀────┘ ◀────────────StepDone──────────────────┘
//! ```

pub mod admission;
mod core;
pub mod executor;
#[doc(hidden)]
pub mod fault;
pub mod handle;
pub mod hooks;
pub mod kv;
pub mod kv_sizing;
mod launch_queue;
mod output;
pub mod request;
pub mod scheduler;
mod step_output;
pub mod timeline;

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

#[doc(hidden)]
pub use fault::FaultPlan;
pub use handle::{EngineHandle, EngineStats, ModelInfo, RequestStream, SubmitError};
pub use hooks::{EngineHooks, NoHooks};

use crate::device::backend::Backend;
use crate::device::panic::panic_message;
use crate::engine::scheduler::batch::Batch;
use crate::engine::scheduler::{aging, policy, Scheduler, SchedulerConfig};
use crate::model::tokenizer::Tokenizer;
use crate::runner::Runner;
use executor::Executor;
use handle::{Command, Shared};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most requests running at once.
    pub max_num_seqs: usize,
    /// Most tokens (decode tokens + prefill chunks) in one step.
    pub max_batch_tokens: usize,
    pub block_size: usize,
    /// KV-cache blocks.
    pub num_blocks: usize,
    /// Scheduling policy name (see `scheduler::policy::NAMES`).
    pub policy: String,
    /// Steps after which an unfinished request is served first (`scheduler::aging`); `None`
    /// turns aging off.
    pub max_wait_steps: Option<u64>,
    /// Plan step N+1 while step N runs.
    pub overlap: bool,
    /// Most requests waiting for admission before submissions are refused.
    pub max_queue: usize,
    pub enable_prefix_caching: bool,
    /// The TTFT SLO of requests that set none; the `deadline` policy orders admissions by the
    /// deadlines SLOs set. `None`: only requests that ask have one.
    pub ttft_slo: Option<std::time::Duration>,
    /// What the `deadline` policy does with a request that missed its TTFT deadline.
    pub slo_miss: policy::SloMiss,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_num_seqs: 64,
            max_batch_tokens: 512,
            block_size: 16,
            num_blocks: 1024,
            policy: "fcfs".into(),
            max_wait_steps: Some(aging::DEFAULT_MAX_WAIT_STEPS),
            overlap: true,
            max_queue: 1024,
            enable_prefix_caching: true,
            ttft_slo: None,
            slo_miss: policy::SloMiss::default(),
        }
    }
}

/// A running engine; dropping it does not stop it — call `handle().shutdown()` then `join()`.
pub struct Engine {
    handle: EngineHandle,
    engine_thread: JoinHandle<()>,
    executor_thread: JoinHandle<()>,
}

impl Engine {
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Waits for both threads to end (after [`EngineHandle::shutdown`]).
    pub fn join(self) -> Result<()> {
        let a = self.engine_thread.join();
        let b = self.executor_thread.join();
        anyhow::ensure!(a.is_ok() && b.is_ok(), "an engine thread panicked");
        Ok(())
    }
}

/// Starts the engine threads for `model`.
pub fn start<B: Backend>(
    model: Runner<B>,
    tokenizer: Arc<Tokenizer>,
    model_name: String,
    cfg: EngineConfig,
) -> Result<Engine> {
    start_with_hooks(model, tokenizer, model_name, cfg, Arc::new(NoHooks))
}

/// [`start`], with faults injected as `faults` says: for tests of failure handling only.
#[doc(hidden)]
pub fn start_with_faults<B: Backend>(
    model: Runner<B>,
    tokenizer: Arc<Tokenizer>,
    model_name: String,
    cfg: EngineConfig,
    faults: FaultPlan,
) -> Result<Engine> {
    let hooks = Arc::new(faults.into_hooks());
    start_with_hooks(model, tokenizer, model_name, cfg, hooks)
}

/// [`start`], calling `hooks` at the points [`EngineHooks`] names.
fn start_with_hooks<B: Backend>(
    model: Runner<B>,
    tokenizer: Arc<Tokenizer>,
    model_name: String,
    cfg: EngineConfig,
    hooks: Arc<dyn EngineHooks>,
) -> Result<Engine> {
    let policy = policy::by_name_with(
        &cfg.policy,
        policy::PolicyOptions {
            slo_miss: cfg.slo_miss,
        },
    )?;
    anyhow::ensure!(
        cfg.max_batch_tokens <= model.limits().max_tokens,
        "max_batch_tokens ({}) exceeds the model workspace ({} tokens)",
        cfg.max_batch_tokens,
        model.limits().max_tokens
    );
    anyhow::ensure!(
        cfg.max_num_seqs <= model.limits().max_seqs,
        "max_num_seqs ({}) exceeds the model workspace ({} sequences)",
        cfg.max_num_seqs,
        model.limits().max_seqs
    );
    let sched = Scheduler::new(
        SchedulerConfig {
            max_num_seqs: cfg.max_num_seqs,
            max_batch_tokens: cfg.max_batch_tokens,
            num_blocks: cfg.num_blocks,
            block_size: cfg.block_size,
            enable_prefix_caching: cfg.enable_prefix_caching,
            max_wait_steps: cfg.max_wait_steps,
        },
        policy,
    )?;
    let info = ModelInfo {
        name: model_name,
        max_context: model.cfg().max_position_embeddings,
        vocab_size: model.cfg().vocab_size,
        eos_ids: tokenizer.eos_ids.clone(),
    };
    let kv = model.new_kv_cache(cfg.num_blocks, cfg.block_size)?;
    let (commands, inbox) = mpsc::channel();
    let shared = Arc::new(Shared {
        commands: Mutex::new(commands.clone()),
        next_id: AtomicU64::new(0),
        waiting: AtomicUsize::new(0),
        unfinished: AtomicUsize::new(0),
        max_queue: cfg.max_queue,
        draining: AtomicBool::new(false),
        dead: Mutex::new(None),
        stats: Mutex::new(EngineStats::default()),
        model: info,
        timeline: timeline::Timeline::default(),
    });
    let depth = if cfg.overlap { 2 } else { 1 };
    let (to_executor, batches) = mpsc::sync_channel(depth);

    let mut executor = Executor::with_hooks(model, kv, hooks.clone());
    let done = commands;
    let executor_thread = std::thread::Builder::new()
        .name("tandem-executor".into())
        .spawn(move || executor_loop(&mut executor, &batches, &done))
        .context("starting the executor thread")?;

    let core = core::EngineCore::new(
        sched,
        tokenizer,
        shared.clone(),
        to_executor,
        depth,
        hooks,
        cfg.ttft_slo,
    );
    let engine_thread = std::thread::Builder::new()
        .name("tandem-engine".into())
        .spawn(move || {
            // A panic here is a bug; it must not leave handles thinking the engine is alive, nor
            // requests waiting forever. The core and the inbox outlive the unwinding, so the
            // engine is marked dead, with the panic's text, before any request hears of it and
            // before a new request finds the inbox closed.
            let mut core = core;
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| core.run(&inbox)));
            if let Err(p) = ran {
                core.fail_after_panic(&format!(
                    "the engine thread panicked: {}",
                    panic_message(&*p)
                ));
            }
        })
        .context("starting the engine thread")?;
    Ok(Engine {
        handle: EngineHandle { shared },
        engine_thread,
        executor_thread,
    })
}

/// The executor thread: takes planned steps in order and sends back finished ones. A step
/// launched on the device is collected only when the next one has been launched, or when no next
/// one comes before it is done, or when two are out; so the device has the next step queued while
/// the host waits for this one's tokens.
fn executor_loop<B: Backend>(
    executor: &mut Executor<B>,
    batches: &mpsc::Receiver<Batch>,
    done: &mpsc::Sender<Command>,
) {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    // How long to wait for the next step before looking at the device again.
    const POLL: std::time::Duration = std::time::Duration::from_micros(50);
    loop {
        let next = if !executor.has_pending() {
            match batches.recv() {
                Ok(b) => Some(b),
                Err(_) => return,
            }
        } else if executor.pending_full() {
            None
        } else {
            match batches.try_recv() {
                Ok(b) => Some(b),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) if executor.oldest_ready() => None,
                Err(TryRecvError::Empty) => match batches.recv_timeout(POLL) {
                    Ok(b) => Some(b),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            }
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match next {
            Some(batch) => executor.submit(batch),
            None => executor.collect_oldest().into_iter().collect(),
        }));
        match ran {
            Ok(outputs) => {
                for out in outputs {
                    if done.send(Command::StepDone(Box::new(out))).is_err() {
                        return;
                    }
                }
            }
            Err(p) => {
                // The model state may be half-written: stop here and let the engine fail over.
                let _ = done.send(Command::ExecutorDied(panic_message(&*p)));
                return;
            }
        }
    }
}
