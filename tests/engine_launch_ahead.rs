//! The launch-ahead path (steps sampled "on the device", launched before the previous step's
//! tokens are collected, placeholders filled from the in-flight step, decode steps padded to graph
//! shapes) on the CPU backend's emulated device: it must give exactly the tokens, logprobs and
//! finish reasons of the plain path, whatever mix of requests runs.

mod common;

use std::sync::Arc;

use common::crowd::{crowd, run_all, Outcome};
use common::*;
use tandem::device::cpu::CpuBackend;
use tandem::device::sampling::{DeviceSampling, Sampled};
use tandem::engine::request::{Request, SamplingParams, TokenLogprob};
use tandem::engine::{start, EngineConfig};
use tandem::model::StepLimits;
use tandem::runner::Runner;

fn tiny_llama() -> std::path::PathBuf {
    repo_root().join("tests/models/tiny-llama")
}

fn outcomes(backend: CpuBackend, overlap: bool, reqs: &[Request]) -> Vec<Outcome> {
    let cfg = EngineConfig {
        max_num_seqs: 16,
        max_batch_tokens: 64,
        block_size: 4,
        num_blocks: 48,
        overlap,
        ..Default::default()
    };
    let limits = StepLimits {
        max_tokens: cfg.max_batch_tokens,
        max_seqs: cfg.max_num_seqs,
    };
    let (model, tok) = open_model_on(&tiny_llama(), limits, backend);
    let e = start(model, Arc::new(tok), "tiny-llama".into(), cfg).unwrap();
    let h = e.handle();
    let got = run_all(&h, reqs);
    assert!(h.stats().preemptions > 0, "the pool was meant to preempt");
    // Every request has finished: none may be left running and no KV block held, whatever the
    // launch-ahead path did with placeholders and preemptions on the way.
    wait::until_engine_idle(&h);
    wait::stop_engine(e);
    got
}

#[test]
fn launch_ahead_gives_the_plain_paths_tokens() {
    let reqs = crowd();
    let want = outcomes(CpuBackend::new(), false, &reqs);
    for overlap in [true, false] {
        let got = outcomes(CpuBackend::emulating_device(), overlap, &reqs);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let what = format!("request {i} (overlap {overlap}): {:?}", reqs[i].params);
            assert_eq!((&g.ids, &g.reason), (&w.ids, &w.reason), "{what}");
            // Padded decode steps change the matmuls' row count, so the floats may differ in
            // the last bits (never enough to change a token here).
            assert_eq!(g.logprobs.len(), w.logprobs.len(), "{what}");
            for (a, b) in g.logprobs.iter().zip(&w.logprobs) {
                assert_eq!(a.token, b.token, "{what}");
                assert!(
                    (a.logprob - b.logprob).abs() < 1e-4,
                    "{what}: {a:?} vs {b:?}"
                );
                let ids = |t: &TokenLogprob| t.top.iter().map(|x| x.0).collect::<Vec<_>>();
                assert_eq!(ids(a), ids(b), "{what}");
            }
        }
    }
}

/// Two decode steps of one sequence launched back to back, the second's input carried from the
/// first's sample before the first is collected: the tokens greedy generation gives.
#[test]
fn a_carried_step_reads_the_sample_still_in_flight() {
    let limits = StepLimits {
        max_tokens: 16,
        max_seqs: 4,
    };
    let (mut plain, _) = open_model(&tiny_llama(), limits);
    let (mut model, _) = open_model_on(&tiny_llama(), limits, CpuBackend::emulating_device());
    let prompt = [5u32, 17, 99, 250, 3];
    let want = greedy_tokens(&mut plain, &prompt, 3);

    let mut kv = model.new_kv_cache(8, 4).unwrap();
    let blocks = [2u32, 6];
    let greedy = [DeviceSampling::GREEDY];
    let step = |tokens: &[u32], cached: usize| one_seq_step(tokens, cached, &blocks, 4);
    let first = model
        .launch_sampled(&step(&prompt, 0), &mut kv, &greedy, &[])
        .unwrap();
    // Row 0's input is a placeholder (0) until the device fills it from `first`'s sample 0.
    let second = model
        .launch_sampled(&step(&[0], prompt.len()), &mut kv, &greedy, &[(0, 0)])
        .unwrap();
    let mut got: Vec<Sampled> = Vec::new();
    model.collect_sampled(first, &greedy, &mut got).unwrap();
    let third = model
        .launch_sampled(&step(&[0], prompt.len() + 1), &mut kv, &greedy, &[(0, 0)])
        .unwrap();
    model.collect_sampled(second, &greedy, &mut got).unwrap();
    model.collect_sampled(third, &greedy, &mut got).unwrap();
    let got: Vec<u32> = got.iter().map(|s| s.token).collect();
    assert_eq!(got, want);
}

