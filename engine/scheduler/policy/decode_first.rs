//! Running requests' decode tokens are budgeted before any prefill: steady inter-token latency
//! at the cost of time to first token under load.

use super::{BudgetOrder, Policy};

pub struct DecodeFirst;

impl Policy for DecodeFirst {
    fn budget_order(&self) -> BudgetOrder {
        BudgetOrder::DecodeFirst
    }
}
