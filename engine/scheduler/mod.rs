//! Decides, every step, which sequences get how many new tokens.
//!
//! No prefill or decode phases: each request has tokens computed and tokens known, and the
//! scheduler hands out a token budget (`max_batch_tokens`) across at most `max_num_seqs`
//! running requests — decode tokens and prefill chunks mixed in one flat batch. Prompts that
//! hit the prefix cache skip their cached blocks. When blocks run out, a running request is
//! preempted by recompute (blocks freed, requeued at the front). Knows nothing about devices.
//!
//! Aging (`max_wait_steps`, see [`aging`]) bounds every request's time in the system whatever the
//! policy: a request unfinished `max_wait_steps` steps after it arrived is served ahead of all
//! younger work, oldest first.
//!
//! Time: the scheduler counts steps, and knows the time only as its caller tells it
//! ([`Scheduler::set_clock`]: the engine's wall clock since it started, the simulator's simulated
//! time), so a simulation stays deterministic. Requests' TTFT deadlines are on that clock.

pub mod aging;
pub mod batch;
mod plan;
pub mod policy;
pub mod sequence;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use rustc_hash::FxHashMap as HashMap;

use batch::{Batch, SampleSlot};
use policy::Policy;
use sequence::SeqState;

use crate::engine::kv::BlockAllocator;
use crate::engine::request::{Request, RequestId};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_batch_tokens: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub enable_prefix_caching: bool,
    /// Steps after its arrival at which an unfinished request becomes overdue and is served
    /// first (see [`aging`]); `None` turns aging off.
    pub max_wait_steps: Option<u64>,
}

