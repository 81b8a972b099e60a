//! Sizing the KV cache from the GPU's memory (`--gpu-memory-utilization`).
//!
//! The cache gets whatever the model leaves: after the weights are loaded, one warm-up forward
//! pass at the largest step the engine will run (max_batch_tokens tokens over max_num_seqs
//! sequences, then a decode step of every sequence) touches every workspace, including the ones
//! allocated lazily (cuBLAS's), so the memory in use afterwards is the memory the engine needs
//! besides the cache. The cache then takes `total × utilization − used`, capped at twice what
//! max_num_seqs sequences at the model's full context can hold (a small model on a large GPU
//! would otherwise get millions of blocks, and the host-side allocator tens of bytes for each,
//! for nothing but prefix-cache entries). The CPU backend keeps its fixed block count.

use anyhow::{bail, Result};

/// Blocks that fit in `total × utilization − used` bytes at `bytes_per_block` each, or an error
/// that says why none do.
pub fn blocks_for_budget(
    total: usize,
    used: usize,
    utilization: f64,
    bytes_per_block: usize,
) -> Result<usize> {
    if !(utilization > 0.0 && utilization <= 1.0) {
        bail!("--gpu-memory-utilization must be in (0, 1], got {utilization}");
    }
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let allowed = total as f64 * utilization;
    let budget = allowed - used as f64;
    let blocks = if budget > 0.0 {
        (budget / bytes_per_block.max(1) as f64) as usize
    } else {
        0
    };
    if blocks == 0 {
        bail!(
            "no room for the KV cache: the model and its workspaces use {:.2} GiB of the {:.2} GiB \
             that --gpu-memory-utilization {utilization} allows (of {:.2} GiB on the device); \
             raise it, or lower --max-batch-tokens / --max-num-seqs",
            gib(used as f64),
            gib(allowed),
            gib(total as f64)
        );
    }
    Ok(blocks)
}

#[cfg(feature = "cuda")]
pub use self::cuda::blocks_from_free_memory;

#[cfg(feature = "cuda")]
mod cuda {
    use anyhow::{Context, Result};

    use super::blocks_for_budget;
    use crate::device::cuda::CudaBackend;
    use crate::device::kv_cache::KvCache;
    use crate::device::step::{SeqChunk, StepInput};
    use crate::runner::Runner;

    /// Runs the warm-up passes on `model`, then sizes the cache from the memory they leave.
    pub fn blocks_from_free_memory(
        model: &mut Runner<CudaBackend>,
        block_size: usize,
        utilization: f64,
    ) -> Result<usize> {
        warm_up(model, block_size).context("the warm-up forward pass that sizes the KV cache")?;
        let backend = model.backend();
        backend.synchronize()?;
        let (free, total) = backend.memory_info()?;
        let cfg = model.cfg();
        let bytes_per_block = KvCache::<CudaBackend>::bytes_per_token(
            cfg.num_layers,
            cfg.num_kv_heads,
            cfg.head_dim,
            backend.dtype().size(),
        ) * block_size;
        let fit = blocks_for_budget(total, total - free, utilization, bytes_per_block)?;
        let cap = 2 * model.limits().max_seqs * cfg.max_position_embeddings.div_ceil(block_size);
        let blocks = fit.min(cap.max(1));
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        tracing::info!(
            blocks,
            fit,
            cap,
            tokens = blocks * block_size,
            cache_gib = format!("{:.2}", gib(blocks * bytes_per_block)),
            used_gib = format!("{:.2}", gib(total - free)),
            total_gib = format!("{:.2}", gib(total)),
            utilization,
            "KV cache sized from free GPU memory"
        );
        Ok(blocks)
    }

    /// One prefill step of the model's largest shape (max_tokens rows over max_seqs
    /// sequences, each wanting logits), then one decode step of every sequence, on a cache just
    /// large enough; the cache is freed on return.
    fn warm_up(model: &mut Runner<CudaBackend>, block_size: usize) -> Result<()> {
        let (max_tokens, max_seqs) = (model.limits().max_tokens, model.limits().max_seqs);
        let max_len = model.cfg().max_position_embeddings.saturating_sub(1).max(1);
        let seqs = max_seqs.min(max_tokens).max(1);
        // Rows per sequence: max_tokens spread evenly, each within the model's context.
        let lens: Vec<usize> = (0..seqs)
            .map(|i| (max_tokens / seqs + usize::from(i < max_tokens % seqs)).clamp(1, max_len))
            .collect();
        let per_seq: Vec<usize> = lens.iter().map(|l| (l + 1).div_ceil(block_size)).collect();
        let kv_blocks: usize = per_seq.iter().sum();
        let mut kv = model.new_kv_cache(kv_blocks, block_size)?;
        let mut next = 0u32;
        let tables: Vec<Vec<u32>> = per_seq
            .iter()
            .map(|&n| {
                let t = (next..next + n as u32).collect();
                next += n as u32;
                t
            })
            .collect();
        let tokens = vec![0u32; lens.iter().max().copied().unwrap_or(1) + 1];
        let chunks = |decode: bool| -> Vec<SeqChunk<'_>> {
            lens.iter()
                .zip(&tables)
                .map(|(&len, table)| SeqChunk {
                    tokens: if decode {
                        &tokens[len..len + 1]
                    } else {
                        &tokens[..len]
                    },
                    num_cached: if decode { len } else { 0 },
                    block_table: table,
                    want_logits: true,
                })
                .collect()
        };
        for decode in [false, true] {
            let step = StepInput::build(&chunks(decode), block_size)?;
            model.forward(&step, &mut kv)?;
        }
        model.backend().synchronize()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_takes_what_the_model_leaves() {
        let gib = 1usize << 30;
        // 80 GiB device, 16 GiB used, 0.75: 60 - 16 = 44 GiB of 2 MiB blocks.
        let blocks = blocks_for_budget(80 * gib, 16 * gib, 0.75, 2 << 20).unwrap();
        assert_eq!(blocks, 44 * 512);
    }

    #[test]
    fn no_room_is_an_error_that_says_why() {
        let gib = 1usize << 30;
        let e = blocks_for_budget(10 * gib, 9 * gib, 0.9, 1 << 20).unwrap_err();
        assert!(format!("{e}").contains("no room for the KV cache"), "{e}");
        assert!(blocks_for_budget(10 * gib, gib, 1.5, 1 << 20).is_err());
        assert!(blocks_for_budget(10 * gib, gib, 0.0, 1 << 20).is_err());
    }
}
