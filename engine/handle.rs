//! The engine's face: submit a request and get its event stream, abort, read stats.
//! Cheap to clone and safe to share between threads and async tasks.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::admission::{self, Rejection};
use crate::engine::request::{Event, FinishReason, Request, RequestId, RequestMetrics, Usage};

/// What the engine can tell about the model it serves.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The id clients name the model by.
    pub name: String,
    /// Prompt plus generated tokens may not exceed this.
    pub max_context: usize,
    pub vocab_size: usize,
    pub eos_ids: Vec<u32>,
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub running: usize,
    pub waiting: usize,
    /// Fraction of KV blocks in use, 0..=1.
    pub kv_usage: f32,
    pub preemptions: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    /// Prompt tokens looked up in / served from the prefix cache.
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub steps: u64,
    pub finished_stop: u64,
    pub finished_length: u64,
    pub finished_abort: u64,
    pub finished_error: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the request queue is full ({0} waiting)")]
    QueueFull(usize),
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("the engine has stopped: {0}")]
    EngineDead(String),
    #[error("{0}")]
    Invalid(String),
}

/// Everything the engine thread reacts to arrives on one channel.
pub(crate) enum Command {
    Submit {
        id: RequestId,
        request: Request,
        events: UnboundedSender<Event>,
    },
    Abort(RequestId),
    Shutdown,
    /// The executor finished a step.
    StepDone(Box<super::step_output::StepOutput>),
    /// The executor thread panicked and is gone.
    ExecutorDied(String),
}

/// State shared between handles and the engine thread.
pub(crate) struct Shared {
    pub commands: Mutex<mpsc::Sender<Command>>,
    pub next_id: AtomicU64,
    /// Submitted requests not yet admitted to the running set (at most `max_queue`).
    pub waiting: AtomicUsize,
    /// Submitted requests not yet finished.
    pub unfinished: AtomicUsize,
    pub max_queue: usize,
    pub draining: AtomicBool,
    /// Set with the reason when the engine thread ends abnormally.
    pub dead: Mutex<Option<String>>,
    pub stats: Mutex<EngineStats>,
    pub model: ModelInfo,
    pub timeline: super::timeline::Timeline,
}

#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) shared: Arc<Shared>,
}

/// A request's events, in order; the last is [`Event::Finished`]. Dropping it aborts the request.
pub struct RequestStream {
    pub id: RequestId,
    events: UnboundedReceiver<Event>,
    finished: bool,
    handle: EngineHandle,
}

impl RequestStream {
    /// The next event; `None` after the last. A stream always ends with [`Event::Finished`]:
    /// if the engine stopped without finishing the request (its thread died), the last event is
    /// a `Finished` with [`FinishReason::Error`] saying so.
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = self.events.recv().await;
        self.note(ev)
    }

    /// [`recv`](Self::recv) for threads outside an async runtime.
    pub fn blocking_recv(&mut self) -> Option<Event> {
        let ev = self.events.blocking_recv();
        self.note(ev)
    }

    fn note(&mut self, ev: Option<Event>) -> Option<Event> {
        match ev {
            None if !self.finished => {
                self.finished = true;
                let why = self
                    .handle
                    .death_reason()
                    .unwrap_or_else(|| "the engine thread is gone".into());
                Some(Event::Finished {
                    reason: FinishReason::Error(format!(
                        "the engine stopped before the request finished: {why}"
                    )),
                    usage: Usage::default(),
                    metrics: RequestMetrics::default(),
                })
            }
            Some(Event::Finished { .. }) | None => {
                self.finished = true;
                ev
            }
            ev => ev,
        }
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.finished {
            self.handle.abort(self.id);
        }
    }
}

impl EngineHandle {
    /// Queues `request`; its events arrive on the returned stream.
    pub fn submit(&self, request: Request) -> Result<RequestStream, SubmitError> {
        let s = &self.shared;
        if let Some(reason) = s
            .dead
            .lock()
            .map_err(|_| SubmitError::EngineDead("poisoned".into()))?
            .clone()
        {
            return Err(SubmitError::EngineDead(reason));
        }
        if s.draining.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if request.prompt_ids.is_empty() {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        admission::check_context(
            request.prompt_ids.len(),
            request.params.max_tokens,
            s.model.max_context,
        )
        .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        if let Some(&bad) = request
            .prompt_ids
            .iter()
            .find(|&&t| t as usize >= s.model.vocab_size)
        {
            return Err(SubmitError::Invalid(format!(
                "token id {bad} is outside the vocabulary"
            )));
        }
        let waiting = s.waiting.fetch_add(1, Ordering::SeqCst);
        if let Err(Rejection::QueueFull { waiting }) = admission::check_queue(waiting, s.max_queue)
        {
            s.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull(waiting));
        }
        s.unfinished.fetch_add(1, Ordering::SeqCst);
        let id = s.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = unbounded_channel();
        let sent = s
            .commands
            .lock()
            .map(|c| {
                c.send(Command::Submit {
                    id,
                    request,
                    events: tx,
                })
                .is_ok()
            })
            .unwrap_or(false);
        if !sent {
            s.waiting.fetch_sub(1, Ordering::SeqCst);
            s.unfinished.fetch_sub(1, Ordering::SeqCst);
            let why = self
                .death_reason()
                .unwrap_or_else(|| "the engine thread is gone".into());
            return Err(SubmitError::EngineDead(why));
        }
        Ok(RequestStream {
            id,
            events: rx,
            finished: false,
            handle: self.clone(),
        })
    }

    /// Stops request `id`; its blocks are freed within a step. Unknown ids are ignored.
    pub fn abort(&self, id: RequestId) {
        if let Ok(c) = self.shared.commands.lock() {
            let _ = c.send(Command::Abort(id));
        }
    }

    pub fn stats(&self) -> EngineStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Step timings, recorded from `timeline().start()` until `timeline().take()`.
    pub fn timeline(&self) -> &super::timeline::Timeline {
        &self.shared.timeline
    }

    pub fn model(&self) -> &ModelInfo {
        &self.shared.model
    }

    /// Why the engine thread died, once it has.
    pub fn death_reason(&self) -> Option<String> {
        match self.shared.dead.lock() {
            Ok(d) => d.clone(),
            Err(_) => Some("poisoned".into()),
        }
    }

    /// False once the engine thread has died.
    pub fn is_alive(&self) -> bool {
        self.shared
            .dead
            .lock()
            .map(|d| d.is_none())
            .unwrap_or(false)
    }

    /// Refuse new requests from now on; running ones continue.
    pub fn start_draining(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Requests submitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.shared.unfinished.load(Ordering::SeqCst)
    }

    /// Asks the engine thread to stop after aborting everything.
    pub fn shutdown(&self) {
        self.start_draining();
        if let Ok(c) = self.shared.commands.lock() {
            let _ = c.send(Command::Shutdown);
        }
    }
}
