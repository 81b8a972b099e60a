//! Fault injection, for the tests of failure handling only.
//!
//! Production engines start through [`super::start`], which injects nothing; tests call
//! [`super::start_with_faults`] with a [`FaultPlan`] that marks requests by their exact prompt.
//! A marked request makes the named part of the engine panic, on the real code path: the panic is
//! caught (or not) exactly where a real bug's would be.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::engine::request::RequestId;

/// Which requests make which part of the engine panic. Each entry is a prompt (token ids); a
/// request whose prompt is exactly that triggers the fault.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// The executor's sampler panics on every sample of such a request.
    pub panic_sampling: Option<Vec<u32>>,
    /// The engine thread's detokenizer panics on every token of such a request.
    pub panic_detokenizing: Option<Vec<u32>>,
    /// The engine thread itself panics when such a request is submitted.
    pub panic_engine: Option<Vec<u32>>,
    /// Every step takes at least this long, as on a slow device: a test that must act while
    /// requests are mid-generation gets a window that a busy machine's pauses cannot close (the
    /// tiny test model otherwise generates 240 tokens in about 0.1 s).
    pub min_step_time: Option<std::time::Duration>,
}

impl FaultPlan {
    pub(crate) fn matches(marker: &Option<Vec<u32>>, prompt: &[u32]) -> bool {
        marker.as_deref() == Some(prompt)
    }
}

/// The ids of requests marked for a fault, shared by the engine thread (which sees prompts and
/// marks them) and the executor (whose samplers see only ids).
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultySet(Arc<Mutex<HashSet<RequestId>>>);

impl FaultySet {
    pub fn mark(&self, id: RequestId) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(id);
        }
    }

    pub fn unmark(&self, id: RequestId) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&id);
        }
    }

    pub fn contains(&self, id: RequestId) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(&id))
    }
}
