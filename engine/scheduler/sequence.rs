//! One request as the scheduler tracks it.
//!
//! ```text
//! tokens:   [ prompt .............. | accepted output ... ] + `pending` samples still in flight
//!           [ num_done (K/V written by finished steps) ]
//!           [ num_computed (K/V written or being written) .......... ]
//! ```
//! With overlap the scheduler plans a step before the previous one returns, so a decode input may
//! be a sample it has not seen yet: a placeholder the executor fills in from the last step's output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::kv::SeqBlocks;
use crate::engine::request::{Request, RequestId, SamplingParams};

pub struct SeqState {
    pub id: RequestId,
    pub params: Arc<SamplingParams>,
    pub priority: i32,
    /// Tokens it is expected to generate in all (see `Request::predicted_output_len`).
    pub predicted_output: usize,
    /// See `Request::client`.
    pub client: Option<Arc<str>>,
    pub arrival: Instant,
    /// Submission order (for fcfs and tie-breaks).
    pub arrival_order: u64,
    /// Steps planned before it was submitted (its wait, for aging, counts from here).
    pub arrived_in: u64,
    /// When its first token is due, on the scheduler's clock (arrival + its TTFT SLO); `None`
    /// without an SLO.
    pub deadline: Option<Duration>,
    /// Order of the latest admission to the running set (preemption picks the latest).
    pub admitted_order: u64,
    pub num_prompt: usize,
    /// Prompt followed by the accepted output tokens.
    pub tokens: Vec<u32>,
    /// Tokens whose K/V is written or being written by steps in flight.
    pub num_computed: usize,
    /// Tokens whose K/V was written by steps that have returned.
    pub num_done: usize,
    /// Samples in flight: planned steps will produce them, the scheduler has not seen them yet.
    pub pending: usize,
    pub blocks: SeqBlocks,
    /// Bumped on preemption, so samples still in flight for the old run are recognised and dropped.
    pub epoch: u32,
    /// Prompt tokens served by the prefix cache on the latest admission.
    pub num_cached_prompt: usize,
    pub first_scheduled: Option<Instant>,
    pub preemptions: u32,
    /// The executor must (re)create this request's sampler state before it samples next.
    pub needs_sampler_reset: bool,
    pub seed: u64,
    /// The number of the last step this request was planned into.
    pub planned_in: u64,
    /// The number of the last step in which this request, decoding, claimed the block for its
    /// next token before the step's budget reached it (see `BudgetOrder::PrefillFirst`).
    pub claimed_in: u64,
}

impl SeqState {
    pub fn new(
        id: RequestId,
        request: Request,
        arrival_order: u64,
        arrived_in: u64,
        seed: u64,
    ) -> Self {
        let predicted_output = request
            .predicted_output_len
            .unwrap_or(request.params.max_tokens);
        SeqState {
            id,
            params: request.params,
            priority: request.priority,
            predicted_output,
            client: request.client,
            arrival: request.arrival,
            arrival_order,
            arrived_in,
            deadline: None,
            admitted_order: 0,
            num_prompt: request.prompt_ids.len(),
            tokens: request.prompt_ids,
            num_computed: 0,
            num_done: 0,
            pending: 0,
            blocks: SeqBlocks::new(),
            epoch: 0,
            num_cached_prompt: 0,
            first_scheduled: None,
            preemptions: 0,
            needs_sampler_reset: true,
            seed,
            planned_in: 0,
            claimed_in: 0,
        }
    }

    pub fn output(&self) -> &[u32] {
        &self.tokens[self.num_prompt..]
    }

    pub fn num_output(&self) -> usize {
        self.tokens.len() - self.num_prompt
    }

    /// Output tokens it is still expected to generate (0 once past the prediction).
    pub fn predicted_remaining(&self) -> usize {
        self.predicted_output.saturating_sub(self.num_output())
    }

    /// Tokens still to compute: known ones and in-flight samples not yet fed back.
    pub fn remaining(&self) -> usize {
        self.tokens.len() + self.pending - self.num_computed
    }

    /// Its next work is a single decode token (as opposed to a prefill chunk).
    pub fn is_decoding(&self) -> bool {
        self.num_output() + self.pending > 0 && self.remaining() <= 1
    }

    /// Enough tokens are already generated or in flight to reach `max_tokens`: planning more would
    /// only produce a token to throw away.
    pub fn at_max_tokens(&self) -> bool {
        self.num_output() + self.pending >= self.params.max_tokens
    }
}
