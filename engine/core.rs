//! The engine thread: commands in, steps planned and sent, samples turned into events.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admission;
use super::handle::{Command, EngineStats, Shared};
use super::hooks::EngineHooks;
use super::output::RequestOutput;
use super::step_output::StepOutput;
use crate::engine::request::{Event, FinishReason, Request, RequestId, RequestMetrics, Usage};
use crate::engine::scheduler::batch::Batch;
use crate::engine::scheduler::sequence::SeqState;
use crate::engine::scheduler::Scheduler;
use crate::model::tokenizer::Tokenizer;

pub struct EngineCore {
    sched: Scheduler,
    tokenizer: Arc<Tokenizer>,
    shared: Arc<Shared>,
    to_executor: SyncSender<Batch>,
    outputs: HashMap<RequestId, RequestOutput>,
    /// Steps sent and not yet returned; at most `depth`.
    in_flight: usize,
    depth: usize,
    stats: EngineStats,
    /// First admissions already subtracted from the shared waiting count.
    admissions_seen: u64,
    shutting_down: bool,
    /// Test hooks ([`super::hooks::NoHooks`] in production).
    hooks: Arc<dyn EngineHooks>,
    /// The scheduler's clock counts from here.
    started: Instant,
    /// The TTFT SLO of requests that set none (`--ttft-slo-ms`).
    default_ttft_slo: Option<Duration>,
}

impl EngineCore {
    pub fn new(
        sched: Scheduler,
        tokenizer: Arc<Tokenizer>,
        shared: Arc<Shared>,
        to_executor: SyncSender<Batch>,
        depth: usize,
        hooks: Arc<dyn EngineHooks>,
        default_ttft_slo: Option<Duration>,
    ) -> Self {
        EngineCore {
            sched,
            tokenizer,
            shared,
            to_executor,
            outputs: HashMap::new(),
            in_flight: 0,
            depth,
            stats: EngineStats::default(),
            admissions_seen: 0,
            shutting_down: false,
            hooks,
            started: Instant::now(),
            default_ttft_slo,
        }
    }

