//! The engine end to end on the CPU: continuous batching under preemption, overlap on and off,
//! seeded sampling in a crowd, the prefix cache, stop strings, abort.

mod common;

use std::sync::Arc;

use common::*;
use tandem::cli::generate::{generate, GenerateOptions};
use tandem::engine::request::{Event, FinishReason, Request, SamplingParams, TokenLogprob, Usage};
use tandem::engine::{start, Engine, EngineConfig, EngineHandle};
use tandem::model::StepLimits;

const LIMITS: StepLimits = StepLimits {
    max_tokens: 64,
    max_seqs: 16,
};

fn tiny_llama() -> std::path::PathBuf {
    repo_root().join("tests/models/tiny-llama")
}

fn engine(cfg: EngineConfig) -> Engine {
    let limits = StepLimits {
        max_tokens: cfg.max_batch_tokens,
        max_seqs: cfg.max_num_seqs,
    };
    let (model, tok) = open_model(&tiny_llama(), limits);
    start(model, Arc::new(tok), "tiny-llama".into(), cfg).unwrap()
}

fn small_pool(overlap: bool) -> EngineConfig {
    EngineConfig {
        max_num_seqs: 16,
        max_batch_tokens: 64,
        block_size: 4,
        num_blocks: 40,
        overlap,
        ..Default::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    ids: Vec<u32>,
    text: String,
    reason: FinishReason,
    usage: Usage,
    logprobs: Vec<TokenLogprob>,
}

/// Submits every request at once, then collects every stream.
fn run_all(h: &EngineHandle, reqs: &[Request]) -> Vec<Outcome> {
    let mut streams: Vec<_> = reqs.iter().map(|r| h.submit(r.clone()).unwrap()).collect();
    streams
        .iter_mut()
        .map(|s| {
            let mut o = Outcome {
                ids: vec![],
                text: String::new(),
                reason: FinishReason::Abort,
                usage: Usage::default(),
                logprobs: vec![],
            };
            loop {
                match wait::next_event(s).expect("stream ends with Finished") {
                    Event::Tokens {
                        ids,
                        text,
                        logprobs,
                    } => {
                        o.ids.extend(ids);
                        o.text.push_str(&text);
                        o.logprobs.extend(logprobs);
                    }
                    Event::Finished { reason, usage, .. } => {
                        o.reason = reason;
                        o.usage = usage;
                        return o;
                    }
                }
            }
        })
        .collect()
}

/// A deterministic pseudo-random sequence in 0..n.
fn lcg(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    }
}

fn mixed_requests(count: usize) -> Vec<Request> {
    let mut rand = lcg(11);
    (0..count)
        .map(|_| {
            let len = 3 + rand(38) as usize;
            let prompt = (0..len).map(|_| 4 + rand(500) as u32).collect();
            let max_tokens = 4 + rand(21) as usize;
            Request::new(
                prompt,
                SamplingParams {
                    max_tokens,
                    ignore_eos: true,
                    ..Default::default()
                },
            )
        })
        .collect()
}

#[test]
fn preempted_batches_match_each_request_alone_with_and_without_overlap() {
    let reqs = mixed_requests(64);
    let (mut model, _) = open_model(&tiny_llama(), LIMITS);
    let alone: Vec<Vec<u32>> = reqs
        .iter()
        .map(|r| {
            let opts = GenerateOptions {
                max_tokens: r.params.max_tokens,
                temperature: 0.0,
                seed: 0,
                block_size: 4,
                stop_ids: vec![],
            };
            generate(&mut model, &r.prompt_ids, &opts, |_| Ok(())).unwrap()
        })
        .collect();
    for overlap in [true, false] {
        let e = engine(small_pool(overlap));
        let h = e.handle();
        let got = run_all(&h, &reqs);
        for (i, (g, want)) in got.iter().zip(&alone).enumerate() {
            assert_eq!(&g.ids, want, "request {i} (overlap {overlap})");
            assert_eq!(g.reason, FinishReason::Length);
            assert_eq!(g.usage.completion_tokens, want.len());
        }
        wait::until_engine_idle(&h);
        assert!(
            h.stats().preemptions > 0,
            "the pool was meant to force preemption (overlap {overlap})"
        );
        wait::stop_engine(e);
    }
}

#[test]
fn seeded_sampling_is_the_same_alone_and_in_a_crowd() {
    let e = engine(EngineConfig::default());
    let h = e.handle();
    let params = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 50,
        seed: Some(42),
        max_tokens: 20,
        ignore_eos: true,
        ..Default::default()
    };
    let target = Request::new(vec![10, 20, 30, 40], params);
    let alone = run_all(&h, std::slice::from_ref(&target));
    let mut crowd = mixed_requests(12);
    for (i, r) in crowd.iter_mut().enumerate() {
        let p = SamplingParams {
            temperature: 1.0,
            seed: Some(i as u64),
            max_tokens: r.params.max_tokens,
            ignore_eos: true,
            ..Default::default()
        };
        r.params = Arc::new(p);
    }
    crowd.insert(5, target.clone());
    let together = run_all(&h, &crowd);
    assert_eq!(together[5].ids, alone[0].ids);
    let other_seed = Request::new(
        vec![10, 20, 30, 40],
        SamplingParams {
            seed: Some(43),
            ..(*target.params).clone()
        },
    );
    assert_ne!(
        run_all(&h, &[other_seed])[0].ids,
        alone[0].ids,
        "another seed should sample differently"
    );
    wait::stop_engine(e);
}

