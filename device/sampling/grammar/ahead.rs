//! Masks computed ahead: a step's constrained rows have their masks prepared on a pool of
//! threads while the caller runs the step's forward pass, so sampling finds them ready.
//!
//! A row's mask for step N+1 depends only on its grammar state after the token of step N, which
//! is known before step N+1's forward pass starts: nothing but the sampling waits for it.
//!
//! Matchers started from one compiled grammar share llguidance's lexer cache, which it locks for
//! the whole of a mask (or a token fed): such rows are prepared one after another by one job, so
//! no thread sits blocked on another's lock (nor counts that wait as mask time); rows of
//! different grammars are prepared in parallel. The pool's threads are started once, on the first
//! step with a constrained row.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use super::matcher::ConstraintMatcher;

/// Threads preparing masks, one per core.
#[derive(Default)]
pub struct MaskPool {
    pool: OnceLock<Option<rayon::ThreadPool>>,
}

impl MaskPool {
    /// Runs `during` on this thread while `matchers`' masks are prepared on the pool; returns
    /// when both are done. Where the pool cannot start, the masks are left to be computed at
    /// sampling, as without it.
    pub fn overlap<R>(
        &self,
        matchers: Vec<&mut ConstraintMatcher>,
        during: impl FnOnce() -> R,
    ) -> R {
        let Some(pool) = (!matchers.is_empty()).then(|| self.pool()).flatten() else {
            return during();
        };
        let mut by_grammar: HashMap<usize, Vec<&mut ConstraintMatcher>> = HashMap::new();
        for m in matchers {
            by_grammar.entry(m.grammar_id()).or_default().push(m);
        }
        pool.in_place_scope(|scope| {
            for rows in by_grammar.into_values() {
                scope.spawn(move |_| {
                    for m in rows {
                        // A panicking grammar leaves its mask unprepared: sampling computes it
                        // again, where a failure ends that request only.
                        let _ = catch_unwind(AssertUnwindSafe(|| m.prepare()));
                    }
                });
            }
            during()
        })
    }

    fn pool(&self) -> Option<&rayon::ThreadPool> {
        self.pool
            .get_or_init(|| {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("tandem-masks-{i}"))
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

impl std::fmt::Debug for MaskPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskPool")
            .field("started", &self.pool.get().is_some())
            .finish()
    }
}
