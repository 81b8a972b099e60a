//! The paged KV cache's storage: one K and one V tensor per layer, each
//! `[num_blocks, block_size, num_kv_heads, head_dim]`. Which blocks belong to which sequence is
//! the block allocator's business; this only holds the numbers.

use anyhow::Result;

use super::backend::{Backend, CacheShape};

pub struct KvCache<B: Backend> {
    pub shape: CacheShape,
    /// Per layer: (K, V).
    pub layers: Vec<(B::Tensor, B::Tensor)>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(backend: &B, num_layers: usize, shape: CacheShape) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| {
                Ok((
                    backend.zeros(shape.elements())?,
                    backend.zeros(shape.elements())?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache { shape, layers })
    }

    /// Bytes of K and V per token, over all layers, at `bytes_per_element`.
    pub fn bytes_per_token(
        num_layers: usize,
        num_kv_heads: usize,
        head_dim: usize,
        bytes_per_element: usize,
    ) -> usize {
        2 * num_layers * num_kv_heads * head_dim * bytes_per_element
    }
}
