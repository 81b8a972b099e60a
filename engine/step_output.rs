//! What the executor hands back for each step, whether it ran at once or was launched ahead.

use std::time::Instant;

use crate::device::sampling::Sampled;
use crate::engine::scheduler::batch::Batch;

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

impl StepOutput {
    /// The output of a step that failed as a whole.
    pub(super) fn failed(batch: Batch, started: Instant, why: String) -> Self {
        StepOutput {
            batch,
            sampled: Vec::new(),
            error: Some(why),
            failed: Vec::new(),
            started,
            finished: Instant::now(),
        }
    }
}
