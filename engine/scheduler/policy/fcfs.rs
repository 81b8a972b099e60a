//! First come, first served: admission and budget in arrival order (the default). It starves
//! nobody even without aging: no later arrival is admitted ahead of a waiting request.
//!
//! Bound (with aging on, the default; see `scheduler::aging` for the derivation): a request that
//! fits the cache finishes within `max_wait_steps` + Σ (prompt + output + 2) steps of arriving,
//! summed over itself and the requests unfinished when it arrived.

use super::Policy;

pub struct Fcfs;

impl Policy for Fcfs {}
