//! What a model *is*: its configuration, its weights on disk, its tokenizer, chat template and
//! detokenizer, and the forward pass behind [`Model`]. Imports only [`crate::device`].

pub mod chat_template;
pub mod config;
pub mod default_model;
pub mod detokenizer;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod gguf_weights;
pub mod gguf_writer;
pub mod llama;
pub mod loader;
pub mod rope;
pub mod safetensors_dir;
pub mod token_env;
pub mod tokenizer;
pub mod weight_format;
pub mod weights;

use anyhow::Result;

use crate::device::backend::{Backend, CacheShape};
use crate::device::kv_cache::KvCache;
use crate::device::step::StepInput;
use config::ModelConfig;

/// The most a single step may hold.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    /// Token rows per step.
    pub max_tokens: usize,
    /// Sequences (and logit rows) per step.
    pub max_seqs: usize,
}

/// A model's forward pass over a [`Backend`]: what the runner needs of a model family. The runner
/// owns the step's metadata and decides when ops run (eagerly, captured into a graph, launched
/// ahead); the model only checks a step and issues its ops.
pub trait Model<B: Backend>: Send {
    fn config(&self) -> &ModelConfig;

    /// The largest step the model's workspace holds.
    fn limits(&self) -> StepLimits;

    fn backend(&self) -> &B;

    /// Everything a backend would otherwise have to trust about `step`: sizes, ranges,
    /// consistency with the model and with `kv`.
    fn check_step(&self, step: &StepInput, kv: &KvCache<B>) -> Result<()>;

    /// Issues the forward pass's ops for `step`, its metadata already in `meta`; the logits of
    /// the rows in `step.logits_indices` land in [`logits`](Self::logits). Launches only: no
    /// allocation, no wait, no copy, so a backend may capture the ops into a graph.
    fn forward_ops(&mut self, meta: &B::Meta, step: &StepInput, kv: &mut KvCache<B>) -> Result<()>;

    /// `(max_seqs, vocab)` on the device: the last step's logits, one row per wanted row.
    fn logits(&self) -> &B::Tensor;

    /// A paged cache of `num_blocks` blocks of `block_size` tokens for this model.
    fn new_kv_cache(&self, num_blocks: usize, block_size: usize) -> Result<KvCache<B>> {
        let cfg = self.config();
        let shape = CacheShape {
            num_blocks,
            block_size,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
        };
        KvCache::new(self.backend(), cfg.num_layers, shape)
    }
}
