//! Points where a test can reach into a running engine, all in one trait.
//!
//! Production engines run with [`NoHooks`], whose methods do nothing; the only other
//! implementation is the fault plan ([`super::fault`]), which makes chosen requests fail on the
//! real code path so that failure handling is tested where a real bug would strike.

use crate::engine::request::RequestId;

/// Called by the engine and executor threads at fixed points. Every method defaults to doing
/// nothing; a method may panic, and the panic is caught (or not) exactly where a bug's would be.
pub trait EngineHooks: Send + Sync {
    /// The engine thread took request `id` with `prompt`, before queueing it.
    fn on_submit(&self, _id: RequestId, _prompt: &[u32]) {}

    /// Request `id` ended; it is not seen again.
    fn on_finish(&self, _id: RequestId) {}

    /// The executor thread is about to take a step.
    fn before_step(&self) {}

    /// Whether request `id` must be sampled on the host, where
    /// [`before_sampling`](Self::before_sampling) sees each of its samples.
    fn samples_on_host(&self, _id: RequestId) -> bool {
        false
    }

    /// The host sampler is about to draw for request `id`; a panic fails only that request.
    fn before_sampling(&self, _id: RequestId) {}

    /// A generated token of request `id` is about to be detokenized; a panic fails only that
    /// request.
    fn before_detokenizing(&self, _id: RequestId) {}
}

/// The hooks of a production engine: none.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl EngineHooks for NoHooks {}
