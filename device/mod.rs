//! What runs ops: the [`backend::Backend`] trait and its backends (the CPU reference; CUDA behind
//! the `cuda` feature), the step metadata every backend reads, the paged KV cache's tensors,
//! graph shapes and sampling. Imports nothing else of the crate.

pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod graph_shape;
#[cfg(feature = "kernel-emu")]
pub mod kernel_emu;
pub mod kv_cache;
pub mod panic;
pub mod quant;
pub mod sampling;
pub mod step;
