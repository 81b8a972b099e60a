//! Prefill work (running chunks, then admissions) is budgeted before decode tokens: the best time
//! to first token, at the cost of decode stalls while prompts stream in. Only the budget goes that
//! way: a decoder keeps the block for its next token, and preempted requests resume after the
//! decodes, so prefill work never makes a running request preempt itself and recompute cannot
//! crowd out the decodes that would free the cache.

use super::{BudgetOrder, Policy};

pub struct PrefillFirst;

impl Policy for PrefillFirst {
    fn budget_order(&self) -> BudgetOrder {
        BudgetOrder::PrefillFirst
    }
}