/// A sample the scheduler accepted for a live request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub id: RequestId,
    /// Index into the step output's samples.
    pub sample_index: usize,
    pub token: u32,
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    policy: Box<dyn Policy>,
    alloc: BlockAllocator,
    seqs: HashMap<RequestId, SeqState>,
    /// Fresh requests, kept in the policy's admission order.
    waiting: Vec<RequestId>,
    /// Preempted requests; they resume before any fresh one.
    resumed: VecDeque<RequestId>,
    /// In admission order.
    running: Vec<RequestId>,
    /// Every request not yet finished or aborted, in arrival order (what aging walks).
    by_arrival: VecDeque<RequestId>,
    /// Each request's sample index in the last planned batch (for placeholders).
    last_samples: HashMap<RequestId, u32>,
    pending_drops: Vec<RequestId>,
    next_arrival: u64,
    next_admission: u64,
    /// Steps planned so far; the current one while planning.
    step_no: u64,
    /// The time its caller last gave it (see [`Scheduler::set_clock`]).
    clock: Duration,
    /// Requests the policy gave up on before admitting them, removed and not yet taken by the
    /// caller (see [`Scheduler::take_refused`]).
    refused: Vec<SeqState>,
    pub preemptions: u64,
    first_admissions: u64,
    /// A returned batch whose buffers the next plan reuses (a 256×2k-token step's block tables
    /// are ~130 KB: fresh each step, they cost page faults).
    spare: Option<Batch>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, policy: Box<dyn Policy>) -> anyhow::Result<Self> {
        anyhow::ensure!(cfg.max_num_seqs > 0, "max_num_seqs must be positive");
        anyhow::ensure!(
            cfg.max_batch_tokens > 0,
            "max_batch_tokens must be positive"
        );
        anyhow::ensure!(
            cfg.num_blocks > 0 && cfg.block_size > 0,
            "the KV cache must have blocks"
        );
        let alloc = BlockAllocator::new(cfg.num_blocks, cfg.block_size, cfg.enable_prefix_caching);
        Ok(Scheduler {
            cfg,
            policy,
            alloc,
            seqs: HashMap::default(),
            waiting: Vec::new(),
            resumed: VecDeque::new(),
            running: Vec::new(),
            by_arrival: VecDeque::new(),
            last_samples: HashMap::default(),
            pending_drops: Vec::new(),
            next_arrival: 0,
            next_admission: 0,
            step_no: 0,
            clock: Duration::ZERO,
            refused: Vec::new(),
            preemptions: 0,
            first_admissions: 0,
            spare: None,
        })
    }

    /// Queues a request; `seed` drives its sampling when the request has no seed of its own.
    pub fn add(&mut self, id: RequestId, request: Request, seed: u64) {
        let seed = request.params.seed.unwrap_or(seed);
        let deadline = request.ttft_slo.map(|slo| self.clock + slo);
        let mut seq = SeqState::new(id, request, self.next_arrival, self.step_no, seed);
        seq.deadline = deadline;
        self.next_arrival += 1;
        self.policy.on_arrival(&seq);
        let policy = &self.policy;
        let seqs = &self.seqs;
        let at = self.waiting.partition_point(|w| {
            policy.compare_waiting(&seqs[w], &seq) != std::cmp::Ordering::Greater
        });
        self.waiting.insert(at, id);
        self.by_arrival.push_back(id);
        self.seqs.insert(id, seq);
    }

    /// Tells the scheduler the time: `now` since a fixed start (the engine's start, the start
    /// of a simulation). Requests added afterwards arrive at `now`, and the next plan sees it.
    /// It never goes back: an earlier time is ignored.
    pub fn set_clock(&mut self, now: Duration) {
        self.clock = self.clock.max(now);
    }

    /// Takes the requests the policy refused (see [`Policy::refuses`]) since the last call. They
    /// are already removed, holding no blocks; the caller finishes them with an error.
    pub fn take_refused(&mut self) -> Vec<SeqState> {
        std::mem::take(&mut self.refused)
    }

    pub fn get(&self, id: RequestId) -> Option<&SeqState> {
        self.seqs.get(&id)
    }

    pub fn has_work(&self) -> bool {
        !self.seqs.is_empty()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len() + self.resumed.len()
    }

    /// Requests admitted to the running set for the first time, so far.
    pub fn first_admissions(&self) -> u64 {
        self.first_admissions
    }

    pub fn kv_usage(&self) -> f32 {
        self.alloc.usage()
    }

    pub fn allocator(&self) -> &BlockAllocator {
        &self.alloc
    }

    /// Takes the returned step's samples (`sampled[i]` for `batch.samples[i]`) and returns those
    /// of live requests, appended to their tokens.
    pub fn on_step_done(&mut self, batch: &Batch, sampled: &[u32]) -> Vec<Accepted> {
        for &(id, epoch, end) in &batch.scheduled {
            if let Some(s) = self.seqs.get_mut(&id).filter(|s| s.epoch == epoch) {
                s.num_done = s.num_done.max(end);
            }
        }
        let mut accepted = Vec::with_capacity(sampled.len());
        for (i, (slot, &token)) in batch.samples.iter().zip(sampled).enumerate() {
            let Some(s) = self
                .seqs
                .get_mut(&slot.id)
                .filter(|s| s.epoch == slot.epoch)
            else {
                continue; // finished, aborted or preempted while the step ran: the sample is void
            };
            s.pending -= 1;
            s.tokens.push(token);
            accepted.push(Accepted {
                id: slot.id,
                sample_index: i,
                token,
            });
        }
        for &(id, epoch, _) in &batch.scheduled {
            if let Some(s) = self.seqs.get_mut(&id).filter(|s| s.epoch == epoch) {
                let done = s.num_done.min(s.tokens.len());
                self.alloc.cache_full_blocks(&mut s.blocks, &s.tokens, done);
            }
        }
        accepted
    }

    /// A batch carrying only the sampler states to drop, when there are some: for the engine to
    /// send when it has nothing to run, so ended requests' states do not wait for the next step.
    pub fn drops_only(&mut self) -> Option<Batch> {
        if self.pending_drops.is_empty() {
            return None;
        }
        let mut b = self.spare.take().unwrap_or_default();
        b.clear();
        std::mem::swap(&mut b.sampler_drops, &mut self.pending_drops);
        Some(b)
    }

    /// Hands back a returned batch so the next plan can reuse its buffers.
    pub fn recycle(&mut self, batch: Batch) {
        self.spare = Some(batch);
    }

    /// Removes a request (finished or aborted), freeing its blocks at once.
    pub fn remove(&mut self, id: RequestId) -> Option<SeqState> {
        let mut s = self.seqs.remove(&id)?;
        self.policy.on_removed(&s);
        self.alloc.free(&mut s.blocks);
        self.running.retain(|&r| r != id);
        self.waiting.retain(|&r| r != id);
        self.resumed.retain(|&r| r != id);
        self.by_arrival.retain(|&r| r != id);
        self.pending_drops.push(id);
        Some(s)
    }

    /// Frees a running request's blocks and requeues it at the front, to be recomputed.
    fn preempt(&mut self, id: RequestId) {
        let Some(s) = self.seqs.get_mut(&id) else {
            return;
        };
        self.alloc.free(&mut s.blocks);
        s.num_computed = 0;
        s.num_done = 0;
        s.pending = 0;
        s.epoch += 1;
        s.preemptions += 1;
        s.needs_sampler_reset = true;
        self.running.retain(|&r| r != id);
        self.resumed.push_front(id);
        self.pending_drops.push(id);
        self.preemptions += 1;
    }

    /// Removes the fresh waiting requests the policy refuses, keeping them for
    /// [`Scheduler::take_refused`]. Fresh ones only: a preempted request has been admitted once.
    fn refuse_waiting(&mut self) {
        let (policy, seqs) = (&self.policy, &self.seqs);
        let refused: Vec<RequestId> = self
            .waiting
            .iter()
            .copied()
            .filter(|id| policy.refuses(&seqs[id]))
            .collect();
        for id in refused {
            if let Some(seq) = self.remove(id) {
                self.refused.push(seq);
            }
        }
    }

    /// Plans the next step, or `None` when there is nothing to run.
    pub fn schedule(&mut self) -> Option<Batch> {
        self.policy.on_clock(self.clock);
        if self.policy.may_refuse() {
            self.refuse_waiting();
        }
        if self.policy.reorders() {
            let (policy, seqs) = (&self.policy, &self.seqs);
            self.waiting
                .sort_by(|a, b| policy.compare_waiting(&seqs[a], &seqs[b]));
        }
        let batch = plan::plan(self);
        if batch.is_empty() {
            return None;
        }
        self.last_samples.clear();
        for (i, SampleSlot { id, .. }) in batch.samples.iter().enumerate() {
            self.last_samples.insert(*id, i as u32);
        }
        Some(batch)
    }
}
