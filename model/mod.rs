//! What a model *is*: its configuration, its weights on disk, its tokenizer, and the forward pass.

pub mod config;
pub mod default_model;
pub mod dequant;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod gguf_weights;
pub mod gguf_writer;
pub mod llama;
pub mod loader;
pub mod rope;
pub mod safetensors_dir;
pub mod sampled_step;
pub mod tokenizer;
pub mod weights;
