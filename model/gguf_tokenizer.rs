//! Builds a Hugging Face `tokenizers::Tokenizer` from the vocabulary embedded in a GGUF file.
//!
//! Only byte-level BPE (`tokenizer.ggml.model == "gpt2"`, used by GPT-2, SmolLM, Llama 3, Qwen and
//! others) is supported. The GGUF keeps the vocabulary, merges and token types but not the
//! pre-tokenizer itself, only its name in `tokenizer.ggml.pre`; we map the names we know to the
//! pre-tokenizer of the corresponding HF `tokenizer.json`, and refuse names we do not know rather
//! than tokenise subtly wrong.

use anyhow::{anyhow, bail, ensure, Context, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::model::gguf::{GgufFile, GgufValue};

/// The token-splitting regex of Llama 3 (`tokenizer.ggml.pre` = `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values whose HF pre-tokenizer is "split digits, then GPT-2 byte-level".
const DIGIT_SPLIT_PRE: &[&str] = &["smollm", "starcoder", "refact", "command-r", "codeshell"];

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Special token ids and the chat template recorded in a GGUF file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GgufTokenizerInfo {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub chat_template: Option<String>,
}

/// Reads `tokenizer.ggml.{bos,eos}_token_id` and `tokenizer.chat_template`; absent or
/// mistyped keys become `None`.
pub fn gguf_tokenizer_info(g: &GgufFile) -> GgufTokenizerInfo {
    let id = |key| g.get_u64(key).and_then(|v| u32::try_from(v).ok());
    GgufTokenizerInfo {
        bos: id("tokenizer.ggml.bos_token_id"),
        eos: id("tokenizer.ggml.eos_token_id"),
        chat_template: g.get_str("tokenizer.chat_template").map(str::to_owned),
    }
}

/// Builds the tokenizer described by the `tokenizer.ggml.*` metadata of `g`.
///
/// Control tokens (type 3) become special added tokens (matched whole in the input, skipped by
/// `decode(.., skip_special_tokens = true)`); user-defined tokens (type 4) become ordinary added
/// tokens. A BOS token is prepended only when `tokenizer.ggml.add_bos_token` is true.
pub fn tokenizer_from_gguf(g: &GgufFile) -> Result<Tokenizer> {
    build(g).with_context(|| format!("{}: building the tokenizer from GGUF metadata", g.label()))
}

fn build(g: &GgufFile) -> Result<Tokenizer> {
    let model = g.require_str("tokenizer.ggml.model")?;
    ensure!(
        model == "gpt2",
        "tokenizer model '{model}' is not supported; only 'gpt2' (byte-level BPE) is. \
         Use a model whose tokenizer is byte-level BPE, or its HF tokenizer.json"
    );
    let tokens = string_array(g, "tokenizer.ggml.tokens")?;
    let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let vocab: Vocab = (tokens.iter().enumerate())
        .map(|(id, t)| (t.to_string(), id as u32))
        .collect();
    let merges = string_array(g, "tokenizer.ggml.merges")?
        .into_iter()
        .map(split_merge)
        .collect::<Result<Merges>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(is_llama3(pre))
        .build()
        .map_err(|e| anyhow!("invalid BPE vocabulary/merges: {e}"))?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    add_special_tokens(&mut tk, g, &tokens)?;
    if g.get_bool("tokenizer.ggml.add_bos_token") == Some(true) {
        tk.with_post_processor(Some(bos_processor(g, &tokens)?));
    }
    Ok(tk)
}

fn is_llama3(pre: &str) -> bool {
    matches!(pre, "llama-bpe" | "llama3")
}

/// The pre-tokenizer of the HF `tokenizer.json` that `tokenizer.ggml.pre` names.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
    Ok(match pre {
        "gpt2" | "default" => byte_level(true).into(),
        p if DIGIT_SPLIT_PRE.contains(&p) => {
            Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into()
        }
        p if is_llama3(p) => {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| anyhow!("compiling the Llama 3 split regex: {e}"))?;
            Sequence::new(vec![split.into(), byte_level(false).into()]).into()
        }
        other => bail!(
            "tokenizer.ggml.pre '{other}' is not supported (known: gpt2, default, llama-bpe, \
             llama3, {})",
            DIGIT_SPLIT_PRE.join(", ")
        ),
    })
}

/// A merge rule "a b". The first token never starts at the space (llama.cpp searches from 1).
fn split_merge(rule: &str) -> Result<(String, String)> {
    let first = rule.chars().next().map_or(0, char::len_utf8);
    let space = rule.get(first..).and_then(|rest| rest.find(' '));
    let Some(at) = space.map(|s| s + first) else {
        bail!("merge rule {rule:?} is not two tokens separated by a space");
    };
    Ok((rule[..at].to_owned(), rule[at + 1..].to_owned()))
}

/// Registers control tokens as special and user-defined tokens as added, keeping their ids.
fn add_special_tokens(tk: &mut Tokenizer, g: &GgufFile, tokens: &[&str]) -> Result<()> {
    let Some(types) = g.get_array("tokenizer.ggml.token_type") else {
        return Ok(());
    };
    ensure!(
        types.len() == tokens.len(),
        "tokenizer.ggml.token_type has {} entries but there are {} tokens",
        types.len(),
        tokens.len()
    );
    let typed = |wanted: i64| {
        (tokens.iter().zip(types))
            .filter(move |(_, ty)| ty.as_i64() == Some(wanted))
            .map(|(t, _)| *t)
    };
    let special: Vec<_> = typed(TOKEN_TYPE_CONTROL)
        .map(|t| AddedToken::from(t, true))
        .collect();
    let added: Vec<_> = typed(TOKEN_TYPE_USER_DEFINED)
        .map(|t| AddedToken::from(t, false))
        .collect();
    tk.add_special_tokens(&special);
    tk.add_tokens(&added);
    Ok(())
}

/// A post-processor that prepends the BOS token to every encoding.
fn bos_processor(g: &GgufFile, tokens: &[&str]) -> Result<TemplateProcessing> {
    let id = g.require_u64("tokenizer.ggml.bos_token_id")?;
    let bos = usize::try_from(id).ok().and_then(|i| tokens.get(i));
    let Some(bos) = bos else {
        bail!(
            "tokenizer.ggml.bos_token_id {id} is not a token id (vocabulary of {})",
            tokens.len()
        );
    };
    TemplateProcessing::builder()
        .try_single(format!("{bos} $A"))
        .and_then(|b| b.try_pair(format!("{bos} $A:0 {bos}:1 $B:1")))
        .map_err(|e| anyhow!("BOS template for {bos:?}: {e}"))?
        .special_tokens(vec![(bos.to_string(), id as u32)])
        .build()
        .map_err(|e| anyhow!("BOS template for {bos:?}: {e}"))
}

/// The array of strings at `key`, borrowed.
fn string_array<'a>(g: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    g.require_array(key)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            GgufValue::String(s) => Ok(s.as_str()),
            other => bail!(
                "{key}[{i}] should be a string, but is {}",
                other.type_name()
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests;
