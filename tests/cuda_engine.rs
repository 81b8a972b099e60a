//! The GPU's launch-ahead path against eager steps and the CPU: decode steps replayed from CUDA
//! graphs compute the logits eager steps compute (first replay = capture, second = replay);
//! placeholders carried on the device read the sample still in flight; and a mixed crowd through
//! the real engine (launch-ahead, graphs, device sampling, host sampling for penalties) gives the
//! CPU's tokens.
//!
//! Built only with `--features cuda`. Without a CUDA driver they run on the emulated device when
//! built with `kernel-emu` too (device/cuda/emulated.rs; the test command does), and a device that
//! fails to open fails them; in a plain `cuda` build without a GPU every test prints
//! `skipped: <name>: no CUDA device (<reason>)` and returns: never a silent pass.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::crowd::{crowd, run_all, Outcome};
use common::gpu::*;
use common::{one_seq_step, open_model, repo_root, wait};
use tandem::device::backend::Backend;
use tandem::device::cuda::{CudaBackend, CudaOptions, DType, GemmPath};
use tandem::device::sampling::{DeviceSampling, Sampled};
use tandem::device::step::{SeqChunk, StepInput};
use tandem::engine::request::{Request, SamplingParams};
use tandem::engine::{start, EngineConfig};
use tandem::model::loader::ModelSource;
use tandem::model::StepLimits;
use tandem::runner::Runner;

const LIMITS: StepLimits = StepLimits {
    // The graphs test prefills up to 20 sequences of up to 23 tokens in one step.
    max_tokens: 512,
    max_seqs: 32,
};
const BLOCK: usize = 4;

fn tiny_llama() -> std::path::PathBuf {
    repo_root().join("tests/models/tiny-llama")
}

fn cuda_model(dtype: DType, options: CudaOptions) -> Runner<CudaBackend> {
    let backend = CudaBackend::new(0, dtype, options).unwrap();
    ModelSource::open(&tiny_llama())
        .and_then(|s| tandem::runner::load(s, backend, LIMITS))
        .unwrap()
        .0
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// For 1, 3, 9 and 20 sequences of different lengths (prefilled eagerly, blocks scattered), a
/// decode step run eagerly and the same step padded to its graph shape, run six times (in each of
/// the two metadata slots: a warm-up run eagerly, then captured and launched, then replayed): the
/// same logits (to the dtype's tolerance) and the greedy token of those logits. bf16 also with
/// the skinny GEMM kernel and a cuBLASLt algorithm (a k-split on the emulated library) forced,
/// whose split-k workspaces are captured too, and once with programmatic dependent launch off
/// (on by default from compute capability 9.0, which the emulated device reports: there the
/// driver's count of dependent launches shows each setting reached it).
#[test]
fn graphs_replay_what_eager_steps_compute() {
    let runs = [
        (DType::F32, None, true),
        (DType::Bf16, None, true),
        (DType::Bf16, Some(GemmPath::Skinny(4)), true),
        (DType::Bf16, Some(GemmPath::Lt(1)), true),
        (DType::Bf16, None, false),
    ];
    for (dtype, gemm, pdl) in runs {
        let Some(probe) = gpu_as("graphs_replay_what_eager_steps_compute", dtype) else {
            return;
        };
        let options = CudaOptions {
            gemm,
            pdl,
            ..CudaOptions::default()
        };
        let mut model = cuda_model(dtype, options);
        let dependents_before = dependent_launches(model.backend());
        let vocab = model.cfg().vocab_size;
        let mut rng = StdRng::seed_from_u64(5);
        for n in [1usize, 3, 9, 20] {
            let mut kv = model.new_kv_cache(256, BLOCK).unwrap();
            let mut order: Vec<u32> = (0..256).collect();
            order.reverse();
            let seqs: Vec<(Vec<u32>, Vec<u32>)> = (0..n)
                .map(|_| {
                    let len = 1 + rng.random_range(0..23usize);
                    let toks = (0..len + 1).map(|_| rng.random_range(3..400u32)).collect();
                    let blocks = (0..(len + 1).div_ceil(BLOCK))
                        .map(|_| order.pop().unwrap())
                        .collect();
                    (toks, blocks)
                })
                .collect();
            fn chunk((t, b): &(Vec<u32>, Vec<u32>), decode: bool) -> SeqChunk<'_> {
                let len = t.len() - 1;
                SeqChunk {
                    tokens: if decode { &t[len..] } else { &t[..len] },
                    num_cached: if decode { len } else { 0 },
                    block_table: b,
                    want_logits: true,
                }
            }
            let prefill: Vec<_> = seqs.iter().map(|s| chunk(s, false)).collect();
            let prefill = StepInput::build(&prefill, BLOCK).unwrap();
            model.forward(&prefill, &mut kv).unwrap();
            let decode: Vec<_> = seqs.iter().map(|s| chunk(s, true)).collect();
            let step = StepInput::build(&decode, BLOCK).unwrap();

            // `forward` runs a step as it is, op by op: only sampled steps are padded to a
            // graph shape, captured and replayed.
            let eager = model.forward_to_host(&step, &mut kv).unwrap();
            let greedy = vec![DeviceSampling::GREEDY; n];
            // Steps alternate between the model's two metadata slots, each with its own graphs:
            // six runs are a warm-up, a capture and a replay in each.
            for run in 0..6 {
                let round = ["warm-up (eager)", "capture", "replay"][run / 2];
                let mut out: Vec<Sampled> = Vec::new();
                assert!(model
                    .forward_sample(&step, &mut kv, &greedy, &mut out)
                    .unwrap());
                let mut logits = Vec::new();
                model.logits_into(n, &mut logits).unwrap();
                let (atol, rtol) = tol(&probe, 1e-4, 1e-4);
                let what = format!("{dtype:?} {gemm:?} {n} sequences, run {run}: {round}");
                let want: Vec<f32> = eager.concat();
                assert_close(&what, &logits, &want, atol, rtol);
                for (i, s) in out.iter().enumerate() {
                    assert_eq!(
                        s.token,
                        argmax(&logits[i * vocab..(i + 1) * vocab]),
                        "{what}: row {i}"
                    );
                }
            }
            eprintln!(
                "graphs_replay_what_eager_steps_compute: {dtype:?} {gemm:?} {n} sequences: ok"
            );
        }
        if let (Some(before), Some(after)) =
            (dependents_before, dependent_launches(model.backend()))
        {
            assert!(model.backend().pdl() == pdl, "pdl setting");
            if pdl {
                assert!(after > before, "no kernel was launched as a dependent");
            } else {
                assert_eq!(after, before, "kernels launched as dependents with pdl off");
            }
        }
    }
}

