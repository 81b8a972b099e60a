//! The model's tokenizer plus what generation needs around it: end-of-sequence ids, BOS and the
//! chat template, from an HF directory or from GGUF metadata.

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::path::Path;

use super::gguf::GgufFile;
use super::gguf_tokenizer::{gguf_tokenizer_info, tokenizer_from_gguf};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Generation stops at any of these.
    pub eos_ids: Vec<u32>,
    pub bos_id: Option<u32>,
    /// The Jinja chat template, when the model has one.
    pub chat_template: Option<String>,
}

impl Tokenizer {
    /// Tokenizer of an HF directory: `tokenizer.json`, `tokenizer_config.json` (chat template,
    /// special tokens) and `generation_config.json` / `config.json` (EOS ids).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
        let tok_cfg = read_json_opt(&dir.join("tokenizer_config.json"))?;
        let gen_cfg = read_json_opt(&dir.join("generation_config.json"))?;
        let model_cfg = read_json_opt(&dir.join("config.json"))?;

        let token_id = |key: &str| -> Option<u32> {
            let v = tok_cfg.as_ref()?.get(key)?;
            // Either "<s>" or {"content": "<s>", ...}.
            let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(text)
        };
        let mut eos_ids = [&gen_cfg, &model_cfg]
            .iter()
            .find_map(|cfg| cfg.as_ref().and_then(|c| ids_of(c.get("eos_token_id")?)))
            .unwrap_or_default();
        if eos_ids.is_empty() {
            eos_ids.extend(token_id("eos_token"));
        }
        let bos_id = [&gen_cfg, &model_cfg]
            .iter()
            .find_map(|cfg| cfg.as_ref().and_then(|c| ids_of(c.get("bos_token_id")?)))
            .and_then(|ids| ids.first().copied())
            .or_else(|| token_id("bos_token"));
        let chat_template = tok_cfg
            .as_ref()
            .and_then(|c| chat_template_of(c.get("chat_template")?));
        Ok(Tokenizer {
            inner,
            eos_ids,
            bos_id,
            chat_template,
        })
    }

    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let inner = tokenizer_from_gguf(g)?;
        let info = gguf_tokenizer_info(g);
        Ok(Tokenizer {
            inner,
            eos_ids: info.eos.into_iter().collect(),
            bos_id: info.bos,
            chat_template: info.chat_template,
        })
    }

    /// Token ids of `text`. With `add_special_tokens` the tokenizer adds what its post-processor
    /// says (e.g. BOS); text rendered from a chat template already has them, so pass false.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, with or without the special tokens' text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("detokenizing failed: {e}"))
    }

    /// The vocabulary's spelling of `id`, or `None` when `id` is not in the vocabulary (which
    /// `decode` silently skips).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether `id` is a special token: one `decode(.., skip_special_tokens = true)` drops. False
    /// for ids outside the vocabulary.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .id_to_token(id)
            .is_some_and(|t| self.inner.get_added_vocabulary().is_special_token(&t))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(Some(v))
}

/// `eos_token_id` is an int or a list of ints.
fn ids_of(v: &Value) -> Option<Vec<u32>> {
    match v {
        Value::Number(n) => Some(vec![u32::try_from(n.as_u64()?).ok()?]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect(),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` where "default" wins.
fn chat_template_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let named = |n: &str| {
                items
                    .iter()
                    .find(|i| i.get("name").and_then(Value::as_str) == Some(n))
                    .and_then(|i| i.get("template")?.as_str())
            };
            named("default")
                .or_else(|| items.first()?.get("template")?.as_str())
                .map(str::to_string)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eos_is_an_int_or_a_list() {
        assert_eq!(ids_of(&json!(2)), Some(vec![2]));
        assert_eq!(ids_of(&json!([1, 7])), Some(vec![1, 7]));
        assert_eq!(ids_of(&json!("x")), None);
        assert_eq!(ids_of(&json!(-1)), None);
    }

    #[test]
    fn chat_template_string_or_named_list() {
        assert_eq!(chat_template_of(&json!("T")), Some("T".into()));
        let list =
            json!([{"name": "tool_use", "template": "A"}, {"name": "default", "template": "B"}]);
        assert_eq!(chat_template_of(&list), Some("B".into()));
    }
}
