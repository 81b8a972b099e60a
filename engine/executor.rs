//! The executor: runs planned steps on the model, in order, and samples.
//!
//! It keeps each request's sampler state and returns each step's samples. Two ways to run a
//! step: where the backend samples on the device and the step needs nothing only the host has
//! (penalties), it is launched and collected later (`launch_queue.rs`), so the next step can be
//! launched first; otherwise it runs here at once, its logits sampled on the host, after any
//! launched steps are collected. Placeholders (a row whose input is the previous step's sample)
//! are resolved from the host copy of those samples, or on the device when the previous step is
//! still in flight.
//!
//! A step's constrained rows have their grammar masks computed on other threads while its
//! forward pass runs (`grammar::MaskPool`): a mask needs only the tokens sampled before the
//! step, so only sampling waits for it. On a device sampler such a step's forward pass is
//! launched at once and its sampling once it is the oldest step out (the tokens before it are
//! then recorded): the device runs the forward pass while the host collects the step before and
//! computes the masks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::device::backend::Backend;
use crate::device::kv_cache::KvCache;
use crate::device::sampling::grammar::{ConstraintMatcher, MaskPool};
use crate::device::sampling::{
    sample, DeviceSampling, RowConstraint, Sampled, SamplerScratch, SamplerState,
};
use crate::engine::request::RequestId;
use crate::engine::scheduler::batch::Batch;
use crate::runner::Runner;

use super::hooks::{EngineHooks, NoHooks};
use super::launch_queue::LaunchQueue;
pub use super::step_output::StepOutput;
use crate::device::panic::panic_message;

pub struct Executor<B: Backend> {
    model: Runner<B>,
    kv: KvCache<B>,
    samplers: HashMap<RequestId, SamplerState>,
    scratch: SamplerScratch,
    /// The previous step's sampled tokens, in sample order: placeholders read from here.
    prev_sampled: Vec<u32>,
    logits: Vec<f32>,
    /// Steps launched on the device and not collected yet.
    launched: LaunchQueue,
    /// Test hooks ([`NoHooks`] in production).
    hooks: Arc<dyn EngineHooks>,
    /// Prepares constrained rows' masks while the forward pass runs.
    masks: MaskPool,
}

impl<B: Backend> Executor<B> {
    pub fn new(model: Runner<B>, kv: KvCache<B>) -> Self {
        Self::with_hooks(model, kv, Arc::new(NoHooks))
    }

    /// [`new`](Self::new), calling `hooks` at the points [`EngineHooks`] names.
    pub fn with_hooks(model: Runner<B>, kv: KvCache<B>, hooks: Arc<dyn EngineHooks>) -> Self {
        let vocab = model.cfg().vocab_size;
        Executor {
            model,
            kv,
            samplers: HashMap::new(),
            scratch: SamplerScratch::new(vocab),
            prev_sampled: Vec::new(),
            logits: Vec::new(),
            launched: LaunchQueue::default(),
            hooks,
            masks: MaskPool::default(),
        }
    }

    /// Takes the next planned step; returns the steps finished meanwhile, in order (none when
    /// this one was launched and nothing had to be collected first).
    pub fn submit(&mut self, batch: Batch) -> Vec<StepOutput> {
        if batch.is_empty() && batch.samples.is_empty() {
            return self.drop_samplers(batch);
        }
        self.hooks.before_step();
        let mut done = Vec::new();
        // A request's sampler state is replaced or dropped only once its launched samples are
        // recorded.
        let touched = batch
            .sampler_drops
            .iter()
            .chain(batch.sampler_resets.iter().map(|r| &r.id));
        if touched.clone().any(|&id| self.launched.in_flight(id) > 0) {
            self.drain(&mut done);
        }
        for id in &batch.sampler_drops {
            self.samplers.remove(id);
        }
        for r in &batch.sampler_resets {
            self.samplers.insert(
                r.id,
                SamplerState::new(r.params.clone(), r.seed, &r.prompt, &r.generated),
            );
        }
        match self.device_entries(&batch) {
            Some(sampling) => self.launch(batch, sampling, &mut done),
            None => {
                self.drain(&mut done);
                done.push(self.run(batch));
            }
        }
        done
    }

    /// A batch that only ends requests (the engine had nothing else to send): their sampler
    /// states, grammar matchers included, go now rather than with the next step, whenever that
    /// comes. Nothing runs, so it is not a step for the hooks.
    fn drop_samplers(&mut self, batch: Batch) -> Vec<StepOutput> {
        let mut done = Vec::new();
        self.drain(&mut done);
        for id in &batch.sampler_drops {
            self.samplers.remove(id);
        }
        let now = Instant::now();
        done.push(StepOutput {
            batch,
            sampled: Vec::new(),
            error: None,
            failed: Vec::new(),
            started: now,
            finished: now,
        });
        done
    }