#[test]
fn a_prefix_cache_hit_gives_the_same_output_and_computes_less() {
    let e = engine(EngineConfig {
        block_size: 4,
        ..Default::default()
    });
    let h = e.handle();
    let prompt: Vec<u32> = (0..41).map(|i| 5 + i * 7 % 400).collect();
    let req = Request::new(
        prompt,
        SamplingParams {
            max_tokens: 8,
            ignore_eos: true,
            ..Default::default()
        },
    );
    let first = run_all(&h, std::slice::from_ref(&req));
    let second = run_all(&h, std::slice::from_ref(&req));
    assert_eq!(first[0].usage.cached_tokens, 0);
    assert_eq!(
        second[0].usage.cached_tokens, 40,
        "10 full blocks of the 41-token prompt are reused"
    );
    assert_eq!(first[0].ids, second[0].ids);
    assert!(h.stats().prefix_cache_hits >= 40);
    wait::stop_engine(e);
}

#[test]
fn stop_strings_spanning_tokens_are_cut_and_not_returned() {
    let e = engine(EngineConfig::default());
    let h = e.handle();
    let base = SamplingParams {
        max_tokens: 24,
        ignore_eos: true,
        ..Default::default()
    };
    let prompt = vec![40, 41, 42, 43, 44];
    let full = run_all(&h, &[Request::new(prompt.clone(), base.clone())]).remove(0);
    // A stop string made of the text's characters 6..10, likely crossing a token boundary.
    let chars: Vec<char> = full.text.chars().collect();
    assert!(chars.len() > 12, "need some text to cut: {:?}", full.text);
    let stop: String = chars[6..10].iter().collect();
    let want = &full.text[..full.text.find(&stop).unwrap()];
    let req = Request::new(
        prompt,
        SamplingParams {
            stop: vec![stop.clone()],
            ..base
        },
    );
    let cut = run_all(&h, &[req]).remove(0);
    assert_eq!(cut.reason, FinishReason::Stop);
    assert_eq!(cut.text, want, "stop string {stop:?} in {:?}", full.text);
    assert!(cut.ids.len() < full.ids.len());
    wait::stop_engine(e);
}

#[test]
fn logprobs_come_with_each_token_when_asked() {
    let e = engine(EngineConfig::default());
    let h = e.handle();
    let req = Request::new(
        vec![7, 8, 9],
        SamplingParams {
            max_tokens: 5,
            logprobs: Some(3),
            ignore_eos: true,
            ..Default::default()
        },
    );
    let out = run_all(&h, &[req]).remove(0);
    assert_eq!(out.logprobs.len(), 5);
    for (lp, &id) in out.logprobs.iter().zip(&out.ids) {
        assert_eq!(lp.token, id);
        assert!(lp.logprob <= 0.0);
        assert_eq!(lp.top.len(), 3);
        assert_eq!(lp.top[0].0, id, "greedy picks the most likely token");
    }
    wait::stop_engine(e);
}

#[test]
fn dropping_a_stream_aborts_and_frees_its_blocks() {
    let e = engine(EngineConfig {
        max_batch_tokens: 64,
        ..Default::default()
    });
    let h = e.handle();
    let req = Request::new(
        vec![5; 30],
        SamplingParams {
            max_tokens: 200,
            ignore_eos: true,
            ..Default::default()
        },
    );
    let mut stream = h.submit(req).unwrap();
    assert!(matches!(
        wait::next_event(&mut stream),
        Some(Event::Tokens { .. })
    ));
    assert!(h.stats().kv_usage > 0.0);
    drop(stream);
    wait::until_engine_idle(&h);
    assert_eq!(h.stats().finished_abort, 1);
    assert_eq!(h.in_flight(), 0);
    wait::stop_engine(e);
}

#[test]
fn requests_that_cannot_fit_are_refused_with_a_reason() {
    let e = engine(EngineConfig {
        block_size: 4,
        num_blocks: 8,
        ..Default::default()
    });
    let h = e.handle();
    let too_long = Request::new(vec![5; 300], SamplingParams::default());
    let err = h.submit(too_long).err().unwrap().to_string();
    assert!(err.contains("maximum context length"), "{err}");
    let too_big_for_cache = Request::new(vec![5; 40], SamplingParams::default());
    let out = run_all(&h, &[too_big_for_cache]).remove(0);
    assert!(
        matches!(out.reason, FinishReason::Error(ref m) if m.contains("KV-cache blocks")),
        "{:?}",
        out.reason
    );
    let bad_token = Request::new(vec![100_000], SamplingParams::default());
    assert!(h.submit(bad_token).is_err());
    wait::stop_engine(e);
}
