//! The grammar mask's cost against the vocabulary's size: the default model's 49,152-token
//! tokenizer and the same tokenizer grown to Llama 3's 128,256 ids, on the same nested JSON
//! schema, measured side by side in one run (benches/RESULTS.md, structured outputs).
//!
//! No Llama 3 tokenizer can be fetched here, so the large vocabulary is made: byte-level BPE
//! merges of pairs of existing tokens, drawn from a fixed seed, each adding the pair's
//! concatenation as a new token until there are 128,256. The trie llguidance walks then has
//! Llama 3's number of tokens, with lengths and shared prefixes like a real vocabulary's (every
//! new token extends an existing one); what it lacks is a real vocabulary's mix of languages and
//! code, which the schema's masks barely touch.
//!
//! `cargo test --release --test grammar_mask_vocab -- --nocapture` checks that the grown
//! tokenizer loads, keeps encoding the document the same way, and masks it token by token;
//! `-- --ignored --nocapture` also prints the timing table.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tandem::device::sampling::grammar::{
    CompiledGrammar, ConstraintMatcher, ConstraintSpec, GrammarCompiler, GrammarStats,
};
use tandem::model::default_model::default_model_path;
use tandem::model::gguf::GgufFile;
use tandem::model::token_env::token_env;
use tandem::model::tokenizer::Tokenizer;

/// Llama 3's vocabulary size.
const LARGE_VOCAB: usize = 128_256;

const DOC: &str = r#"{"id":42,"name":"Ada Lovelace","tags":["math","poetry","engines"],"address":{"street":"12 St James's Square","city":"London","kind":"home"},"scores":[3.5,-1,2e3]}"#;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "city": {"type": "string"},
                    "kind": {"enum": ["home", "work"]}
                },
                "required": ["street", "city", "kind"]
            },
            "scores": {"type": "array", "items": {"type": "number"}}
        },
        "required": ["id", "name", "tags", "address", "scores"]
    })
}

fn default_tokenizer() -> Option<Tokenizer> {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipped: default model not found at {}", path.display());
        return None;
    }
    let g = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(Tokenizer::from_gguf(&g).unwrap())
}

/// `tok` grown to `size` tokens by merges of existing pairs (see the file's comment), written as
/// an HF tokenizer directory under `dir` and loaded back.
fn grown(tok: &Tokenizer, size: usize, dir: &Path) -> Tokenizer {
    let mut j: Value = serde_json::from_str(&tok.inner().to_string(false).unwrap()).unwrap();
    let model = j["model"].as_object_mut().unwrap();
    assert_eq!(
        model["type"], "BPE",
        "the default tokenizer is byte-level BPE"
    );
    let vocab = model["vocab"].as_object_mut().unwrap();
    let mut tokens: Vec<String> = vec![String::new(); vocab.len()];
    for (t, id) in vocab.iter() {
        tokens[id.as_u64().unwrap() as usize] = t.clone();
    }
    // Pieces to combine: ordinary tokens up to 6 characters (special tokens and the long
    // tail excluded), so new tokens stay word-sized.
    let pieces: Vec<String> = tokens
        .iter()
        .filter(|t| !t.is_empty() && !t.starts_with('<') && t.chars().count() <= 6)
        .cloned()
        .collect();
    let mut known: HashSet<String> = tokens.iter().cloned().collect();
    let mut new_merges = Vec::new();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    while tokens.len() < size {
        let (a, b) = (&pieces[next(pieces.len())], &pieces[next(pieces.len())]);
        let joined = format!("{a}{b}");
        if known.insert(joined.clone()) {
            vocab.insert(joined.clone(), json!(tokens.len()));
            new_merges.push(json!([a, b]));
            tokens.push(joined);
        }
    }
    let merges = model["merges"].as_array_mut().unwrap();
    // Merges are stored as "a b" strings or [a, b] pairs depending on the tokenizers version;
    // write the new ones the way the file already does.
    let as_strings = merges.first().is_some_and(Value::is_string);
    merges.extend(new_merges.into_iter().map(|m| {
        if as_strings {
            json!(format!(
                "{} {}",
                m[0].as_str().unwrap(),
                m[1].as_str().unwrap()
            ))
        } else {
            m
        }
    }));
    std::fs::write(dir.join("tokenizer.json"), j.to_string()).unwrap();
    let eos = tok.id_to_token(tok.eos_ids[0]).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({ "eos_token": eos }).to_string(),
    )
    .unwrap();
    Tokenizer::from_hf_dir(dir).unwrap()
}

