//! `tandem bench decode`: the time of one decode step at several batch sizes, against the memory
//! roofline.
//!
//! A decode step must at least read every weight once and every cached key and value of every
//! sequence once, so its floor is (weight bytes + KV bytes read) ÷ the memory bandwidth. The
//! bandwidth is a measured copy (as benches/kernels.rs measures it: bytes read plus bytes
//! written per second), so `step / roofline` says how far a step is from what the memory allows:
//! near 1 the step is bandwidth-bound, well above it time goes to launches, host work or
//! kernels that waste bandwidth.
//!
//! The model runs on its own here, without the engine: the steps are built up front (B sequences,
//! one new token each, `--context` tokens already cached, distinct block tables), so a step's time
//! is the forward pass, the metadata upload and getting B tokens to the host (sampled on the
//! device when the backend can, else the logits downloaded and argmax taken on the host), and
//! nothing of the scheduler. The KV cache's contents stay zero: only the bytes read matter.

use anyhow::{ensure, Result};
use std::hint::black_box;
use std::time::Instant;

use crate::cli::model_args::{Device, ModelArgs};
use crate::device::backend::Backend;
use crate::device::sampling::DeviceSampling;
use crate::device::step::{SeqChunk, StepInput};
use crate::model::config::ModelConfig;
use crate::model::loader::ModelSource;
use crate::model::StepLimits;
use crate::runner::Runner;

/// Untimed steps before the timed ones (allocator, caches, graph capture).
const WARMUP: usize = 3;

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch sizes (sequences per step), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub batch: Vec<usize>,
    /// Tokens already in each sequence's cache before the first step.
    #[arg(long, default_value_t = 1024)]
    pub context: usize,
    /// Timed steps per batch size (after a few untimed warm-up steps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// The memory bandwidth for the roofline, in GB/s counting bytes read plus bytes written
    /// (as benches/kernels.rs reports a copy); measured with a large copy when absent.
    #[arg(long)]
    pub copy_gbps: Option<f64>,
    /// The pure-decode attention kernel on CUDA: `auto` (the tensor-core kernel where it
    /// applies: bf16, head_dim 64 or 128, up to 8 q heads per kv head, a block size that is a
    /// multiple of 16) or `scalar` (never the tensor cores), to compare the two on one model.
    #[arg(long, value_enum, default_value_t = DecodeAttention::Auto)]
    pub decode_attention: DecodeAttention,
}

/// `--decode-attention`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeAttention {
    Auto,
    Scalar,
}

impl DecodeArgs {
    fn check(&self) -> Result<()> {
        ensure!(!self.batch.is_empty(), "--batch needs at least one size");
        ensure!(
            self.batch.iter().all(|&b| b > 0),
            "--batch sizes must be positive (got {:?})",
            self.batch
        );
        ensure!(self.steps > 0, "--steps must be positive");
        ensure!(self.block_size > 0, "--block-size must be positive");
        if let Some(g) = self.copy_gbps {
            ensure!(g.is_finite() && g > 0.0, "--copy-gbps must be positive");
        }
        Ok(())
    }

    /// Tokens each sequence holds after the last step.
    fn final_len(&self) -> usize {
        self.context + WARMUP + self.steps
    }

    fn max_batch(&self) -> usize {
        self.batch.iter().copied().max().unwrap_or(1)
    }

    /// One model serves every batch size: sized for the largest.
    fn limits(&self) -> StepLimits {
        StepLimits {
            max_tokens: self.max_batch(),
            max_seqs: self.max_batch(),
        }
    }

    /// Opens the model (after the device), checking the steps fit its context.
    fn open_model(&self) -> Result<ModelSource> {
        let source = self.model.open_source()?;
        let max_pos = source.config.max_position_embeddings;
        ensure!(
            self.final_len() <= max_pos,
            "--context {} plus {} steps ({} warm-up) reaches position {}, beyond the model's \
             context of {max_pos}",
            self.context,
            self.steps + WARMUP,
            WARMUP,
            self.final_len()
        );
        Ok(source)
    }
}

