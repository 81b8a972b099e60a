//! Prefill work (running chunks, then admissions) is budgeted before decode tokens: the best time
//! to first token, at the cost of decode stalls while prompts stream in. Only the budget goes that
//! way: a decoder keeps the block for its next token, and preempted requests resume after the
//! decodes, so prefill work never makes a running request preempt itself and recompute cannot
//! crowd out the decodes that would free the cache. Without aging a decoder still waits while
//! prompts fill the budget, for as long as the running slots and the cache let new ones in.
//!
//! Bound (with aging on, the default; see `scheduler::aging` for the derivation): a request that
//! fits the cache finishes within `max_wait_steps` + Σ (prompt + output + 2) steps of arriving,
//! summed over itself and the requests unfinished when it arrived.
//! Aging serves such a decoder ahead of the prompts once it is overdue.

use super::{BudgetOrder, Policy};

pub struct PrefillFirst;

impl Policy for PrefillFirst {
    fn budget_order(&self) -> BudgetOrder {
        BudgetOrder::PrefillFirst
    }
}
