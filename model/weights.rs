//! The model's weights on a backend, loaded by HF tensor name from any [`WeightSource`].
//!
//! At load time q|k|v are fused into one matrix and gate|up into another, so a layer runs three
//! big GEMMs instead of five; every tensor's shape is checked against the config first.

use anyhow::{bail, Context, Result};

use super::config::ModelConfig;
use crate::device::backend::Backend;

/// A tensor on the host in f32, row-major, outermost dimension first.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

/// Where weights come from, addressed by HF names (`model.layers.0.self_attn.q_proj.weight`).
pub trait WeightSource {
    /// The file or directory, for error messages.
    fn describe(&self) -> String;
    fn contains(&self, name: &str) -> bool;
    /// The tensor dequantized/converted to f32.
    fn load(&self, name: &str) -> Result<HostTensor>;
}

pub struct LayerWeights<B: Backend> {
    pub attn_norm: B::Tensor,        // (hidden)
    pub qkv: B::Weight,              // (q_dim + 2 * kv_dim, hidden)
    pub qkv_bias: Option<B::Tensor>, // (q_dim + 2 * kv_dim)
    pub q_norm: Option<B::Tensor>,   // (head_dim)
    pub k_norm: Option<B::Tensor>,   // (head_dim)
    pub o: B::Weight,                // (hidden, q_dim)
    pub o_bias: Option<B::Tensor>,   // (hidden)
    pub mlp_norm: B::Tensor,         // (hidden)
    pub gate_up: B::Weight,          // (2 * intermediate, hidden)
    pub down: B::Weight,             // (hidden, intermediate)
}

pub struct LlamaWeights<B: Backend> {
    pub embed: B::Weight, // (vocab, hidden)
    pub layers: Vec<LayerWeights<B>>,
    pub norm: B::Tensor, // (hidden)
    /// (vocab, hidden); `None` when tied to `embed`.
    pub lm_head: Option<B::Weight>,
}

/// Loads tensors from a source and checks their shapes.
struct Fetch<'a> {
    src: &'a dyn WeightSource,
}

impl Fetch<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if !self.src.contains(name) {
            bail!("{}: missing tensor '{name}'", self.src.describe());
        }
        let t = self
            .src
            .load(name)
            .with_context(|| format!("{}: loading tensor '{name}'", self.src.describe()))?;
        if t.shape != shape {
            bail!(
                "{}: tensor '{name}' has shape {:?}, the config implies {:?}",
                self.src.describe(),
                t.shape,
                shape
            );
        }
        Ok(t.data)
    }

    fn get_opt(&self, enabled: bool, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        enabled.then(|| self.get(name, shape)).transpose()
    }
}

fn upload<B: Backend>(b: &B, data: Vec<f32>) -> Result<B::Tensor> {
    b.upload(&data)
}

/// A `[n, k]` matrix for `linear` / `embed`.
fn upload_weight<B: Backend>(b: &B, data: Vec<f32>, n: usize, k: usize) -> Result<B::Weight> {
    b.upload_weight(&data, n, k)
}

fn upload_opt<B: Backend>(b: &B, data: Option<Vec<f32>>) -> Result<Option<B::Tensor>> {
    data.map(|d| b.upload(&d)).transpose()
}

impl<B: Backend> LlamaWeights<B> {
    pub fn load(cfg: &ModelConfig, src: &dyn WeightSource, backend: &B) -> Result<Self> {
        let f = Fetch { src };
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed = upload_weight(backend, f.get("model.embed_tokens.weight", &[v, h])?, v, h)?;
        let layers = (0..cfg.num_layers)
            .map(|i| load_layer(cfg, &f, backend, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = upload(backend, f.get("model.norm.weight", &[h])?)?;
        // Some tied checkpoints still ship lm_head.weight; it equals the embedding then.
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(upload_weight(
                backend,
                f.get("lm_head.weight", &[v, h])?,
                v,
                h,
            )?)
        };
        Ok(LlamaWeights {
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    pub fn lm_head(&self) -> &B::Weight {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

fn load_layer<B: Backend>(
    cfg: &ModelConfig,
    f: &Fetch,
    b: &B,
    i: usize,
) -> Result<LayerWeights<B>> {
    let p = format!("model.layers.{i}");
    let (h, q, kv, hd, inter) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.head_dim,
        cfg.intermediate_size,
    );
    let attn = |w: &str| format!("{p}.self_attn.{w}");
    let mut qkv = f.get(&attn("q_proj.weight"), &[q, h])?;
    qkv.extend(f.get(&attn("k_proj.weight"), &[kv, h])?);
    qkv.extend(f.get(&attn("v_proj.weight"), &[kv, h])?);
    let qkv_bias = if cfg.qkv_bias {
        let mut bias = f.get(&attn("q_proj.bias"), &[q])?;
        bias.extend(f.get(&attn("k_proj.bias"), &[kv])?);
        bias.extend(f.get(&attn("v_proj.bias"), &[kv])?);
        Some(bias)
    } else {
        None
    };
    let mut gate_up = f.get(&format!("{p}.mlp.gate_proj.weight"), &[inter, h])?;
    gate_up.extend(f.get(&format!("{p}.mlp.up_proj.weight"), &[inter, h])?);
    Ok(LayerWeights {
        attn_norm: upload(b, f.get(&format!("{p}.input_layernorm.weight"), &[h])?)?,
        qkv: upload_weight(b, qkv, q + 2 * kv, h)?,
        qkv_bias: upload_opt(b, qkv_bias)?,
        q_norm: upload_opt(b, f.get_opt(cfg.qk_norm, &attn("q_norm.weight"), &[hd])?)?,
        k_norm: upload_opt(b, f.get_opt(cfg.qk_norm, &attn("k_norm.weight"), &[hd])?)?,
        o: upload_weight(b, f.get(&attn("o_proj.weight"), &[h, q])?, h, q)?,
        o_bias: upload_opt(b, f.get_opt(cfg.o_bias, &attn("o_proj.bias"), &[h])?)?,
        mlp_norm: upload(
            b,
            f.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
        )?,
        gate_up: upload_weight(b, gate_up, 2 * inter, h)?,
        down: upload_weight(
            b,
            f.get(&format!("{p}.mlp.down_proj.weight"), &[h, inter])?,
            h,
            inter,
        )?,
    })
}