pub fn run(args: DecodeArgs) -> Result<()> {
    args.check()?;
    let scalar_decode = args.decode_attention == DecodeAttention::Scalar;
    match args.model.open_device_with(scalar_decode)? {
        Device::Cpu(backend) => {
            ensure!(
                args.decode_attention == DecodeAttention::Auto,
                "--decode-attention chooses between CUDA kernels; it needs --device cuda"
            );
            let copy_gbs = match args.copy_gbps {
                Some(g) => g,
                None => cpu_copy_gbs(),
            };
            println!(
                "device: cpu ({} threads)  dtype: f32",
                rayon::current_num_threads()
            );
            let (model, _tokenizer) =
                crate::runner::load(args.open_model()?, backend, args.limits())?;
            bench(model, &args, copy_gbs, std::mem::size_of::<f32>())?;
            Ok(())
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(backend) => {
            // Measured before the model is loaded, so its 2 GiB are free again for the KV cache.
            let copy_gbs = match args.copy_gbps {
                Some(g) => g,
                None => cuda_copy_gbs(&backend)?,
            };
            let dtype = backend.dtype();
            println!(
                "device: {}  dtype: {dtype}  cuda graphs: {}  decode attention: {:?}  gemm: {:?}  \
                 pdl: {}",
                backend.device_name()?,
                if backend.cuda_graphs() { "on" } else { "off" },
                args.decode_attention,
                backend.gemm_path(),
                if backend.pdl() { "on" } else { "off" },
            );
            let (model, _tokenizer) =
                crate::runner::load(args.open_model()?, backend, args.limits())?;
            let model = bench(model, &args, copy_gbs, dtype.size())?;
            print_gemm_tunings(model.backend());
            Ok(())
        }
    }
}

/// What `--gemm auto` measured for each product shape and picked, one line each.
#[cfg(feature = "cuda")]
fn print_gemm_tunings(b: &crate::device::cuda::CudaBackend) {
    let tunings = b.gemm_tunings();
    if tunings.is_empty() {
        return;
    }
    println!("gemm tuning (median us per product; n x k at the rows timed):");
    for t in tunings {
        let times: Vec<String> = t
            .times_us
            .iter()
            .map(|(name, us)| format!("{name} {us:.1}"))
            .collect();
        let rejected = if t.rejected.is_empty() {
            String::new()
        } else {
            format!(
                "  (disagreed with cuBLAS, not timed: {})",
                t.rejected.join(", ")
            )
        };
        println!(
            "  {:>6} x {:<5} rows {:>2}: {}  -> {}{rejected}",
            t.n,
            t.k,
            t.rows,
            times.join(", "),
            t.picked
        );
    }
}

/// A 1 GiB device-to-device copy, median of 10 between CUDA events; GB/s of bytes read plus
/// written (benches/kernels.rs's ceiling).
#[cfg(feature = "cuda")]
fn cuda_copy_gbs(b: &crate::device::cuda::CudaBackend) -> Result<f64> {
    const BYTES: usize = 1 << 30;
    let stream = b.stream();
    let src = stream.alloc_zeros::<u8>(BYTES)?;
    let mut dst = stream.alloc_zeros::<u8>(BYTES)?;
    let us = b.time_us(3, 10, || Ok(stream.memcpy_dtod(&src, &mut dst)?))?;
    Ok(2.0 * BYTES as f64 / (us * 1e-6) / 1e9)
}

/// A 256 MiB memcpy on the host, median of 5; GB/s of bytes read plus written.
fn cpu_copy_gbs() -> f64 {
    const BYTES: usize = 256 << 20;
    // Non-zero source and a first untimed copy, so every page is really mapped before timing.
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    dst.copy_from_slice(&src);
    let mut secs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
            t.elapsed().as_secs_f64()
        })
        .collect();
    2.0 * BYTES as f64 / median(&mut secs) / 1e9
}

/// Weight bytes one decode step of `batch` sequences must read: every matrix and norm once, the
/// LM head once, and of the embedding table (when it is not the LM head) only the `batch` rows
/// looked up. Params × `dtype_bytes` (the backends store every weight in their dtype).
pub fn weight_bytes_read(cfg: &ModelConfig, batch: usize, dtype_bytes: usize) -> f64 {
    let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
    let qkv_width = cfg.q_dim() + 2 * cfg.kv_dim();
    let mut layer = h * qkv_width + cfg.q_dim() * h + h * 2 * inter + inter * h + 2 * h;
    if cfg.qkv_bias {
        layer += qkv_width;
    }
    if cfg.o_bias {
        layer += h;
    }
    if cfg.qk_norm {
        layer += 2 * cfg.head_dim;
    }
    let lm_head = cfg.vocab_size * h;
    let embed_rows = if cfg.tie_word_embeddings {
        0 // the LM head's read covers them
    } else {
        batch.min(cfg.vocab_size) * h
    };
    let params = cfg.num_layers * layer + lm_head + embed_rows + h;
    (params * dtype_bytes) as f64
}

/// K and V bytes the attention of `batch` sequences of `ctx` cached tokens reads (a sliding
/// window caps what each query sees).
pub fn kv_bytes_read(cfg: &ModelConfig, batch: usize, ctx: f64, dtype_bytes: usize) -> f64 {
    let seen = cfg.sliding_window.map_or(ctx, |w| ctx.min(w as f64));
    let per_token = cfg.num_layers * 2 * cfg.kv_dim() * dtype_bytes;
    batch as f64 * seen * per_token as f64
}

/// The decode steps of one batch size: step `i` gives each of `batch` sequences one token at
/// position `context + i`. Sequence `s` owns blocks `s * blocks_per_seq ..`.
fn decode_steps(args: &DecodeArgs, batch: usize, vocab: usize) -> Result<Vec<StepInput>> {
    let blocks_per_seq = args.final_len().div_ceil(args.block_size);
    let tables: Vec<Vec<u32>> = (0..batch)
        .map(|s| {
            let first = s * blocks_per_seq;
            (first..first + blocks_per_seq).map(|b| b as u32).collect()
        })
        .collect();
    // Any ids work (the weights are what is read); spread them over the vocabulary.
    let tokens: Vec<[u32; 1]> = (0..batch)
        .map(|s| [((100 + 7919 * s) % vocab) as u32])
        .collect();
    (0..WARMUP + args.steps)
        .map(|i| {
            let chunks: Vec<SeqChunk> = (0..batch)
                .map(|s| SeqChunk {
                    tokens: &tokens[s],
                    num_cached: args.context + i,
                    block_table: &tables[s],
                    want_logits: true,
                })
                .collect();
            StepInput::build(&chunks, args.block_size)
        })
        .collect()
}

