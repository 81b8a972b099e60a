//! The model's shape and numerics, read from an HF `config.json` or from GGUF metadata.
//!
//! One [`ModelConfig`] covers Llama, Mistral, Qwen2 and Qwen3: they share the decoder block and
//! differ only in switches (q/k/v bias, q/k RMSNorm, sliding window, RoPE scaling).

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

use super::gguf::GgufFile;
use crate::device::backend::QkvLayout;

/// Which family the checkpoint belongs to; the forward pass is the same, the switches differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

/// How rotary frequencies are adjusted for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_freq[i] = theta^(-2i/d)`.
    None,
    /// Positions divided by `factor` (HF `rope_type: "linear"`).
    Linear { factor: f32 },
    /// Llama 3.x frequency-dependent scaling (HF `rope_type: "llama3"`).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// The output projection carries a bias (Llama with `attention_bias`).
    pub o_bias: bool,
    /// RMSNorm over each q and k head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Keys older than this many positions are masked (Mistral v0.1).
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
    /// The layout of a row of the fused q|k|v projection.
    pub fn qkv_layout(&self) -> QkvLayout {
        QkvLayout {
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
        }
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Checks the relations the forward pass relies on, so a bad config fails at load time.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                bail!("config: {name} must be positive");
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            bail!(
                "config: num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads,
                self.num_kv_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!("config: head_dim ({}) must be even for RoPE", self.head_dim);
        }
        // A window of 0 keys would leave a query nothing to attend to (the CPU backend would
        // divide by an empty softmax sum; the kernels read 0 as "no window"): null means none.
        if self.sliding_window == Some(0) {
            bail!("config: sliding_window must be positive (null for no window)");
        }
        // Written so NaN fails too.
        let is_positive = |x: f32| x.is_finite() && x > 0.0;
        if !is_positive(self.rms_norm_eps) || !is_positive(self.rope_theta) {
            bail!("config: rms_norm_eps and rope_theta must be positive");
        }
        Ok(())
    }

    /// Reads an HF `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_hf_json(&json).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_hf_json(j: &Value) -> Result<Self> {
        let arch = hf_arch(j)?;
        let num_heads = req_usize(j, "num_attention_heads")?;
        let hidden_size = req_usize(j, "hidden_size")?;
        let head_dim = match opt_usize(j, "head_dim")? {
            Some(d) => d,
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };
        let (rope_theta, rope_scaling) = hf_rope(j)?;
        let attention_bias = j
            .get("attention_bias")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if j.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            bail!("mlp_bias = true is not supported");
        }
        let sliding_window = match arch {
            Arch::Mistral => opt_usize(j, "sliding_window")?,
            Arch::Qwen2 | Arch::Qwen3 => {
                if j.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
                    bail!("use_sliding_window = true is not supported for {arch:?}");
                }
                None
            }
            Arch::Llama => None,
        };
        let cfg = ModelConfig {
            arch,
            vocab_size: req_usize(j, "vocab_size")?,
            hidden_size,
            intermediate_size: req_usize(j, "intermediate_size")?,
            num_layers: req_usize(j, "num_hidden_layers")?,
            num_heads,
            num_kv_heads: opt_usize(j, "num_key_value_heads")?.unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: opt_f32(j, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: opt_usize(j, "max_position_embeddings")?.unwrap_or(4096),
            tie_word_embeddings: j
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2 || attention_bias,
            o_bias: attention_bias && arch != Arch::Qwen2,
            qk_norm: arch == Arch::Qwen3,
            sliding_window,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads the `llama.*` metadata of a GGUF file (the only GGUF architecture supported).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.require_str("general.architecture")?;
        if arch != "llama" {
            bail!("GGUF architecture '{arch}' is not supported (only 'llama')");
        }
        let key = |k: &str| format!("llama.{k}");
        let num_heads = g.require_u64(&key("attention.head_count"))? as usize;
        let hidden_size = g.require_u64(&key("embedding_length"))? as usize;
        let head_dim = match g.get_u64(&key("attention.key_length")) {
            Some(d) => d as usize,
            None => hidden_size.checked_div(num_heads).unwrap_or(0),
        };
        let vocab_size = match g.get_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => g
                .get_array("tokenizer.ggml.tokens")
                .map(|a| a.len())
                .context("GGUF has neither llama.vocab_size nor tokenizer.ggml.tokens")?,
        };
        let rope_scaling = match g.get_str(&key("rope.scaling.type")) {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: g.get_f32(&key("rope.scaling.factor")).unwrap_or(1.0),
            },
            Some(other) => bail!("GGUF rope scaling type '{other}' is not supported"),
        };
        let cfg = ModelConfig {
            arch: Arch::Llama,
            vocab_size,
            hidden_size,
            intermediate_size: g.require_u64(&key("feed_forward_length"))? as usize,
            num_layers: g.require_u64(&key("block_count"))? as usize,
            num_heads,
            num_kv_heads: g
                .get_u64(&key("attention.head_count_kv"))
                .map_or(num_heads, |v| v as usize),
            head_dim,
            rms_norm_eps: g
                .get_f32(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_theta: g.get_f32(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: g.get_u64(&key("context_length")).unwrap_or(2048) as usize,
            // GGUF writers drop `output.weight` when the embeddings are tied.
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
            qkv_bias: g.tensor_info("blk.0.attn_q.bias").is_some(),
            o_bias: g.tensor_info("blk.0.attn_output.bias").is_some(),
            qk_norm: false,
            sliding_window: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

fn hf_arch(j: &Value) -> Result<Arch> {
    let model_type = j.get("model_type").and_then(Value::as_str);
    let first_arch = j
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    Ok(match (model_type, first_arch) {
        (Some("llama"), _) | (None, Some("LlamaForCausalLM")) => Arch::Llama,
        (Some("mistral"), _) | (None, Some("MistralForCausalLM")) => Arch::Mistral,
        (Some("qwen2"), _) | (None, Some("Qwen2ForCausalLM")) => Arch::Qwen2,
        (Some("qwen3"), _) | (None, Some("Qwen3ForCausalLM")) => Arch::Qwen3,
        (mt, a) => bail!(
            "unsupported architecture (model_type {:?}, architectures {:?}); supported: llama, mistral, qwen2, qwen3",
            mt.unwrap_or("missing"),
            a.unwrap_or("missing")
        ),
    })
}

/// RoPE settings: `rope_theta`/`rope_scaling` at the top level (transformers 4) or a
/// `rope_parameters` object (transformers 5).
fn hf_rope(j: &Value) -> Result<(f32, RopeScaling)> {
    let params = j.get("rope_parameters").filter(|v| v.is_object());
    let theta = match params.and_then(|p| p.get("rope_theta")) {
        Some(v) => num_f32(v, "rope_parameters.rope_theta")?,
        None => opt_f32(j, "rope_theta")?.unwrap_or(10_000.0),
    };
    let scaling = params.or_else(|| j.get("rope_scaling").filter(|v| v.is_object()));
    let Some(s) = scaling else {
        return Ok((theta, RopeScaling::None));
    };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let field = |name: &str| -> Result<f32> {
        let v = s
            .get(name)
            .with_context(|| format!("rope scaling '{kind}' needs '{name}'"))?;
        num_f32(v, name)
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: field("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: field("factor")?,
            low_freq_factor: field("low_freq_factor")?,
            high_freq_factor: field("high_freq_factor")?,
            original_max_position_embeddings: field("original_max_position_embeddings")?,
        },
        other => bail!("rope scaling type '{other}' is not supported (default, linear, llama3)"),
    };
    Ok((theta, scaling))
}

fn num_f32(v: &Value, name: &str) -> Result<f32> {
    v.as_f64()
        .map(|x| x as f32)
        .with_context(|| format!("'{name}' must be a number, got {v}"))
}

fn opt_f32(j: &Value, name: &str) -> Result<Option<f32>> {
    match j.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => num_f32(v, name).map(Some),
    }
}

fn opt_usize(j: &Value, name: &str) -> Result<Option<usize>> {
    match j.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .with_context(|| format!("'{name}' must be a non-negative integer, got {v}")),
    }
}

fn req_usize(j: &Value, name: &str) -> Result<usize> {
    opt_usize(j, name)?.with_context(|| format!("config is missing '{name}'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "model_type": "llama", "vocab_size": 100, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 500000.0
        })
    }

    #[test]
    fn derives_head_dim_and_reads_top_level_theta() {
        let c = ModelConfig::from_hf_json(&base()).unwrap();
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling, RopeScaling::None);
        assert!(!c.qkv_bias && !c.qk_norm && !c.tie_word_embeddings);
    }

    #[test]
    fn reads_rope_parameters_of_transformers_5() {
        let mut j = base();
        j.as_object_mut().unwrap().remove("rope_theta");
        j["rope_parameters"] = json!({
            "rope_type": "llama3", "rope_theta": 1000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32
        });
        let c = ModelConfig::from_hf_json(&j).unwrap();
        assert_eq!(c.rope_theta, 1000.0);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn reads_legacy_rope_scaling() {
        let mut j = base();
        j["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let c = ModelConfig::from_hf_json(&j).unwrap();
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    }

    #[test]
    fn family_switches() {
        let mut j = base();
        j["model_type"] = json!("qwen2");
        assert!(ModelConfig::from_hf_json(&j).unwrap().qkv_bias);
        j["model_type"] = json!("qwen3");
        j["head_dim"] = json!(32);
        let c = ModelConfig::from_hf_json(&j).unwrap();
        assert!(c.qk_norm && !c.qkv_bias);
        assert_eq!(c.head_dim, 32);
        j["model_type"] = json!("mistral");
        j["sliding_window"] = json!(4096);
        assert_eq!(
            ModelConfig::from_hf_json(&j).unwrap().sliding_window,
            Some(4096)
        );
    }

    #[test]
    fn rejects_bad_configs_with_a_reason() {
        let mut j = base();
        j["model_type"] = json!("gpt2");
        let e = ModelConfig::from_hf_json(&j).unwrap_err().to_string();
        assert!(e.contains("unsupported architecture"), "{e}");

        let mut j = base();
        j["num_key_value_heads"] = json!(3);
        let e = ModelConfig::from_hf_json(&j).unwrap_err().to_string();
        assert!(e.contains("not a multiple"), "{e}");

        let mut j = base();
        j.as_object_mut().unwrap().remove("hidden_size");
        let e = ModelConfig::from_hf_json(&j).unwrap_err().to_string();
        assert!(e.contains("hidden_size"), "{e}");

        let mut j = base();
        j["vocab_size"] = json!("many");
        assert!(ModelConfig::from_hf_json(&j).is_err());

        let mut j = base();
        j["model_type"] = json!("mistral");
        j["sliding_window"] = json!(0);
        let e = ModelConfig::from_hf_json(&j).unwrap_err().to_string();
        assert!(e.contains("sliding_window"), "{e}");
    }
}