/// Three steps of one sequence launched back to back, each decode step's input carried on the
/// device from the step before while that one is still in flight: the CPU's greedy tokens.
#[test]
fn launch_ahead_carries_on_the_device() {
    if gpu("launch_ahead_carries_on_the_device").is_none() {
        return;
    }
    let (mut cpu, _) = open_model(&tiny_llama(), LIMITS);
    let mut gpu_model = cuda_model(DType::F32, CudaOptions::default());
    let prompt = [5u32, 17, 99, 250, 3];
    let blocks = [2u32, 6, 9];
    let step = |tokens: &[u32], cached: usize| one_seq_step(tokens, cached, &blocks, BLOCK);
    // The CPU, one step at a time.
    let mut kv = cpu.new_kv_cache(16, BLOCK).unwrap();
    let mut want = vec![];
    let mut tokens = prompt.to_vec();
    for i in 0..4 {
        let cached = if i == 0 { 0 } else { tokens.len() - 1 };
        let logits = cpu
            .forward_to_host(&step(&tokens[cached..], cached), &mut kv)
            .unwrap();
        let t = argmax(&logits[0]);
        tokens.push(t);
        want.push(t);
    }
    // The GPU, each step launched before the previous one is collected.
    let mut kv = gpu_model.new_kv_cache(16, BLOCK).unwrap();
    let greedy = [DeviceSampling::GREEDY];
    let n = prompt.len();
    let mut got: Vec<Sampled> = vec![];
    let mut prev = gpu_model
        .launch_sampled(&step(&prompt, 0), &mut kv, &greedy, &[])
        .unwrap();
    for i in 0..3 {
        let next = gpu_model
            .launch_sampled(&step(&[0], n + i), &mut kv, &greedy, &[(0, 0)])
            .unwrap();
        gpu_model.collect_sampled(prev, &greedy, &mut got).unwrap();
        prev = next;
    }
    gpu_model.collect_sampled(prev, &greedy, &mut got).unwrap();
    let got: Vec<u32> = got.iter().map(|s| s.token).collect();
    assert_eq!(got, want);
}

fn engine_outcomes<B>(
    model: Runner<B>,
    tok: tandem::model::tokenizer::Tokenizer,
    reqs: &[Request],
) -> Vec<Outcome>
where
    B: Backend + Send + 'static,
    B::Tensor: Send,
    B::Weight: Send,
    B::Meta: Send,
{
    let cfg = EngineConfig {
        max_num_seqs: 16,
        max_batch_tokens: 64,
        block_size: BLOCK,
        num_blocks: 48,
        ..Default::default()
    };
    let e = start(model, Arc::new(tok), "tiny-llama".into(), cfg).unwrap();
    let h = e.handle();
    let got = run_all(&h, reqs);
    // Every request has finished: none may be left running and no KV block held (graphs,
    // launch-ahead and preemption included).
    wait::until_engine_idle(&h);
    wait::stop_engine(e);
    got
}

/// The crowd (greedy, seeded top-k / top-p / min-p, logprobs, penalties; preempted) through the
/// engine on the GPU in f32 — steps launched ahead, decode steps from graphs, sampled on the
/// device except where penalties keep them on the host — against the CPU engine. Different
/// matmul shapes (padding) can flip a near-tie, so up to 2 of 40 requests may differ; each
/// difference is printed.
#[test]
fn engine_on_the_gpu_gives_the_cpus_tokens() {
    if gpu("engine_on_the_gpu_gives_the_cpus_tokens").is_none() {
        return;
    }
    let got = cpu_and_gpu_engines(&crowd());
    assert!(count_differences(&got.0, &got.1) <= 2);
}

