//! Steps sampled on the device: launched now, collected later.
//!
//! The executor thread launches step N+1 as soon as the engine has planned it, before it waits
//! for step N's tokens, so the device never idles between the two while the host collects,
//! streams and plans. Step N+1's placeholders are then filled on the device from step N's
//! samples ([`Runner::launch_sampled`]). At most two steps are out.
//!
//! A step with constrained rows has only its forward pass launched at first; the executor
//! launches its sampling ([`LaunchQueue::sample_front`]) once it is the oldest step out, when
//! every token before it is recorded and its rows' masks can be computed.
//!
//! The queue knows only what is launched and not collected; the model, the KV cache and the
//! sampler states stay with the executor, which passes in what a call needs.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::step_output::StepOutput;
use crate::device::backend::Backend;
use crate::device::kv_cache::KvCache;
use crate::device::sampling::{DeviceSampling, RowConstraint, Sampled};
use crate::engine::request::RequestId;
use crate::engine::scheduler::batch::Batch;
use crate::runner::sampled_step::LaunchedStep;
use crate::runner::Runner;

/// A launched step waiting to be collected.
struct Pending {
    batch: Batch,
    launched: LaunchedStep,
    sampling: Vec<DeviceSampling>,
    started: Instant,
    /// Rows that failed before their sampling was launched (their constraint could not be
    /// made), with why.
    failed: Vec<(usize, String)>,
    /// Why launching the step's sampling failed.
    error: Option<String>,
}

/// The most steps launched and not collected (the runner's metadata slots).
const MAX_PENDING: usize = 2;

/// The steps launched on the device and not collected yet, oldest first.
#[derive(Default)]
pub(super) struct LaunchQueue {
    pending: VecDeque<Pending>,
    /// Per request, samples launched and not yet collected: its next draw's position is its
    /// recorded count plus these.
    in_flight: HashMap<RequestId, u32>,
}

impl LaunchQueue {
    /// Whether no launched step awaits collection.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether no further step can be launched before the oldest is collected.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// Whether the next launch fills its placeholders on the device (from the newest launched
    /// step, still out); otherwise the caller fills them from the host copy of the samples first.
    pub fn carries_on_device(&self) -> bool {
        !self.is_empty()
    }

    /// Samples of request `id` launched and not yet collected.
    pub fn in_flight(&self, id: RequestId) -> u32 {
        self.in_flight.get(&id).copied().unwrap_or(0)
    }

    /// Whether the oldest launched step's samples are ready (collecting it will not wait).
    pub fn oldest_ready<B: Backend>(&self, model: &Runner<B>) -> bool {
        self.pending
            .front()
            .is_some_and(|p| model.step_ready(p.launched))
    }

    /// Launches `batch` with its samples drawn on the device (`sampling`, one per sample). The
    /// queue must not be full, and where [`carries_on_device`](Self::carries_on_device) is false
    /// the batch's placeholders must already be filled. On failure the batch comes back with why.
    pub fn launch<B: Backend>(
        &mut self,
        model: &mut Runner<B>,
        kv: &mut KvCache<B>,
        batch: Batch,
        sampling: Vec<DeviceSampling>,
        started: Instant,
    ) -> Result<(), Box<(Batch, String)>> {
        let carry: &[(u32, u32)] = if self.carries_on_device() {
            &batch.carry
        } else {
            &[]
        };
        match model.launch_sampled(&batch.step, kv, &sampling, carry) {
            Ok(launched) => {
                for slot in &batch.samples {
                    *self.in_flight.entry(slot.id).or_insert(0) += 1;
                }
                self.pending.push_back(Pending {
                    batch,
                    launched,
                    sampling,
                    started,
                    failed: Vec::new(),
                    error: None,
                });
                Ok(())
            }
            Err(e) => Err(Box::new((batch, format!("forward pass failed: {e:#}")))),
        }
    }

    /// The oldest launched step, with its entries, when its sampling awaits its rows'
    /// constraints.
    pub fn awaiting_front(&self) -> Option<(&Batch, &[DeviceSampling])> {
        self.pending
            .front()
            .filter(|p| p.launched.awaits_sampling() && p.error.is_none())
            .map(|p| (&p.batch, p.sampling.as_slice()))
    }

    /// Launches the sampling of the [`awaiting_front`](Self::awaiting_front) step with
    /// `constraints` (one per constrained entry, in order); `failed` rows fail when it is
    /// collected. A failure fails the whole step then.
    pub fn sample_front<B: Backend>(
        &mut self,
        model: &mut Runner<B>,
        constraints: &[RowConstraint],
        failed: Vec<(usize, String)>,
    ) {
        let Some(p) = self.pending.front_mut() else {
            return;
        };
        p.failed = failed;
        match model.sample_launched(p.launched, constraints) {
            Ok(launched) => p.launched = launched,
            Err(e) => p.error = Some(format!("sampling failed: {e:#}")),
        }
    }

    /// Waits for the oldest launched step and returns its output; `None` when none is out. The
    /// caller records the samples in its sampler states.
    pub fn collect_oldest<B: Backend>(&mut self, model: &mut Runner<B>) -> Option<StepOutput> {
        let p = self.pending.pop_front()?;
        let mut sampled: Vec<Sampled> = Vec::with_capacity(p.sampling.len());
        let result = match &p.error {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => model.collect_sampled(p.launched, &p.sampling, &mut sampled),
        };
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
        Some(match result {
            Ok(times) => {
                let (started, finished) = times.unwrap_or((p.started, Instant::now()));
                StepOutput {
                    batch: p.batch,
                    sampled,
                    error: None,
                    failed: p.failed,
                    started,
                    finished,
                }
            }
            Err(e) => {
                let why = match p.error {
                    Some(why) => why,
                    None => format!("forward pass failed: {e:#}"),
                };
                StepOutput::failed(p.batch, p.started, why)
            }
        })
    }
}
