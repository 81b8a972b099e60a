//! `tandem generate` samples with the engine's sampler: for the same prompt, temperature and
//! seed it picks the same tokens a server request does.

mod common;

use std::sync::Arc;

use common::*;
use tandem::cli::generate::{generate, GenerateOptions};
use tandem::engine::request::{Event, Request, SamplingParams};
use tandem::engine::{start, EngineConfig, EngineHandle};
use tandem::model::StepLimits;

const LIMITS: StepLimits = StepLimits {
    max_tokens: 64,
    max_seqs: 16,
};
const TEMPERATURE: f32 = 0.8;
const MAX_TOKENS: usize = 24;

/// The engine's tokens for `prompt` at `seed` (past EOS, as `generate` runs with no stop ids).
fn served(h: &EngineHandle, prompt: &[u32], seed: u64) -> Vec<u32> {
    let params = SamplingParams {
        temperature: TEMPERATURE,
        seed: Some(seed),
        max_tokens: MAX_TOKENS,
        ignore_eos: true,
        ..Default::default()
    };
    let mut stream = h.submit(Request::new(prompt.to_vec(), params)).unwrap();
    let mut ids = Vec::new();
    loop {
        match wait::next_event(&mut stream).expect("stream ends with Finished") {
            Event::Tokens { ids: more, .. } => ids.extend(more),
            Event::Finished { .. } => return ids,
        }
    }
}

#[test]
fn seeded_generate_picks_what_the_engine_picks() {
    let path = repo_root().join("tests/models/tiny-llama");
    let (mut model, tok) = open_model(&path, LIMITS);
    let prompt = tok.encode("The capital of France is", true).unwrap();
    let mut generated = |seed| {
        let opts = GenerateOptions {
            max_tokens: MAX_TOKENS,
            temperature: TEMPERATURE,
            seed,
            block_size: 16,
            stop_ids: vec![],
        };
        generate(&mut model, &prompt, &opts, |_| Ok(())).unwrap()
    };
    let (seven, eight) = (generated(7), generated(8));

    let cfg = EngineConfig::default();
    let limits = StepLimits {
        max_tokens: cfg.max_batch_tokens,
        max_seqs: cfg.max_num_seqs,
    };
    let (model, tok) = open_model(&path, limits);
    let e = start(model, Arc::new(tok), "tiny-llama".into(), cfg).unwrap();
    let h = e.handle();
    assert_eq!(seven.len(), MAX_TOKENS);
    assert_eq!(served(&h, &prompt, 7), seven, "seed 7");
    assert_eq!(served(&h, &prompt, 8), eight, "seed 8");
    assert_ne!(seven, eight, "another seed should sample differently");
    wait::stop_engine(e);
}