/// One row of the table.
struct Row {
    batch: usize,
    median_ms: f64,
    mean_ms: f64,
    roofline_ms: f64,
}

/// Times every batch size on `model` and prints the table.
fn bench<B: Backend>(
    mut model: Runner<B>,
    args: &DecodeArgs,
    copy_gbs: f64,
    dtype_bytes: usize,
) -> Result<Runner<B>> {
    let cfg = model.cfg().clone();
    let blocks_per_seq = args.final_len().div_ceil(args.block_size);
    let mut kv = model.new_kv_cache(args.max_batch() * blocks_per_seq, args.block_size)?;
    // The KV a timed step reads, on average over the timed steps (the context grows by one a step).
    let mean_ctx = (args.context + 1 + WARMUP) as f64 + (args.steps - 1) as f64 / 2.0;
    println!(
        "copy bandwidth: {copy_gbs:.1} GB/s (read + written){}  weights read per step: {:.1} MB",
        if args.copy_gbps.is_some() {
            " (given)"
        } else {
            ""
        },
        weight_bytes_read(&cfg, 1, dtype_bytes) / 1e6
    );
    println!(
        "{:>6} {:>8} {:>10} {:>10} {:>12} {:>12} {:>14}",
        "batch", "context", "ms/step", "mean ms", "tokens/s", "roofline ms", "step/roofline"
    );
    let greedy = DeviceSampling::GREEDY;
    let mut sampled = Vec::new();
    let mut logits = Vec::new();
    for &batch in &args.batch {
        let steps = decode_steps(args, batch, cfg.vocab_size)?;
        let params = vec![greedy; batch];
        let mut ms = Vec::with_capacity(args.steps);
        for (i, step) in steps.iter().enumerate() {
            let t = Instant::now();
            sampled.clear();
            // Sampled on the device when the backend can (the step is collected, so the time is
            // the step's, not its launch's); otherwise the forward pass here and argmax on the
            // host (forward_sample runs nothing then).
            if !model.forward_sample(step, &mut kv, &params, &mut sampled)? {
                model.forward_into(step, &mut kv, &mut logits)?;
                for row in logits.chunks_exact(cfg.vocab_size) {
                    black_box(argmax(row));
                }
            }
            black_box(&sampled);
            if i >= WARMUP {
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        let bytes = weight_bytes_read(&cfg, batch, dtype_bytes)
            + kv_bytes_read(&cfg, batch, mean_ctx, dtype_bytes);
        let row = Row {
            batch,
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            median_ms: median(&mut ms),
            roofline_ms: bytes / (copy_gbs * 1e9) * 1e3,
        };
        print_row(&row, args.context);
    }
    Ok(model)
}

fn print_row(r: &Row, context: usize) {
    let ratio = r.median_ms / r.roofline_ms;
    println!(
        "{:>6} {:>8} {:>10.3} {:>10.3} {:>12.1} {:>12.3} {:>14.2}",
        r.batch,
        context,
        r.median_ms,
        r.mean_ms,
        r.batch as f64 / (r.median_ms * 1e-3),
        r.roofline_ms,
        ratio
    );
    println!(
        "DECODE\t{}\t{context}\t{:.4}\t{:.4}\t{ratio:.3}",
        r.batch, r.median_ms, r.roofline_ms
    );
}

/// The first maximum, as the greedy sampler picks it.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Llama-3.2-1B's published configuration (tied embeddings).
    fn llama_1b() -> ModelConfig {
        ModelConfig::from_hf_json(&serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
            "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0, "tie_word_embeddings": true
        }))
        .unwrap()
    }

    #[test]
    fn tied_weights_read_are_the_published_parameter_count() {
        // 1,235,814,400 parameters, in bf16.
        assert_eq!(weight_bytes_read(&llama_1b(), 64, 2), 2.0 * 1_235_814_400.0);
    }

    #[test]
    fn an_untied_embedding_costs_only_its_looked_up_rows() {
        let mut cfg = llama_1b();
        cfg.tie_word_embeddings = false;
        let extra = weight_bytes_read(&cfg, 4, 2) - weight_bytes_read(&llama_1b(), 4, 2);
        assert_eq!(extra, (4 * 2048 * 2) as f64);
    }

    #[test]
    fn kv_read_counts_keys_and_values_of_every_layer() {
        // 16 layers × (K + V) × 8 heads × 64 dims × 2 bytes = 32 KiB a token.
        assert_eq!(kv_bytes_read(&llama_1b(), 2, 10.0, 2), 2.0 * 10.0 * 32768.0);
    }
}