    /// The loop: react to every message, keep up to `depth` steps in flight, sleep when idle.
    pub fn run(&mut self, inbox: &Receiver<Command>) {
        loop {
            while let Ok(cmd) = inbox.try_recv() {
                self.handle(cmd);
            }
            if self.shutting_down && self.in_flight == 0 {
                break;
            }
            if !self.shutting_down && self.in_flight < self.depth {
                self.sched.set_clock(self.started.elapsed());
                let planned = self.sched.schedule();
                self.finish_refused();
                if let Some(batch) = planned {
                    self.note_admissions();
                    if self.to_executor.send(batch).is_err() {
                        self.die("the executor thread is gone".into());
                        break;
                    }
                    self.in_flight += 1;
                    continue;
                }
                if self.in_flight == 0 {
                    if let Some(batch) = self.sched.drops_only() {
                        if self.to_executor.send(batch).is_err() {
                            self.die("the executor thread is gone".into());
                            break;
                        }
                        self.in_flight += 1;
                        continue;
                    }
                }
            }
            self.publish_stats();
            // Nothing to plan now: wait for a step to return or for a command.
            match inbox.recv() {
                Ok(cmd) => self.handle(cmd),
                Err(_) => break,
            }
        }
        self.publish_stats();
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                id,
                request,
                events,
            } => self.submit(id, request, events),
            Command::Abort(id) => self.finish(id, FinishReason::Abort),
            Command::Shutdown => {
                self.shutting_down = true;
                let ids: Vec<_> = self.outputs.keys().copied().collect();
                for id in ids {
                    self.finish(id, FinishReason::Abort);
                }
            }
            Command::StepDone(out) => self.step_done(*out),
            Command::ExecutorDied(why) => self.die(format!("the executor panicked: {why}")),
        }
    }

    fn submit(
        &mut self,
        id: RequestId,
        mut request: Request,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
    ) {
        self.hooks.on_submit(id, &request.prompt_ids);
        let fits = admission::check_cache(
            request.prompt_ids.len(),
            request.params.max_tokens,
            self.sched.allocator().block_size(),
            self.sched.allocator().num_blocks(),
        );
        let out = RequestOutput::new(
            id,
            events,
            request.params.clone(),
            &request.prompt_ids,
            &self.shared.model.eos_ids,
        );
        self.stats.prompt_tokens += request.prompt_ids.len() as u64;
        self.outputs.insert(id, out);
        request.ttft_slo = request.ttft_slo.or(self.default_ttft_slo);
        self.sched.set_clock(self.started.elapsed());
        self.sched.add(id, request, rand::random());
        // Refused after queueing, so the refusal reaches the request as its finish.
        if let Err(e) = fits {
            self.finish(id, FinishReason::Error(e.to_string()));
        }
    }

    fn step_done(&mut self, out: StepOutput) {
        self.in_flight -= 1;
        if out.batch.is_empty() && out.batch.samples.is_empty() {
            // Only sampler drops (`Scheduler::drops_only`): not a step.
            self.sched.recycle(out.batch);
            return;
        }
        self.stats.steps += 1;
        self.shared.timeline.record(
            out.started,
            out.finished,
            out.batch.step.num_tokens(),
            out.batch.step.num_seqs(),
        );
        if let Some(err) = out.error {
            for &(id, ..) in &out.batch.scheduled {
                self.finish(id, FinishReason::Error(err.clone()));
            }
            return;
        }
        // Requests whose sampling failed end first, so their stand-in samples are void below.
        for (i, why) in out.failed {
            if let Some(slot) = out.batch.samples.get(i) {
                self.finish(slot.id, FinishReason::Error(why));
            }
        }
        let tokens: Vec<u32> = out.sampled.iter().map(|s| s.token).collect();
        let accepted = self.sched.on_step_done(&out.batch, &tokens);
        let mut sampled = out.sampled;
        for a in accepted {
            let logprob = sampled[a.sample_index].logprob.take();
            self.on_token(a.id, a.token, logprob);
        }
        self.sched.recycle(out.batch);
    }

    fn on_token(
        &mut self,
        id: RequestId,
        token: u32,
        logprob: Option<crate::engine::request::TokenLogprob>,
    ) {
        self.stats.generation_tokens += 1;
        let (Some(seq), Some(out)) = (self.sched.get(id), self.outputs.get_mut(&id)) else {
            return;
        };
        let max_context = self.shared.model.max_context;
        let (num_output, total) = (seq.num_output(), seq.tokens.len());
        // A detokenizer that panics (on some odd token sequence, or an injected fault) fails its
        // own request, not the engine thread and everything on it.
        let (tokenizer, hooks) = (&self.tokenizer, &*self.hooks);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            out.on_token(
                tokenizer,
                hooks,
                token,
                logprob,
                (num_output, total),
                max_context,
            )
        }))
        .unwrap_or_else(|p| {
            Err(anyhow::anyhow!(
                "{}",
                crate::device::panic::panic_message(&*p)
            ))
        });
        match result {
            Ok(r) => {
                if out.events.send(r.event).is_err() {
                    self.finish(id, FinishReason::Abort); // the receiver is gone
                } else if let Some(reason) = r.finish {
                    self.finish(id, reason);
                }
            }
            Err(e) => self.finish(
                id,
                FinishReason::Error(format!("detokenization failed: {e:#}")),
            ),
        }
    }

    /// Finishes the requests the scheduler refused in its last plan.
    fn finish_refused(&mut self) {
        for seq in self.sched.take_refused() {
            if let Some(out) = self.outputs.remove(&seq.id) {
                let why = "the server could not start the request within its TTFT SLO \
                           (ttft_slo_ms); it gave up on it to serve requests that can still meet \
                           theirs";
                self.send_finish(seq.id, out, Some(seq), FinishReason::Refused(why.into()));
            }
        }
    }

    /// Ends request `id`: frees its blocks, sends its last event, updates the counts.
    fn finish(&mut self, id: RequestId, reason: FinishReason) {
        let Some(out) = self.outputs.remove(&id) else {
            return;
        };
        let seq = self.sched.remove(id);
        self.send_finish(id, out, seq, reason);
    }

    /// Sends a request's last event and updates the counts; `seq` is its scheduler state, already
    /// removed (none if the scheduler never had it).
    fn send_finish(
        &mut self,
        id: RequestId,
        out: RequestOutput,
        seq: Option<SeqState>,
        reason: FinishReason,
    ) {
        self.hooks.on_finish(id);
        let (usage, metrics) = match &seq {
            Some(s) => (
                Usage {
                    prompt_tokens: s.num_prompt,
                    completion_tokens: s.num_output(),
                    cached_tokens: s.num_cached_prompt,
                },
                RequestMetrics {
                    queue_time: s
                        .first_scheduled
                        .map(|t| t - s.arrival)
                        .unwrap_or_else(|| s.arrival.elapsed()),
                    preemptions: s.preemptions,
                },
            ),
            None => Default::default(),
        };
        if seq.as_ref().is_some_and(|s| s.first_scheduled.is_none()) {
            self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        self.shared.unfinished.fetch_sub(1, Ordering::SeqCst);
        match reason {
            FinishReason::Stop => self.stats.finished_stop += 1,
            FinishReason::Length => self.stats.finished_length += 1,
            FinishReason::Abort => self.stats.finished_abort += 1,
            FinishReason::Error(_) | FinishReason::Refused(_) => self.stats.finished_error += 1,
        }
        let _ = out.events.send(Event::Finished {
            reason,
            usage,
            metrics,
        });
    }

    /// Requests admitted for the first time leave the shared waiting count.
    fn note_admissions(&mut self) {
        let total = self.sched.first_admissions();
        let new = total - self.admissions_seen;
        self.admissions_seen = total;
        if new > 0 {
            self.shared
                .waiting
                .fetch_sub(new as usize, Ordering::SeqCst);
        }
    }

    fn publish_stats(&mut self) {
        let s = &mut self.stats;
        s.running = self.sched.num_running();
        s.waiting = self.sched.num_waiting();
        s.kv_usage = self.sched.kv_usage();
        s.preemptions = self.sched.preemptions;
        (s.prefix_cache_queries, s.prefix_cache_hits) = self.sched.allocator().prefix_stats();
        if let Ok(mut shared) = self.shared.stats.lock() {
            shared.clone_from(s);
        }
    }

    /// Marks the engine dead and fails every request with the reason.
    fn die(&mut self, why: String) {
        tracing::error!("engine stopped: {why}");
        if let Ok(mut dead) = self.shared.dead.lock() {
            *dead = Some(why.clone());
        }
        let ids: Vec<_> = self.outputs.keys().copied().collect();
        for id in ids {
            self.finish(id, FinishReason::Error(why.clone()));
        }
        self.shutting_down = true;
        self.in_flight = 0;
    }

    /// After `run` panicked: mark the engine dead with `why` (before anything a request waits on
    /// closes, so whoever sees a channel close also sees why) and tell every request. Only
    /// channels are touched: the scheduler may be half-updated.
    pub fn fail_after_panic(&mut self, why: &str) {
        tracing::error!("engine stopped: {why}");
        if let Ok(mut dead) = self.shared.dead.lock() {
            dead.get_or_insert_with(|| why.to_string());
        }
        for (_, out) in self.outputs.drain() {
            let _ = out.events.send(Event::Finished {
                reason: FinishReason::Error(why.to_string()),
                usage: Usage::default(),
                metrics: RequestMetrics::default(),
            });
        }
    }
}
