//! llguidance's view of tandem's tokenizer (structured outputs, `device/sampling/grammar`): every
//! token's bytes in a [`TokTrie`], and tokenizing.
//!
//! The bytes come from each token's vocabulary spelling, undone the way the tokenizer's decoder
//! would: byte-level BPE (GPT-2 style, every GGUF tokenizer tandem reads) maps each byte to a
//! printable character; SentencePiece-style vocabularies write spaces as `▁` and unknown bytes
//! as `<0xAB>` tokens. Special tokens get toktrie's marker byte in front, so a grammar can never
//! spell one out of ordinary text.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use tokenizers::DecoderWrapper;

use super::tokenizer::Tokenizer;

/// How the vocabulary spells bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    /// GPT-2 byte-level: one printable character per byte.
    ByteLevel,
    /// SentencePiece: `▁` (or the decoder's replacement) for space, `<0xAB>` byte tokens.
    Metaspace { space: char },
}

/// The environment llguidance compiles grammars against (see [`TokenEnv::new`]).
pub fn token_env(tokenizer: Arc<Tokenizer>, vocab_size: usize) -> Result<TokEnv> {
    Ok(Arc::new(TokenEnv::new(tokenizer, vocab_size)?))
}

pub struct TokenEnv {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
}

impl TokenEnv {
    /// The trie over `vocab_size` ids (the model's logits row; ids the tokenizer lacks get no
    /// bytes, so no grammar ever allows them).
    pub fn new(tokenizer: Arc<Tokenizer>, vocab_size: usize) -> Result<Self> {
        let spelling = spelling_of(tokenizer.inner().get_decoder())?;
        let byte_of_char = byte_level_chars();
        let n = vocab_size.max(tokenizer.vocab_size());
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| token_bytes(&tokenizer, id, spelling, &byte_of_char))
            .collect();
        let Some(&eos) = tokenizer.eos_ids.first() else {
            bail!("the tokenizer has no end-of-sequence token, so a grammar could never finish");
        };
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tokenizer.bos_id;
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&tokenizer.eos_ids);
        Ok(TokenEnv { tokenizer, trie })
    }
}

impl TokenizerEnv for TokenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Grammars only tokenize text they hold (forced prefixes, literal strings); lossy is
        // fine for the rare invalid UTF-8, which can only make a forced prefix shorter.
        self.tokenizer
            .encode(&String::from_utf8_lossy(s), false)
            .unwrap_or_default()
    }
}

fn spelling_of(decoder: Option<&DecoderWrapper>) -> Result<Spelling> {
    fn walk(d: &DecoderWrapper, byte_level: &mut bool, space: &mut Option<char>) {
        match d {
            DecoderWrapper::ByteLevel(_) => *byte_level = true,
            DecoderWrapper::Metaspace(m) => *space = Some(m.get_replacement()),
            DecoderWrapper::Replace(r) => {
                // `Replace` keeps its pattern private; its serialized form names it.
                let v = serde_json::to_value(r).unwrap_or_default();
                let pattern = v["pattern"]["String"].as_str().unwrap_or_default();
                let mut chars = pattern.chars();
                if let (Some(c), None, Some(" ")) =
                    (chars.next(), chars.next(), v["content"].as_str())
                {
                    *space = Some(c);
                }
            }
            DecoderWrapper::Sequence(seq) => {
                for d in seq.get_decoders() {
                    walk(d, byte_level, space);
                }
            }
            _ => {}
        }
    }
    let (mut byte_level, mut space) = (false, None);
    if let Some(d) = decoder {
        walk(d, &mut byte_level, &mut space);
    }
    match (byte_level, space) {
        (true, _) => Ok(Spelling::ByteLevel),
        (false, Some(space)) => Ok(Spelling::Metaspace { space }),
        (false, None) => bail!(
            "structured outputs need a byte-level BPE or SentencePiece tokenizer; this one's \
             decoder is {decoder:?}"
        ),
    }
}

fn token_bytes(
    tok: &Tokenizer,
    id: u32,
    spelling: Spelling,
    byte_of_char: &HashMap<char, u8>,
) -> Vec<u8> {
    let Some(text) = tok.id_to_token(id) else {
        return Vec::new();
    };
    if tok.is_special(id) {
        let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        b.extend_from_slice(text.as_bytes());
        return b;
    }
    match spelling {
        Spelling::ByteLevel => {
            let bytes: Option<Vec<u8>> = text
                .chars()
                .map(|c| byte_of_char.get(&c).copied())
                .collect();
            // Added (non-special) tokens are stored as plain text, not byte-level characters.
            bytes.unwrap_or_else(|| text.into_bytes())
        }
        Spelling::Metaspace { space } => match byte_fallback(&text) {
            Some(b) => vec![b],
            None => text.replace(space, " ").into_bytes(),
        },
    }
}

/// `<0xAB>` → 0xAB.
fn byte_fallback(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// GPT-2's byte ↔ character table: printable Latin-1 bytes stand for themselves, the other 68
/// bytes take the characters from U+0100 on, in byte order.
fn byte_level_chars() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (char::from(b), b)
            } else {
                let c = char::from_u32(next).expect("U+0100..U+0143 are characters");
                next += 1;
                (c, b)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_covers_every_byte_once() {
        let t = byte_level_chars();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
    }

    #[test]
    fn byte_fallback_tokens() {
        assert_eq!(byte_fallback("<0x0A>"), Some(b'\n'));
        assert_eq!(byte_fallback("<0x0A"), None);
        assert_eq!(byte_fallback("<0xZZ>"), None);
    }
}