/// `reqs` through the engine on the GPU in f32 and on the CPU: (GPU's outcomes, CPU's).
fn cpu_and_gpu_engines(reqs: &[Request]) -> (Vec<Outcome>, Vec<Outcome>) {
    let limits = StepLimits {
        max_tokens: 64,
        max_seqs: 16,
    };
    let (cpu, tok) = open_model(&tiny_llama(), limits);
    let want = engine_outcomes(cpu, tok, reqs);
    let backend = CudaBackend::new(0, DType::F32, CudaOptions::default()).unwrap();
    let (gpu_model, tok) = ModelSource::open(&tiny_llama())
        .and_then(|s| tandem::runner::load(s, backend, limits))
        .unwrap();
    (engine_outcomes(gpu_model, tok, reqs), want)
}

/// The crowd with grammars and logit biases on a quarter of its requests each, through the
/// engine on the GPU: their steps launched ahead with the masks and biases applied by the device
/// sampler (the sampling of such a step launched once the token before it is back), against the
/// CPU engine. A grammar's output must match its regex, and up to 2 of 40 requests may differ
/// (near-ties, as above).
#[test]
fn constrained_rows_on_the_gpu_give_the_cpus_tokens() {
    if gpu("constrained_rows_on_the_gpu_give_the_cpus_tokens").is_none() {
        return;
    }
    let mut reqs = crowd();
    common::crowd::constrain_crowd(&mut reqs, &tiny_llama());
    let (got, want) = cpu_and_gpu_engines(&reqs);
    assert!(count_differences(&got, &want) <= 2);
    let tok = tandem::model::tokenizer::Tokenizer::from_hf_dir(&tiny_llama()).unwrap();
    common::crowd::check_constrained_crowd(&got, |ids| tok.decode(ids, true).unwrap());
}

/// Prints each request whose tokens differ; returns how many do (after checking that each
/// ended the same way, after as many tokens).
fn count_differences(got: &[Outcome], want: &[Outcome]) -> usize {
    let mut differ = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.reason, w.reason, "request {i}");
        assert_eq!(g.ids.len(), w.ids.len(), "request {i}");
        if g.ids != w.ids {
            differ += 1;
            eprintln!("request {i}: gpu {:?}\n            cpu {:?}", g.ids, w.ids);
        }
    }
    eprintln!("{} of {} requests identical", got.len() - differ, got.len());
    differ
}

/// Six requests decoding side by side for 48 tokens, all sampled on the device (greedy, seeded
/// top-k / top-p, min-p with logprobs): once past their prefills, every step is a plain decode
/// step of one shape for many steps, so after a warm-up and a capture per shape and metadata
/// slot the engine's steps are graph replays, launched ahead with their inputs carried on the
/// device. The replays are counted, and the tokens must be the CPU engine's (one near-tie flip
/// allowed, as above). (The crowd above mixes in host-sampled requests and prefills, so hardly
/// any of its steps can come from a graph.)
#[test]
fn steady_decoding_replays_graphs_and_gives_the_cpus_tokens() {
    const NAME: &str = "steady_decoding_replays_graphs_and_gives_the_cpus_tokens";
    if gpu(NAME).is_none() {
        return;
    }
    let limits = StepLimits {
        max_tokens: 64,
        max_seqs: 16,
    };
    let reqs: Vec<Request> = (0..6u64)
        .map(|i| {
            let prompt = (0..5)
                .map(|j| 4 + ((i * 37 + j * 11) % 400) as u32)
                .collect();
            let mut p = SamplingParams {
                max_tokens: 48,
                ignore_eos: true,
                seed: Some(i),
                ..Default::default()
            };
            match i % 3 {
                0 => p.temperature = 0.0,
                1 => (p.temperature, p.top_k, p.top_p) = (0.8, 40, 0.9),
                _ => (p.temperature, p.min_p, p.logprobs) = (1.1, 0.05, Some(3)),
            }
            Request::new(prompt, p)
        })
        .collect();
    let (cpu, tok) = open_model(&tiny_llama(), limits);
    let want = engine_outcomes(cpu, tok, &reqs);
    let backend = CudaBackend::new(0, DType::F32, CudaOptions::default()).unwrap();
    let replays = backend.graph_replays();
    let (gpu_model, tok) = ModelSource::open(&tiny_llama())
        .and_then(|s| tandem::runner::load(s, backend, limits))
        .unwrap();
    let got = engine_outcomes(gpu_model, tok, &reqs);
    let replayed = replays.load(Ordering::Relaxed);
    eprintln!("{NAME}: {replayed} of ~47 decode steps replayed from graphs");
    // 47 decode steps over block-table widths 2, 4, 8 and 16 (4-token blocks), in two slots:
    // each (width, slot) pair warms up, captures, then replays.
    assert!(
        replayed >= 20,
        "only {replayed} decode steps were graph replays"
    );
    assert!(count_differences(&got, &want) <= 1);
}
