//! Fault injection, for the tests of failure handling only.
//!
//! Production engines start through [`super::start`], which injects nothing; tests call
//! [`super::start_with_faults`] with a [`FaultPlan`] that marks requests by their exact prompt.
//! A marked request makes the named part of the engine panic, on the real code path (through
//! [`EngineHooks`]): the panic is caught (or not) exactly where a real bug's would be.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use super::hooks::EngineHooks;
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
    pub min_step_time: Option<Duration>,
}

impl FaultPlan {
    /// The plan as engine hooks, which track the marked requests while they run.
    pub(super) fn into_hooks(self) -> FaultHooks {
        FaultHooks {
            plan: self,
            sampling: Mutex::default(),
            detokenizing: Mutex::default(),
        }
    }
}

fn matches(marker: &Option<Vec<u32>>, prompt: &[u32]) -> bool {
    marker.as_deref() == Some(prompt)
}

/// A [`FaultPlan`] at work. Requests are matched by prompt on submission (the engine thread
/// sees prompts) and remembered by id (the executor's samplers see only ids) until they finish.
pub(super) struct FaultHooks {
    plan: FaultPlan,
    sampling: Mutex<HashSet<RequestId>>,
    detokenizing: Mutex<HashSet<RequestId>>,
}

fn marked(set: &Mutex<HashSet<RequestId>>, id: RequestId) -> bool {
    set.lock().is_ok_and(|s| s.contains(&id))
}

impl EngineHooks for FaultHooks {
    fn on_submit(&self, id: RequestId, prompt: &[u32]) {
        if matches(&self.plan.panic_engine, prompt) {
            panic!("injected engine fault");
        }
        for (marker, set) in [
            (&self.plan.panic_sampling, &self.sampling),
            (&self.plan.panic_detokenizing, &self.detokenizing),
        ] {
            if matches(marker, prompt) {
                if let Ok(mut s) = set.lock() {
                    s.insert(id);
                }
            }
        }
    }

    fn on_finish(&self, id: RequestId) {
        for set in [&self.sampling, &self.detokenizing] {
            if let Ok(mut s) = set.lock() {
                s.remove(&id);
            }
        }
    }

    fn before_step(&self) {
        if let Some(t) = self.plan.min_step_time {
            std::thread::sleep(t);
        }
    }

    fn samples_on_host(&self, id: RequestId) -> bool {
        marked(&self.sampling, id)
    }

    fn before_sampling(&self, id: RequestId) {
        // The lock is released before the panic, so the set is never poisoned.
        let inject = marked(&self.sampling, id);
        assert!(!inject, "injected sampling fault");
    }

    fn before_detokenizing(&self, id: RequestId) {
        let inject = marked(&self.detokenizing, id);
        assert!(!inject, "injected detokenization fault");
    }
}
