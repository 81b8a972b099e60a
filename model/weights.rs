//! The model's weights on a backend, loaded by HF tensor name from any [`WeightSource`].
//!
//! At load time q|k|v are fused into one matrix and gate|up into another, so a layer runs three
//! big GEMMs instead of five; every tensor's shape is checked against the config first. Each
//! matrix reaches the backend as f32 or in GGML blocks, as the [`WeightFormat`] says.

use std::cell::RefCell;

use anyhow::{bail, Context, Result};

use super::config::ModelConfig;
use super::weight_format::{HostMatrix, WeightFootprint, WeightFormat};
use crate::device::backend::Backend;
use crate::device::quant::matrix::QuantMatrix;

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
    /// The 2-D tensor in its GGML blocks when it is stored block-quantised (in HF row order);
    /// `None` for a float tensor or a source that has no blocks.
    fn load_blocks(&self, _name: &str) -> Result<Option<QuantMatrix>> {
        Ok(None)
    }
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
    /// What the weights took on the host at load, by form.
    pub footprint: WeightFootprint,
}

/// Loads tensors from a source, checks their shapes, and uploads them in the chosen form.
struct Fetch<'a, B: Backend> {
    src: &'a dyn WeightSource,
    backend: &'a B,
    format: WeightFormat,
    footprint: RefCell<WeightFootprint>,
}

impl<B: Backend> Fetch<'_, B> {
    fn check_present(&self, name: &str) -> Result<()> {
        if !self.src.contains(name) {
            bail!("{}: missing tensor '{name}'", self.src.describe());
        }
        Ok(())
    }

    fn shape_error(&self, name: &str, got: &[usize], want: &[usize]) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: tensor '{name}' has shape {got:?}, the config implies {want:?}",
            self.src.describe()
        )
    }

    /// A tensor in f32.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.check_present(name)?;
        let t = self
            .src
            .load(name)
            .with_context(|| format!("{}: loading tensor '{name}'", self.src.describe()))?;
        if t.shape != shape {
            return Err(self.shape_error(name, &t.shape, shape));
        }
        Ok(t.data)
    }

    /// A `[n, k]` matrix in the form the format asks for: its blocks when the source has them
    /// (unless the format is f32), otherwise f32 (or Q8_0 blocks quantised here).
    fn matrix(&self, name: &str, n: usize, k: usize) -> Result<HostMatrix> {
        if self.format != WeightFormat::F32 {
            self.check_present(name)?;
            let blocks = self
                .src
                .load_blocks(name)
                .with_context(|| format!("{}: loading tensor '{name}'", self.src.describe()))?;
            if let Some(m) = blocks {
                if (m.n(), m.k()) != (n, k) {
                    return Err(self.shape_error(name, &[m.n(), m.k()], &[n, k]));
                }
                return Ok(HostMatrix::Blocks(m));
            }
        }
        HostMatrix::from_f32(self.get(name, &[n, k])?, n, k, self.format, name)
    }

    fn get_opt(&self, enabled: bool, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        enabled.then(|| self.get(name, shape)).transpose()
    }

    fn upload(&self, data: Vec<f32>) -> Result<B::Tensor> {
        self.footprint.borrow_mut().add_f32(data.len());
        self.backend.upload(&data)
    }

    fn upload_opt(&self, data: Option<Vec<f32>>) -> Result<Option<B::Tensor>> {
        data.map(|d| self.upload(d)).transpose()
    }

    fn upload_matrix(&self, m: HostMatrix) -> Result<B::Weight> {
        m.upload(self.backend, &mut self.footprint.borrow_mut())
    }

    /// A tensor straight to the backend as a `[n, k]` weight.
    fn weight(&self, name: &str, n: usize, k: usize) -> Result<B::Weight> {
        self.upload_matrix(self.matrix(name, n, k)?)
    }

    /// Matrices of `k` columns stacked into one weight, `(name, rows)` in order.
    fn fused(&self, parts: &[(String, usize)], k: usize) -> Result<B::Weight> {
        let parts = parts
            .iter()
            .map(|(name, n)| self.matrix(name, *n, k))
            .collect::<Result<Vec<_>>>()?;
        self.upload_matrix(HostMatrix::stack(parts)?)
    }
}

impl<B: Backend> LlamaWeights<B> {
    pub fn load(
        cfg: &ModelConfig,
        src: &dyn WeightSource,
        backend: &B,
        format: WeightFormat,
    ) -> Result<Self> {
        let f = Fetch {
            src,
            backend,
            format,
            footprint: RefCell::default(),
        };
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let embed = f.weight("model.embed_tokens.weight", v, h)?;
        let layers = (0..cfg.num_layers)
            .map(|i| load_layer(cfg, &f, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = f.upload(f.get("model.norm.weight", &[h])?)?;
        // Some tied checkpoints still ship lm_head.weight; it equals the embedding then.
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(f.weight("lm_head.weight", v, h)?)
        };
        let footprint = f.footprint.into_inner();
        tracing::info!(%format, "weights: {footprint}");
        Ok(LlamaWeights {
            embed,
            layers,
            norm,
            lm_head,
            footprint,
        })
    }

    pub fn lm_head(&self) -> &B::Weight {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

fn load_layer<B: Backend>(cfg: &ModelConfig, f: &Fetch<B>, i: usize) -> Result<LayerWeights<B>> {
    let p = format!("model.layers.{i}");
    let (h, q, kv, hd, inter) = (
        cfg.hidden_size,
        cfg.q_dim(),
        cfg.kv_dim(),
        cfg.head_dim,
        cfg.intermediate_size,
    );
    let attn = |w: &str| format!("{p}.self_attn.{w}");
    let qkv_bias = if cfg.qkv_bias {
        let mut bias = f.get(&attn("q_proj.bias"), &[q])?;
        bias.extend(f.get(&attn("k_proj.bias"), &[kv])?);
        bias.extend(f.get(&attn("v_proj.bias"), &[kv])?);
        Some(bias)
    } else {
        None
    };
    let qkv_parts = [
        (attn("q_proj.weight"), q),
        (attn("k_proj.weight"), kv),
        (attn("v_proj.weight"), kv),
    ];
    let gate_up_parts = [
        (format!("{p}.mlp.gate_proj.weight"), inter),
        (format!("{p}.mlp.up_proj.weight"), inter),
    ];
    Ok(LayerWeights {
        attn_norm: f.upload(f.get(&format!("{p}.input_layernorm.weight"), &[h])?)?,
        qkv: f.fused(&qkv_parts, h)?,
        qkv_bias: f.upload_opt(qkv_bias)?,
        q_norm: f.upload_opt(f.get_opt(cfg.qk_norm, &attn("q_norm.weight"), &[hd])?)?,
        k_norm: f.upload_opt(f.get_opt(cfg.qk_norm, &attn("k_norm.weight"), &[hd])?)?,
        o: f.weight(&attn("o_proj.weight"), h, q)?,
        o_bias: f.upload_opt(f.get_opt(cfg.o_bias, &attn("o_proj.bias"), &[h])?)?,
        mlp_norm: f.upload(f.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?)?,
        gate_up: f.fused(&gate_up_parts, h)?,
        down: f.weight(&format!("{p}.mlp.down_proj.weight"), h, inter)?,
    })
}
