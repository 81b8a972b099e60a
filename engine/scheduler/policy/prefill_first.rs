//! Prefill work (running chunks, then admissions) is budgeted before decode tokens: the best time
//! to first token, at the cost of decode stalls while prompts stream in.

use super::{BudgetOrder, Policy};

pub struct PrefillFirst;

impl Policy for PrefillFirst {
    fn budget_order(&self) -> BudgetOrder {
        BudgetOrder::PrefillFirst
    }
}
