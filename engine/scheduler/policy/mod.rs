//! Scheduling policies: which waiting request is admitted next, whose work gets the step's token
//! budget first, and who is preempted when blocks run out. One small file per policy; adding one
//! means adding a file and a line in [`by_name`].

mod deadline;
mod decode_first;
mod fcfs;
mod prefill_first;
mod priority;
mod shortest_job_first;
mod shortest_prompt_first;
mod vtc;

use std::cmp::Ordering;
use std::time::Duration;

use super::sequence::SeqState;

/// Which kind of work the step's token budget goes to first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetOrder {
    /// Running requests in admission order (decode or prefill alike), then admissions.
    Arrival,
    /// Decode tokens of running requests, then their prefill chunks, then admissions.
    DecodeFirst,
    /// Prefill chunks of running requests and admissions, then decode tokens. Decoders still
    /// claim the block for their next token first (in admission order, with the prefill chunks),
    /// and preempted requests resume after the decode tokens: recompute is not a new prompt.
    PrefillFirst,
}

pub trait Policy: Send {
    /// Admission order of waiting requests: `Less` means `a` goes first.
    /// (Preempted requests always resume before fresh ones, whatever the policy.)
    fn compare_waiting(&self, a: &SeqState, b: &SeqState) -> Ordering {
        a.arrival_order.cmp(&b.arrival_order)
    }

    fn budget_order(&self) -> BudgetOrder {
        BudgetOrder::Arrival
    }

    /// Whether the admission order changes as requests are served: the scheduler then re-sorts
    /// the waiting queue before each plan (a fixed order is kept sorted as requests arrive).
    fn reorders(&self) -> bool {
        false
    }

    /// The time, before each plan (see `Scheduler::set_clock`).
    fn on_clock(&mut self, _now: Duration) {}

    /// Whether the policy may give up on waiting requests ([`Policy::refuses`]); the scheduler
    /// only asks about each one when it may.
    fn may_refuse(&self) -> bool {
        false
    }

    /// Whether to give up on `seq`, a fresh request still waiting for its first admission: it is
    /// removed and its caller finishes it with an error.
    fn refuses(&self, _seq: &SeqState) -> bool {
        false
    }

    /// A request arrived (before it is queued).
    fn on_arrival(&mut self, _seq: &SeqState) {}

    /// `seq` was planned into a step with `prompt` prompt tokens and `output` output tokens
    /// (decode tokens, or output recomputed after a preemption).
    fn on_planned(&mut self, _seq: &SeqState, _prompt: usize, _output: usize) {}

    /// A request finished or was aborted.
    fn on_removed(&mut self, _seq: &SeqState) {}

    /// Among `running` (non-empty), the one to preempt when blocks run out:
    /// by default the most recently admitted.
    fn choose_victim(&self, running: &[&SeqState]) -> usize {
        let mut best = 0;
        for (i, s) in running.iter().enumerate() {
            if s.admitted_order > running[best].admitted_order {
                best = i;
            }
        }
        best
    }
}

pub const NAMES: [&str; 8] = [
    "fcfs",
    "prefill-first",
    "decode-first",
    "shortest-prompt-first",
    "priority",
    "shortest-job-first",
    "vtc",
    "deadline",
];

/// What the `deadline` policy does with a waiting request that has missed its TTFT deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SloMiss {
    /// Serve it after every request that can still meet its deadline.
    #[default]
    Deprioritise,
    /// Give up on it: the request finishes with an error (the server answers 503).
    Refuse,
}

/// Settings some policies read; the others ignore them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyOptions {
    pub slo_miss: SloMiss,
}

/// The policy called `name` on the command line, with default options.
pub fn by_name(name: &str) -> anyhow::Result<Box<dyn Policy>> {
    by_name_with(name, PolicyOptions::default())
}

/// The policy called `name` on the command line.
pub fn by_name_with(name: &str, opts: PolicyOptions) -> anyhow::Result<Box<dyn Policy>> {
    Ok(match name {
        "fcfs" => Box::new(fcfs::Fcfs),
        "prefill-first" => Box::new(prefill_first::PrefillFirst),
        "decode-first" => Box::new(decode_first::DecodeFirst),
        "shortest-prompt-first" => Box::new(shortest_prompt_first::ShortestPromptFirst),
        "priority" => Box::new(priority::Priority),
        "shortest-job-first" => Box::new(shortest_job_first::ShortestJobFirst),
        "vtc" => Box::new(vtc::VirtualTokenCounter::default()),
        "deadline" => Box::new(deadline::EarliestDeadline::new(opts.slo_miss)),
        other => anyhow::bail!(
            "unknown scheduling policy '{other}' (known: {})",
            NAMES.join(", ")
        ),
    })
}
