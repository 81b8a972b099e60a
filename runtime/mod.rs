//! What *runs* a model: backends (the CPU reference, CUDA later), the paged KV cache and the
//! step metadata every backend reads.

pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod detokenizer;
pub mod engine;
pub mod generate;
pub mod graph_shape;
#[cfg(feature = "kernel-emu")]
pub mod kernel_emu;
pub mod kv;
pub mod kv_cache;
pub mod model_args;
pub mod request;
pub mod sampling;
pub mod scheduler;
pub mod step;
