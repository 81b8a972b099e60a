//! Counters the grammar code keeps for `/metrics`: shared by a compiler, its compiled grammars
//! and every matcher made from them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct GrammarStats {
    /// Matchers alive now (one per constrained sequence; a leak shows here).
    live_matchers: AtomicI64,
    /// Requests admitted with a constraint.
    constrained_requests: AtomicU64,
    compiles: AtomicU64,
    compile_nanos: AtomicU64,
    masks: AtomicU64,
    mask_nanos: AtomicU64,
    /// Masks sampling had to compute itself, not prepared while the forward pass ran.
    masks_at_sampling: AtomicU64,
}

/// A point-in-time copy of [`GrammarStats`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GrammarStatsSnapshot {
    pub live_matchers: i64,
    pub constrained_requests: u64,
    pub compiles: u64,
    pub compile_seconds: f64,
    pub masks: u64,
    pub mask_seconds: f64,
    pub masks_at_sampling: u64,
}

impl GrammarStats {
    pub fn snapshot(&self) -> GrammarStatsSnapshot {
        GrammarStatsSnapshot {
            live_matchers: self.live_matchers.load(Relaxed),
            constrained_requests: self.constrained_requests.load(Relaxed),
            compiles: self.compiles.load(Relaxed),
            compile_seconds: self.compile_nanos.load(Relaxed) as f64 * 1e-9,
            masks: self.masks.load(Relaxed),
            mask_seconds: self.mask_nanos.load(Relaxed) as f64 * 1e-9,
            masks_at_sampling: self.masks_at_sampling.load(Relaxed),
        }
    }

    pub fn matcher_created(&self) {
        self.live_matchers.fetch_add(1, Relaxed);
    }

    pub fn matcher_dropped(&self) {
        self.live_matchers.fetch_sub(1, Relaxed);
    }

    pub fn request_constrained(&self) {
        self.constrained_requests.fetch_add(1, Relaxed);
    }

    pub fn compiled(&self, took: Duration) {
        self.compiles.fetch_add(1, Relaxed);
        self.compile_nanos.fetch_add(nanos(took), Relaxed);
    }

    pub fn mask_computed(&self, took: Duration) {
        self.masks.fetch_add(1, Relaxed);
        self.mask_nanos.fetch_add(nanos(took), Relaxed);
    }

    pub fn mask_at_sampling(&self) {
        self.masks_at_sampling.fetch_add(1, Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
