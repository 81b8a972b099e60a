//! tandem — an LLM inference server written from scratch.
//!
//! The layers point one way; each module imports only the ones listed before it:
//!
//! - [`device`]: what runs ops — the [`device::backend::Backend`] trait, step metadata, KV cache
//!   tensors, sampling, the CPU reference backend and (feature `cuda`) the CUDA backend.
//! - [`model`]: what a model is — config, weights, tokenizer, chat template, detokenizer, and the
//!   forward pass behind [`model::Model`].
//! - [`runner`]: runs a model step by step — metadata slots, graph shapes, launched steps.
//! - [`engine`]: continuous batching — scheduler, KV block allocator, executor, handles.
//! - [`server`] (the OpenAI HTTP API) and [`sim`] (the scheduler against a cost model).
//! - [`cli`]: the commands and their arguments.

pub mod cli;
pub mod device;
pub mod engine;
pub mod model;
pub mod runner;
pub mod server;
pub mod sim;
