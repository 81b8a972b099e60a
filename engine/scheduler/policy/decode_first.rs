//! Running requests' decode tokens are budgeted before any prefill: steady inter-token latency
//! at the cost of time to first token under load. Admission is in arrival order, so it starves
//! nobody even without aging.
//!
//! Bound (with aging on, the default; see `scheduler::aging` for the derivation): a request that
//! fits the cache finishes within `max_wait_steps` + Σ (prompt + output + 2) steps of arriving,
//! summed over itself and the requests unfinished when it arrived.

use super::{BudgetOrder, Policy};

pub struct DecodeFirst;

impl Policy for DecodeFirst {
    fn budget_order(&self) -> BudgetOrder {
        BudgetOrder::DecodeFirst
    }
}
