//! tandem — an LLM inference server written from scratch.
//!
//! A request flows one way: `server` validates it, the engine in `runtime` schedules it into flat
//! batches, and `model` runs the forward pass on a [`runtime::backend::Backend`] (the CPU
//! reference backend here; CUDA behind the `cuda` feature).

pub mod model;
pub mod runtime;
pub mod server;
pub mod sim;
