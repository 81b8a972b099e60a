//! Steps sampled on the device: launched now, collected later.
//!
//! The executor thread launches step N+1 as soon as the engine has planned it, before it waits
//! for step N's tokens, so the device never idles between the two while the host collects,
//! streams and plans. Step N+1's placeholders are then filled on the device from step N's
//! samples ([`Llama::launch_sampled`](crate::model::llama::Llama)). At most two steps are out.

use std::time::Instant;

use super::executor::{Executor, StepOutput};
use crate::device::backend::Backend;
use crate::device::sampling::{DeviceSampling, Sampled};
use crate::engine::scheduler::batch::Batch;
use crate::runner::sampled_step::LaunchedStep;

/// A launched step waiting to be collected.
pub(super) struct Pending {
    batch: Batch,
    launched: LaunchedStep,
    sampling: Vec<DeviceSampling>,
    started: Instant,
}

/// The most steps launched and not collected (the model's metadata slots).
const MAX_PENDING: usize = 2;

impl<B: Backend> Executor<B> {
    /// Whether a launched step awaits collection.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether no further step can be launched before the oldest is collected.
    pub fn pending_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// Whether the oldest launched step's samples are ready (collecting it will not wait).
    pub fn oldest_ready(&self) -> bool {
        self.pending
            .front()
            .is_some_and(|p| self.model.step_ready(p.launched))
    }

    /// Collects every launched step, oldest first, into `done`.
    pub(super) fn drain(&mut self, done: &mut Vec<StepOutput>) {
        while let Some(out) = self.collect_oldest() {
            done.push(out);
        }
    }

    /// Launches `batch` with its samples drawn on the device (`sampling`, one per sample);
    /// steps that had to be collected first, or this one if it failed, go to `done`.
    pub(super) fn launch(
        &mut self,
        mut batch: Batch,
        sampling: Vec<DeviceSampling>,
        done: &mut Vec<StepOutput>,
    ) {
        let started = Instant::now();
        if self.pending_full() {
            done.extend(self.collect_oldest());
        }
        // Placeholders: on the device while the step they read from is in flight, else from the
        // host copy of its samples.
        let carry_on_device = self.has_pending();
        if !carry_on_device {
            if let Err(e) = self.resolve_carry(&mut batch) {
                return done.push(StepOutput::failed(batch, started, e));
            }
        }
        let carry: &[(u32, u32)] = if carry_on_device { &batch.carry } else { &[] };
        match self
            .model
            .launch_sampled(&batch.step, &mut self.kv, &sampling, carry)
        {
            Ok(launched) => {
                for slot in &batch.samples {
                    *self.in_flight.entry(slot.id).or_insert(0) += 1;
                }
                self.pending.push_back(Pending {
                    batch,
                    launched,
                    sampling,
                    started,
                });
            }
            Err(e) => {
                // The next step may carry from this one: let it read zeros from the host (its
                // requests fail with this one's).
                self.drain(done);
                self.prev_sampled = vec![0; batch.samples.len()];
                let why = format!("forward pass failed: {e:#}");
                done.push(StepOutput::failed(batch, started, why));
            }
        }
    }

    /// Waits for the oldest launched step and records its samples; `None` when none is out.
    pub fn collect_oldest(&mut self) -> Option<StepOutput> {
        let p = self.pending.pop_front()?;
        let mut sampled: Vec<Sampled> = Vec::with_capacity(p.sampling.len());
        let result = self
            .model
            .collect_sampled(p.launched, &p.sampling, &mut sampled);
        for slot in &p.batch.samples {
            if let Some(n) = self.in_flight.get_mut(&slot.id) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(&slot.id);
                }
            }
        }
        let result = result.and_then(|times| {
            anyhow::ensure!(
                sampled.len() == p.batch.samples.len(),
                "internal error: {} device samples for {} rows",
                sampled.len(),
                p.batch.samples.len()
            );
            Ok(times)
        });
        match result {
            Ok(times) => {
                // Advance each sampler exactly as `sample` does when it records its token.
                for (slot, s) in p.batch.samples.iter().zip(&sampled) {
                    if let Some(state) = self.samplers.get_mut(&slot.id) {
                        state.record_device_sample(s.token);
                    }
                }
                self.prev_sampled.clear();
                self.prev_sampled.extend(sampled.iter().map(|s| s.token));
                let (started, finished) = times.unwrap_or((p.started, Instant::now()));
                Some(StepOutput {
                    batch: p.batch,
                    sampled,
                    error: None,
                    failed: Vec::new(),
                    started,
                    finished,
                })
            }
            Err(e) => {
                self.prev_sampled = vec![0; p.batch.samples.len()];
                let why = format!("forward pass failed: {e:#}");
                Some(StepOutput::failed(p.batch, p.started, why))
            }
        }
    }
}
