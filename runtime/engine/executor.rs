//! The executor: runs planned steps on the model, in order, and samples.
//!
//! It resolves placeholders from the previous step's samples (the CPU counterpart of the CUDA
//! backend's on-device carry-over), keeps each request's sampler state, and returns the samples.

use std::collections::HashMap;
use std::time::Instant;

use crate::model::llama::Llama;
use crate::runtime::backend::Backend;
use crate::runtime::kv_cache::KvCache;
use crate::runtime::request::RequestId;
use crate::runtime::sampling::{sample, DeviceSampling, Sampled, SamplerScratch, SamplerState};
use crate::runtime::scheduler::batch::Batch;

use super::fault::FaultySet;
use super::panic_message;

/// A step's result; the batch comes back so the engine can match samples to requests.
pub struct StepOutput {
    pub batch: Batch,
    /// One per `batch.samples`, unless `error` is set.
    pub sampled: Vec<Sampled>,
    /// The step failed as a whole (its requests get this error).
    pub error: Option<String>,
    /// Samples whose sampling failed (index into `sampled`, why); only those requests fail, and
    /// their `sampled` entry is a stand-in that must not be used.
    pub failed: Vec<(usize, String)>,
    /// When the executor took the batch and when its samples were ready.
    pub started: Instant,
    pub finished: Instant,
}

pub struct Executor<B: Backend> {
    model: Llama<B>,
    kv: KvCache<B>,
    samplers: HashMap<RequestId, SamplerState>,
    scratch: SamplerScratch,
    /// The previous step's sampled tokens, in sample order: placeholders read from here.
    prev_sampled: Vec<u32>,
    logits: Vec<f32>,
    /// This step's rows as the device sampler takes them (reused every step).
    device_params: Vec<DeviceSampling>,
    /// Fault injection (tests only; `None` in production): the requests whose sampler panics,
    /// marked by the engine thread (see `FaultPlan::panic_sampling`).
    pub(crate) faulty: Option<FaultySet>,
}

impl<B: Backend> Executor<B> {
    pub fn new(model: Llama<B>, kv: KvCache<B>) -> Self {
        let vocab = model.cfg.vocab_size;
        Executor {
            model,
            kv,
            samplers: HashMap::new(),
            scratch: SamplerScratch::new(vocab),
            prev_sampled: Vec::new(),
            logits: Vec::new(),
            device_params: Vec::new(),
            faulty: None,
        }
    }

    pub fn run(&mut self, mut batch: Batch) -> StepOutput {
        let started = Instant::now();
        for id in &batch.sampler_drops {
            self.samplers.remove(id);
        }
        for r in &batch.sampler_resets {
            self.samplers.insert(
                r.id,
                SamplerState::new(r.params.clone(), r.seed, &r.prompt, &r.generated),
            );
        }
        let mut resolved = true;
        for &(row, from) in &batch.carry {
            match self.prev_sampled.get(from as usize) {
                Some(&t) => batch.step.input_ids[row as usize] = t,
                None => resolved = false,
            }
        }
        let result = if resolved {
            self.forward_and_sample(&batch)
        } else {
            Err(
                "internal error: a placeholder refers to a sample the previous step did not make"
                    .into(),
            )
        };
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
                StepOutput {
                    batch,
                    sampled: Vec::new(),
                    error: Some(e),
                    failed: Vec::new(),
                    started,
                    finished: Instant::now(),
                }
            }
        }
    }

    /// The samples, and which of them failed (see [`StepOutput::failed`]).
    #[allow(clippy::type_complexity)]
    fn forward_and_sample(
        &mut self,
        batch: &Batch,
    ) -> Result<(Vec<Sampled>, Vec<(usize, String)>), String> {
        let vocab = self.model.cfg.vocab_size;
        if self.device_eligible(batch)? {
            let mut out = Vec::with_capacity(batch.samples.len());
            let on_device = self
                .model
                .forward_sample(&batch.step, &mut self.kv, &self.device_params, &mut out)
                .map_err(|e| format!("forward pass failed: {e:#}"))?;
            if on_device {
                if out.len() != batch.samples.len() {
                    return Err(format!(
                        "internal error: {} device samples for {} rows",
                        out.len(),
                        batch.samples.len()
                    ));
                }
                // Advance each request's sampler exactly as `sample` does when it records.
                for (slot, s) in batch.samples.iter().zip(&out) {
                    if let Some(state) = self.samplers.get_mut(&slot.id) {
                        state.record_device_sample(s.token);
                    }
                }
                return Ok((out, Vec::new()));
            }
            // The backend samples on the host only: the logits are still on the device.
            self.model
                .logits_into(batch.samples.len(), &mut self.logits)
                .map_err(|e| format!("forward pass failed: {e:#}"))?;
        } else {
            self.model
                .forward_into(&batch.step, &mut self.kv, &mut self.logits)
                .map_err(|e| format!("forward pass failed: {e:#}"))?;
        }
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
            let inject = self.faulty.as_ref().is_some_and(|f| f.contains(slot.id));
            let s = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                assert!(!inject, "injected sampling fault");
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

    /// Whether every sample of `batch` can be drawn by the device sampler (fills
    /// `device_params`). Penalties need the token history, which stays on the host: a batch with
    /// any request using them (or more than 20 top logprobs, or an injected sampling fault)
    /// samples on the host, as before.
    fn device_eligible(&mut self, batch: &Batch) -> Result<bool, String> {
        self.device_params.clear();
        for slot in &batch.samples {
            let state = self.samplers.get(&slot.id).ok_or_else(|| {
                format!("internal error: no sampler state for request {}", slot.id)
            })?;
            if self.faulty.as_ref().is_some_and(|f| f.contains(slot.id)) {
                return Ok(false);
            }
            match state.device_sampling() {
                Some(p) => self.device_params.push(p),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}
