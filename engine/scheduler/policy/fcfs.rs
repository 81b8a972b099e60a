//! First come, first served: admission and budget in arrival order (the default).

use super::Policy;

pub struct Fcfs;

impl Policy for Fcfs {}