    /// Runs a step at once, sampling on the host (nothing launched may be outstanding).
    fn run(&mut self, mut batch: Batch) -> StepOutput {
        let started = Instant::now();
        let result = self
            .resolve_carry(&mut batch)
            .and_then(|()| self.forward_and_sample(&batch));
        match result {
            Ok((sampled, failed)) => {
                self.prev_sampled.clear();
                self.prev_sampled.extend(sampled.iter().map(|s| s.token));
                StepOutput {
                    batch,
                    sampled,
                    error: None,
                    failed,
                    started,
                    finished: Instant::now(),
                }
            }
            Err(e) => {
                // Keep indices valid for a step planned on top of this one; its requests are failed.
                self.prev_sampled = vec![0; batch.samples.len()];
                StepOutput::failed(batch, started, e)
            }
        }
    }

    /// Fills the batch's placeholders from the host copy of the previous step's samples.
    fn resolve_carry(&self, batch: &mut Batch) -> Result<(), String> {
        for &(row, from) in &batch.carry {
            let t = self.prev_sampled.get(from as usize).ok_or(
                "internal error: a placeholder refers to a sample the previous step did not make",
            )?;
            batch.step.input_ids[row as usize] = *t;
        }
        Ok(())
    }

    /// The samples, and which of them failed (see [`StepOutput::failed`]).
    #[allow(clippy::type_complexity)]
    fn forward_and_sample(
        &mut self,
        batch: &Batch,
    ) -> Result<(Vec<Sampled>, Vec<(usize, String)>), String> {
        let vocab = self.model.cfg().vocab_size;
        let Executor {
            model,
            kv,
            logits,
            samplers,
            masks,
            ..
        } = self;
        // A constrained row's mask depends only on the tokens sampled before this step: it is
        // computed while the forward pass runs, and sampling waits for it only if it is late.
        masks
            .overlap(constrained_rows(samplers, batch), || {
                model.forward_into(&batch.step, kv, logits)
            })
            .map_err(|e| format!("forward pass failed: {e:#}"))?;
        if self.logits.len() != batch.samples.len() * vocab {
            return Err(format!(
                "internal error: {} logit rows for {} samples",
                self.logits.len() / vocab.max(1),
                batch.samples.len()
            ));
        }
        let mut out = Vec::with_capacity(batch.samples.len());
        let mut failed = Vec::new();
        for (i, slot) in batch.samples.iter().enumerate() {
            let state = self.samplers.get_mut(&slot.id).ok_or_else(|| {
                format!("internal error: no sampler state for request {}", slot.id)
            })?;
            // One request's sampler failing (a bug, or an injected fault) fails that request
            // only: its batch-mates' samples are independent of it.
            let logits = &mut self.logits[i * vocab..(i + 1) * vocab];
            let scratch = &mut self.scratch;
            let hooks = &*self.hooks;
            let s = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                hooks.before_sampling(slot.id);
                sample(state, logits, scratch)
            }));
            match s {
                Ok(s) => out.push(s),
                Err(p) => {
                    failed.push((i, format!("sampling failed: {}", panic_message(&*p))));
                    out.push(Sampled {
                        token: 0,
                        logprob: None,
                    });
                    self.scratch = SamplerScratch::new(vocab); // it may be half-written
                }
            }
        }
        Ok((out, failed))
    }

    /// Each sample of `batch` as the device sampler takes it, or `None` when the step must run
    /// on the host: the backend does not sample on the device, or a request needs penalties
    /// (their token history stays on the host), more than 20 top logprobs, or the hooks ask.
    fn device_entries(&self, batch: &Batch) -> Option<Vec<DeviceSampling>> {
        if !self.model.samples_on_device() {
            return None;
        }
        batch
            .samples
            .iter()
            .map(|slot| {
                if self.hooks.samples_on_host(slot.id) {
                    return None;
                }
                let mut entry = self.samplers.get(&slot.id)?.device_sampling()?;
                entry.position += u64::from(self.launched.in_flight(slot.id));
                Some(entry)
            })
            .collect()
    }

    /// Whether a launched step awaits collection.
    pub fn has_pending(&self) -> bool {
        !self.launched.is_empty()
    }

    /// Whether no further step can be launched before the oldest is collected.
    pub fn pending_full(&self) -> bool {
        self.launched.is_full()
    }

    /// Whether the oldest launched step's samples are ready (collecting it will not wait).
    pub fn oldest_ready(&self) -> bool {
        self.launched.oldest_ready(&self.model)
    }

    /// Collects every launched step, oldest first, into `done`.
    fn drain(&mut self, done: &mut Vec<StepOutput>) {
        while let Some(out) = self.collect_oldest() {
            done.push(out);
        }
    }

    /// Launches `batch` with its samples drawn on the device (`sampling`, one per sample);
    /// steps that had to be collected first, or this one if it failed, go to `done`.
    fn launch(
        &mut self,
        mut batch: Batch,
        sampling: Vec<DeviceSampling>,
        done: &mut Vec<StepOutput>,
    ) {
        let started = Instant::now();
        if self.launched.is_full() {
            done.extend(self.collect_oldest());
        }
        if !self.launched.carries_on_device() {
            if let Err(e) = self.resolve_carry(&mut batch) {
                return done.push(StepOutput::failed(batch, started, e));
            }
        }
        let launched =
            self.launched
                .launch(&mut self.model, &mut self.kv, batch, sampling, started);
        if let Err(failed) = launched {
            let (batch, why) = *failed;
            // The next step may carry from this one: let it read zeros from the host (its
            // requests fail with this one's).
            self.drain(done);
            self.prev_sampled = vec![0; batch.samples.len()];
            done.push(StepOutput::failed(batch, started, why));
            return;
        }
        // Alone out, a constrained step's rows have every token before them recorded.
        self.sample_awaiting();
    }

    /// Launches the sampling of the oldest launched step when it waits for its rows'
    /// constraints: every token before it is recorded, so their masks are computed now (on the
    /// pool, rows of different grammars in parallel) while the device runs its forward pass.
    fn sample_awaiting(&mut self) {
        let Executor {
            model,
            samplers,
            launched,
            masks,
            ..
        } = self;
        let Some((batch, sampling)) = launched.awaiting_front() else {
            return;
        };
        let rows: Vec<(usize, RequestId)> = batch
            .samples
            .iter()
            .zip(sampling)
            .enumerate()
            .filter(|(_, (_, e))| e.constrained)
            .map(|(i, (slot, _))| (i, slot.id))
            .collect();
        masks.overlap(constrained_rows(samplers, batch), || ());
        let at: HashMap<RequestId, usize> =
            rows.iter().enumerate().map(|(j, r)| (r.1, j)).collect();
        let mut made: Vec<Option<Result<RowConstraint, String>>> = vec![None; rows.len()];
        for (id, state) in samplers.iter_mut() {
            if let Some(&j) = at.get(id) {
                // A grammar that panics fails its request only.
                let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    if let Some(c) = state.constraint_mut() {
                        c.prepare();
                    }
                }));
                made[j] = Some(match prepared {
                    Ok(()) => Ok(state.row_constraint().unwrap_or_default()),
                    Err(p) => Err(format!("sampling failed: {}", panic_message(&*p))),
                });
            }
        }
        let mut failed = Vec::new();
        let constraints: Vec<RowConstraint> = made
            .into_iter()
            .zip(&rows)
            .map(|(c, &(i, id))| match c {
                Some(Ok(c)) => c,
                other => {
                    let why = match other {
                        Some(Err(why)) => why,
                        _ => format!("internal error: no sampler state for request {id}"),
                    };
                    failed.push((i, why));
                    // Nothing allowed: the row's sample is discarded with its request.
                    RowConstraint {
                        bias: &[],
                        mask: Some(&[]),
                    }
                }
            })
            .collect();
        launched.sample_front(model, &constraints, failed);
    }

    /// Waits for the oldest launched step and records its samples; `None` when none is out.
    pub fn collect_oldest(&mut self) -> Option<StepOutput> {
        let out = self.launched.collect_oldest(&mut self.model)?;
        if out.error.is_some() {
            self.prev_sampled = vec![0; out.batch.samples.len()];
        } else {
            // Advance each sampler exactly as `sample` does when it records its token.
            for (slot, s) in out.batch.samples.iter().zip(&out.sampled) {
                if let Some(state) = self.samplers.get_mut(&slot.id) {
                    state.record_device_sample(s.token);
                }
            }
            self.prev_sampled.clear();
            self.prev_sampled
                .extend(out.sampled.iter().map(|s| s.token));
        }
        // The next step out may be a constrained one whose rows' tokens are now all recorded.
        self.sample_awaiting();
        Some(out)
    }
}

/// The grammar states of `batch`'s constrained rows.
fn constrained_rows<'a>(
    samplers: &'a mut HashMap<RequestId, SamplerState>,
    batch: &Batch,
) -> Vec<&'a mut ConstraintMatcher> {
    if !samplers.values().any(|s| s.params().constraint.is_some()) {
        return Vec::new();
    }
    let sampled: std::collections::HashSet<RequestId> =
        batch.samples.iter().map(|slot| slot.id).collect();
    samplers
        .iter_mut()
        .filter(|(id, _)| sampled.contains(id))
        .filter_map(|(_, s)| s.constraint_mut())
        .collect()
}
