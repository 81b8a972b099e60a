//! GGUF tensors under their HF names, dequantized to f32 or kept in their blocks, with
//! llama.cpp's q/k row permutation undone so the math is exactly the HF model's.

use anyhow::{ensure, Context, Result};

use super::gguf::{unpermute_qk_rows, GgufFile};
use super::weights::{HostTensor, WeightSource};
use crate::device::quant::matrix::{row_bytes, QuantMatrix};

pub struct GgufWeights<'a> {
    pub file: &'a GgufFile,
    pub num_heads: usize,
    pub num_kv_heads: usize,
}

/// The GGUF name of an HF tensor name, and how many heads its rows are permuted over (q/k only).
fn gguf_name(hf: &str, num_heads: usize, num_kv_heads: usize) -> Option<(String, Option<usize>)> {
    match hf {
        "model.embed_tokens.weight" => return Some(("token_embd.weight".into(), None)),
        "model.norm.weight" => return Some(("output_norm.weight".into(), None)),
        "lm_head.weight" => return Some(("output.weight".into(), None)),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let (gguf, heads) = match tail {
        "input_layernorm.weight" => ("attn_norm.weight", None),
        "post_attention_layernorm.weight" => ("ffn_norm.weight", None),
        "self_attn.q_proj.weight" => ("attn_q.weight", Some(num_heads)),
        "self_attn.q_proj.bias" => ("attn_q.bias", Some(num_heads)),
        "self_attn.k_proj.weight" => ("attn_k.weight", Some(num_kv_heads)),
        "self_attn.k_proj.bias" => ("attn_k.bias", Some(num_kv_heads)),
        "self_attn.v_proj.weight" => ("attn_v.weight", None),
        "self_attn.v_proj.bias" => ("attn_v.bias", None),
        "self_attn.o_proj.weight" => ("attn_output.weight", None),
        "self_attn.o_proj.bias" => ("attn_output.bias", None),
        "mlp.gate_proj.weight" => ("ffn_gate.weight", None),
        "mlp.up_proj.weight" => ("ffn_up.weight", None),
        "mlp.down_proj.weight" => ("ffn_down.weight", None),
        _ => return None,
    };
    Some((format!("blk.{layer}.{gguf}"), heads))
}

impl WeightSource for GgufWeights<'_> {
    fn describe(&self) -> String {
        self.file.path().display().to_string()
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name, self.num_heads, self.num_kv_heads)
            .is_some_and(|(g, _)| self.file.tensor_info(&g).is_some())
    }

    fn load(&self, name: &str) -> Result<HostTensor> {
        let (gguf, heads) = gguf_name(name, self.num_heads, self.num_kv_heads)
            .with_context(|| format!("no GGUF name for '{name}'"))?;
        let (mut data, shape) = self.file.tensor_f32(&gguf)?;
        if let Some(heads) = heads {
            let rows = shape.first().copied().unwrap_or(0);
            let cols = shape.get(1).copied().unwrap_or(1);
            data = unpermute_qk_rows(&data, rows, cols, heads)
                .with_context(|| format!("{}: un-permuting '{gguf}'", self.describe()))?;
        }
        Ok(HostTensor { data, shape })
    }

    fn load_blocks(&self, name: &str) -> Result<Option<QuantMatrix>> {
        let (gguf, heads) = gguf_name(name, self.num_heads, self.num_kv_heads)
            .with_context(|| format!("no GGUF name for '{name}'"))?;
        let info = self.file.require_tensor(&gguf)?;
        // Float tensors (block size 1) are handed over as f32 by `load`.
        if info.dtype.block_size() == 1 {
            return Ok(None);
        }
        let shape = info.shape();
        ensure!(
            shape.len() == 2,
            "{}: '{gguf}' has shape {shape:?}, not a matrix",
            self.describe()
        );
        let (n, k) = (shape[0], shape[1]);
        let mut bytes = self.file.tensor_bytes(&gguf)?.to_vec();
        if let Some(heads) = heads {
            // Rows are whole blocks, so the permutation moves rows of bytes.
            let rb = row_bytes(info.dtype, k)?;
            bytes = unpermute_qk_rows(&bytes, n, rb, heads)
                .with_context(|| format!("{}: un-permuting '{gguf}'", self.describe()))?;
        }
        QuantMatrix::new(info.dtype, bytes, n, k)
            .map(Some)
            .with_context(|| format!("{}: '{gguf}'", self.describe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_hf_names_to_gguf_names() {
        assert_eq!(
            gguf_name("model.layers.3.self_attn.k_proj.weight", 9, 3),
            Some(("blk.3.attn_k.weight".into(), Some(3)))
        );
        assert_eq!(
            gguf_name("model.layers.0.mlp.down_proj.weight", 9, 3),
            Some(("blk.0.ffn_down.weight".into(), None))
        );
        assert_eq!(
            gguf_name("lm_head.weight", 9, 3).unwrap().0,
            "output.weight"
        );
        assert_eq!(gguf_name("model.layers.0.unknown", 9, 3), None);
    }
}