fn compile(tok: &Arc<Tokenizer>) -> (Arc<CompiledGrammar>, f64, f64) {
    let started = Instant::now();
    let env = token_env(tok.clone(), tok.vocab_size()).unwrap();
    let c = GrammarCompiler::new(env, Arc::new(GrammarStats::default())).unwrap();
    let trie_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let g = c.compile(&ConstraintSpec::JsonSchema(schema())).unwrap();
    (g, trie_ms, started.elapsed().as_secs_f64() * 1e3)
}

/// Per-token mask times in µs over `passes` walks of the document (each from a fresh matcher),
/// after one cold walk; every document token must pass its mask and EOS must end it.
/// Each warm time comes with the token's position in the document.
fn mask_times(
    tok: &Tokenizer,
    g: &Arc<CompiledGrammar>,
    passes: usize,
) -> (f64, Vec<(f64, usize)>) {
    let ids = tok.encode(DOC, false).unwrap();
    let (mut warm, mut cold) = (Vec::new(), 0.0);
    for pass in 0..=passes {
        let mut m = ConstraintMatcher::new(g, &[]);
        for (i, &t) in ids.iter().enumerate() {
            let started = Instant::now();
            let mask = m.mask();
            let us = started.elapsed().as_secs_f64() * 1e6;
            if pass == 0 {
                cold += us / ids.len() as f64;
            } else {
                warm.push((us, i));
            }
            assert!(
                mask.is_allowed(t),
                "token {t} ({:?}) refused",
                tok.id_to_token(t)
            );
            m.advance(t);
        }
        assert!(
            m.mask().is_allowed(tok.eos_ids[0]),
            "the document is complete"
        );
    }
    warm.sort_by(|a, b| a.0.total_cmp(&b.0));
    (cold, warm)
}

#[test]
fn a_grown_vocabulary_loads_encodes_alike_and_masks_a_document() {
    let Some(small) = default_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let large = grown(&small, LARGE_VOCAB, dir.path());
    assert_eq!(large.vocab_size(), LARGE_VOCAB);
    // New merges come after every original one, so they can only join tokens the original
    // tokenizer would have left apart: ids of the original vocabulary stay what they were.
    let a = small.encode(DOC, false).unwrap();
    let b = large.encode(DOC, false).unwrap();
    assert_eq!(
        small.decode(&a, false).unwrap(),
        large.decode(&b, false).unwrap()
    );
    assert!(b.len() <= a.len(), "{} tokens vs {}", b.len(), a.len());
    let large = Arc::new(large);
    let (g, _, _) = compile(&large);
    let (_, warm) = mask_times(&large, &g, 1);
    assert_eq!(warm.len(), b.len());
}

/// Not a test: the timing table (see the file's comment).
#[test]
#[ignore]
fn mask_time_against_vocabulary_size() {
    let Some(small) = default_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let large = grown(&small, LARGE_VOCAB, dir.path());
    println!(
        "| vocabulary | trie + factory | compile | cold µs/token | warm mean / median / p90 / max \
         µs | slowest positions |"
    );
    println!("|---|---|---|---|---|---|");
    for tok in [Arc::new(small), Arc::new(large)] {
        let (g, trie_ms, compile_ms) = compile(&tok);
        let (cold, warm) = mask_times(&tok, &g, 8);
        let q = |p: f64| warm[((warm.len() - 1) as f64 * p) as usize].0;
        // Where the slowest masks are: the same positions pass after pass means work, not noise.
        let slowest: Vec<usize> = warm.iter().rev().take(4).map(|w| w.1).collect();
        println!(
            "| {} | {trie_ms:.0} ms | {compile_ms:.1} ms | {cold:.0} | {:.1} / {:.1} / {:.1} / {:.1} \
             | {slowest:?} |",
            tok.vocab_size(),
            warm.iter().map(|w| w.0).sum::<f64>() / warm.len() as f64,
            q(0.5),
            q(0.9),
            q(1.0)
        );
    }
}
