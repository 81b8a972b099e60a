//! What *runs* a model: backends (the CPU reference, CUDA later), the paged KV cache and the
//! step metadata every backend reads.

pub mod backend;
pub mod cpu;
pub mod generate;
pub mod kv_cache;
pub mod step;