/// Greedy tokens by the plain forward pass, one step at a time.
fn greedy_tokens(model: &mut Runner<CpuBackend>, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut kv = model.new_kv_cache(8, 4).unwrap();
    let blocks = [1u32, 3];
    let mut tokens = prompt.to_vec();
    let mut cached = 0;
    let mut out = vec![];
    for _ in 0..n {
        let step = one_seq_step(&tokens[cached..], cached, &blocks, 4);
        let logits = model.forward_to_host(&step, &mut kv).unwrap();
        let t = logits[0]
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &l)| if l > b.1 { (i, l) } else { b },
            )
            .0 as u32;
        cached = tokens.len();
        tokens.push(t);
        out.push(t);
    }
    out
}

/// The executor launches a step whose samples the next one needs without waiting for it: two
/// steps are out before anything comes back, and the outputs then come back in order, the second
/// step's input being the first step's sample.
#[test]
fn the_executor_keeps_two_steps_in_flight() {
    let limits = StepLimits {
        max_tokens: 16,
        max_seqs: 4,
    };
    let (mut plain, _) = open_model(&tiny_llama(), limits);
    let prompt = [5u32, 17, 99, 250, 3];
    let want = greedy_tokens(&mut plain, &prompt, 2);
    let greedy = SamplingParams {
        temperature: 0.0,
        ..Default::default()
    };
    assert_eq!(two_steps_in_flight(&prompt, greedy), want);
}

/// A constrained row (here a logit bias) keeps the launch-ahead path: the second step's forward
/// pass is launched before the first step's token is back, its sampling once it is (the bias is
/// applied on the device sampler), so two steps are out at once as for any row.
#[test]
fn the_executor_keeps_two_constrained_steps_in_flight() {
    let prompt = [5u32, 17, 99, 250, 3];
    let biased = SamplingParams {
        temperature: 0.0,
        logit_bias: vec![(42, 100.0), (43, 0.5)],
        ..Default::default()
    };
    assert_eq!(two_steps_in_flight(&prompt, biased), vec![42, 42]);
}

/// A prefill then a decode step of one request submitted to an executor on the emulated device:
/// both must be out before either is collected. Returns their tokens.
fn two_steps_in_flight(prompt: &[u32], params: SamplingParams) -> Vec<u32> {
    use tandem::engine::executor::Executor;
    use tandem::engine::scheduler::batch::{Batch, SampleSlot, SamplerReset};

    let limits = StepLimits {
        max_tokens: 16,
        max_seqs: 4,
    };
    let (model, _) = open_model_on(&tiny_llama(), limits, CpuBackend::emulating_device());
    let kv = model.new_kv_cache(8, 4).unwrap();
    let mut executor = Executor::new(model, kv);
    let blocks = [1u32, 3];
    let slot = SampleSlot { id: 7, epoch: 0 };
    let prefill = Batch {
        step: one_seq_step(prompt, 0, &blocks, 4),
        samples: vec![slot],
        sampler_resets: vec![SamplerReset {
            id: 7,
            params: Arc::new(params),
            seed: 0,
            prompt: vec![],
            generated: vec![],
        }],
        ..Default::default()
    };
    let decode = Batch {
        step: one_seq_step(&[0], prompt.len(), &blocks, 4),
        carry: vec![(0, 0)],
        samples: vec![slot],
        ..Default::default()
    };
    assert!(
        executor.submit(prefill).is_empty(),
        "the prefill was waited for"
    );
    assert!(
        executor.submit(decode).is_empty(),
        "the decode was waited for"
    );
    assert!(executor.pending_full());
    let first = executor.collect_oldest().unwrap();
    let second = executor.collect_oldest().unwrap();
    assert!(executor.collect_oldest().is_none());
    [first, second]
        .iter()
        .map(|o| {
            assert_eq!(o.error, None);
            assert!(o.failed.is_empty(), "{:?}", o.failed);
            o.sampled[0].token
        })
        .collect()
}

/// Rows with a grammar or a logit bias on the device sampler (their step's sampling launched
/// once the token before is recorded, with the masks computed then): a crowd holding them gives
/// the plain path's tokens, and grammars survive the preemptions the small pool forces (their
/// state is replayed).
#[test]
fn constrained_and_biased_rows_give_the_plain_paths_tokens() {
    use tandem::model::tokenizer::Tokenizer;

    let mut reqs = crowd();
    common::crowd::constrain_crowd(&mut reqs, &tiny_llama());
    let want = outcomes(CpuBackend::new(), false, &reqs);
    let got = outcomes(CpuBackend::emulating_device(), true, &reqs);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!((&g.ids, &g.reason), (&w.ids, &w.reason), "request {i}");
    }
    let tok = Tokenizer::from_hf_dir(&tiny_llama()).unwrap();
    common::crowd::check_constrained_crowd(&got, |ids| tok.decode(ids, true).unwrap());
}
