//! Shared by the integration tests: fixtures written by `scripts/make_fixtures.py` (transformers
//! as the oracle), model loading, and a tiny driver that runs many sequences through one cache.
#![allow(dead_code)]

pub mod crowd;
#[cfg(feature = "kernel-emu")]
pub mod emu;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod kernel_cases;
pub mod wait;

use serde::Deserialize;
use std::path::{Path, PathBuf};

use tandem::device::backend::Backend;
use tandem::device::cpu::CpuBackend;
use tandem::device::kv_cache::KvCache;
use tandem::device::step::{SeqChunk, StepInput};
use tandem::model::default_model::default_model_path;
use tandem::model::loader::ModelSource;
use tandem::model::tokenizer::Tokenizer;
use tandem::model::weight_format::WeightFormat;
use tandem::model::StepLimits;
use tandem::runner::Runner;

/// Top-5 logits must match transformers' within this (absolute).
pub const LOGIT_TOL: f32 = 1e-3;

#[derive(Deserialize, Debug)]
pub struct Fixture {
    pub model: String,
    pub model_path: String,
    pub format: String,
    pub cases: Vec<Case>,
    #[serde(default)]
    pub tokenizer_cases: Vec<TokenizerCase>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct Case {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    /// False for prompts rendered from a chat template (they carry their special tokens).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    pub generated_ids: Vec<u32>,
    pub top5_ids: Vec<Vec<u32>>,
    pub top5_logits: Vec<Vec<f32>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Debug)]
pub struct TokenizerCase {
    pub text: String,
    pub ids: Vec<u32>,
    pub decoded: String,
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("tests/fixtures"))
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

pub fn load_fixture(name: &str) -> Fixture {
    let path = repo_root()
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's model path, or `None` (with a "skipped" line) when the default model is absent.
pub fn model_path(f: &Fixture) -> Option<PathBuf> {
    if f.model_path == "default" {
        let p = default_model_path();
        if !p.exists() {
            eprintln!(
                "skipped: {}: default model not found at {} (run `tandem generate` once, or .ci/run)",
                f.model,
                p.display()
            );
            return None;
        }
        return Some(p);
    }
    Some(repo_root().join(&f.model_path))
}

pub fn open_model(path: &Path, limits: StepLimits) -> (Runner<CpuBackend>, Tokenizer) {
    open_model_on(path, limits, CpuBackend::new())
}

pub fn open_model_on(
    path: &Path,
    limits: StepLimits,
    backend: CpuBackend,
) -> (Runner<CpuBackend>, Tokenizer) {
    // f32 weights: these models are compared against transformers' logits, exactly.
    ModelSource::open(path)
        .map(|s| s.with_weight_format(WeightFormat::F32))
        .and_then(|s| tandem::runner::load(s, backend, limits))
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()))
}

/// A step of one sequence: `tokens` new after `cached` ones, its logits wanted.
pub fn one_seq_step(tokens: &[u32], cached: usize, blocks: &[u32], block_size: usize) -> StepInput {
    StepInput::build(
        &[SeqChunk {
            tokens,
            num_cached: cached,
            block_table: blocks,
            want_logits: true,
        }],
        block_size,
    )
    .unwrap()
}

/// One sequence in a [`Driver`]: its tokens so far, how many are cached, and its blocks.
pub struct Seq {
    pub tokens: Vec<u32>,
    pub cached: usize,
    pub blocks: Vec<u32>,
}

/// Runs several sequences through one paged cache, handing out blocks from a given order so
/// tests can scatter them. Any backend: the CUDA parity tests drive the GPU model with it.
pub struct Driver<B: Backend = CpuBackend> {
    pub model: Runner<B>,
    pub kv: KvCache<B>,
    pub block_size: usize,
    free_blocks: Vec<u32>,
}

impl<B: Backend> Driver<B> {
    pub fn new(
        model: Runner<B>,
        num_blocks: usize,
        block_size: usize,
        block_order: Vec<u32>,
    ) -> Self {
        let kv = model.new_kv_cache(num_blocks, block_size).unwrap();
        let mut free_blocks = block_order;
        free_blocks.reverse(); // pop() hands them out in the given order
        Driver {
            model,
            kv,
            block_size,
            free_blocks,
        }
    }

    /// Runs one step in which sequence `i` computes `counts[i]` new tokens (0 = sits out);
    /// returns the last-row logits of each participating sequence.
    pub fn step(&mut self, seqs: &mut [Seq], counts: &[usize]) -> Vec<Vec<f32>> {
        for (s, &n) in seqs.iter_mut().zip(counts) {
            let needed = (s.cached + n).div_ceil(self.block_size);
            while s.blocks.len() < needed {
                s.blocks
                    .push(self.free_blocks.pop().expect("test cache too small"));
            }
        }
        let chunks: Vec<SeqChunk> = seqs
            .iter()
            .zip(counts)
            .filter(|(_, &n)| n > 0)
            .map(|(s, &n)| SeqChunk {
                tokens: &s.tokens[s.cached..s.cached + n],
                num_cached: s.cached,
                block_table: &s.blocks,
                want_logits: true,
            })
            .collect();
        let step = StepInput::build(&chunks, self.block_size).unwrap();
        let logits = self.model.forward_to_host(&step, &mut self.kv).unwrap();
        for (s, &n) in seqs.iter_mut().zip(counts) {
            s.cached += n;
        }
        logits
    }
}

/// The fixture's cases one at a time, each in a fresh cache: prefill the prompt, then decode
/// the fixture's tokens one by one, checking every step. `label` prefixes failure messages.
pub fn check_each_case_alone<B: Backend>(model: Runner<B>, f: &Fixture, label: &str) -> Runner<B> {
    let mut driver = Driver::new(model, 64, 16, (0..64).collect());
    for case in &f.cases {
        let mut seqs = vec![Seq {
            tokens: [&case.prompt_ids[..], &case.generated_ids[..]].concat(),
            cached: 0,
            blocks: vec![],
        }];
        let what = format!("{label} alone {:?}", case.prompt);
        let logits = driver.step(&mut seqs, &[case.prompt_ids.len()]);
        check_step(&what, &logits[0], case, 0);
        for i in 1..case.generated_ids.len() {
            let logits = driver.step(&mut seqs, &[1]);
            check_step(&what, &logits[0], case, i);
        }
        driver = Driver::new(driver.model, 64, 16, (0..64).collect());
    }
    driver.model
}

/// One fixture case in a fresh cache over scattered blocks of `block_size`: its prompt
/// prefilled `chunk` tokens a step, then the fixture's tokens decoded one a step. The prompt's
/// last logits and every decode step are checked; `label` prefixes failure messages.
pub fn check_case_chunked<B: Backend>(
    model: Runner<B>,
    case: &Case,
    chunk: usize,
    block_size: usize,
    label: &str,
) -> Runner<B> {
    let num_blocks = (case.prompt_ids.len() + case.generated_ids.len()).div_ceil(block_size) + 3;
    let mut driver = Driver::new(model, num_blocks, block_size, scattered(num_blocks));
    let mut seqs = vec![Seq {
        tokens: [&case.prompt_ids[..], &case.generated_ids[..]].concat(),
        cached: 0,
        blocks: vec![],
    }];
    let what = format!("{label} chunks of {chunk} {:?}", case.prompt);
    let n = case.prompt_ids.len();
    let mut logits = Vec::new();
    while seqs[0].cached < n {
        let k = chunk.min(n - seqs[0].cached);
        logits = driver.step(&mut seqs, &[k]).remove(0);
    }
    check_step(&what, &logits, case, 0);
    for i in 1..case.generated_ids.len() {
        let logits = driver.step(&mut seqs, &[1]);
        check_step(&what, &logits[0], case, i);
    }
    driver.model
}

/// All the fixture's cases in one flat batch, staggered so prefill chunks and decode tokens
/// share steps (case i joins at step i with its whole prompt, then decodes a token a step),
/// over 4-token blocks handed out in a scrambled order; every step checked.
pub fn check_all_cases_batched<B: Backend>(
    model: Runner<B>,
    f: &Fixture,
    label: &str,
) -> Runner<B> {
    let block_size = 4;
    let num_blocks = f
        .cases
        .iter()
        .map(|c| (c.prompt_ids.len() + c.generated_ids.len()).div_ceil(block_size))
        .sum::<usize>()
        + 3;
    let mut driver = Driver::new(model, num_blocks, block_size, scattered(num_blocks));
    let mut seqs: Vec<Seq> = f
        .cases
        .iter()
        .map(|c| Seq {
            tokens: [&c.prompt_ids[..], &c.generated_ids[..]].concat(),
            cached: 0,
            blocks: vec![],
        })
        .collect();
    let steps = f
        .cases
        .iter()
        .enumerate()
        .map(|(i, c)| i + c.generated_ids.len())
        .max()
        .unwrap_or(0);
    for t in 0..steps {
        let counts: Vec<usize> = f
            .cases
            .iter()
            .enumerate()
            .map(|(i, c)| match t {
                t if t == i => c.prompt_ids.len(),
                t if t > i && t - i < c.generated_ids.len() => 1,
                _ => 0,
            })
            .collect();
        let logits = driver.step(&mut seqs, &counts);
        let active = counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, _)| i);
        for (row, i) in active.enumerate() {
            check_step(
                &format!("{label} batched {:?}", f.cases[i].prompt),
                &logits[row],
                &f.cases[i],
                t - i,
            );
        }
    }
    let scattered_blocks = seqs
        .iter()
        .any(|s| s.blocks.windows(2).any(|w| w[1] != w[0] + 1));
    assert!(
        scattered_blocks,
        "the test meant to use non-contiguous blocks"
    );
    driver.model
}

/// A permutation of `0..n` that is far from sorted (deterministic).
pub fn scattered(n: usize) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut state = 0x9E37_79B9u64;
    for i in (1..n).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (state >> 33) as usize % (i + 1));
    }
    v
}

/// Asserts that `logits` agrees with the fixture step: transformers' top-5 ids carry the same
/// logits here (within [`LOGIT_TOL`]) and the greedy choice is the same.
pub fn check_step(what: &str, logits: &[f32], case: &Case, step: usize) {
    let want_ids = &case.top5_ids[step];
    let want = &case.top5_logits[step];
    for (&id, &w) in want_ids.iter().zip(want) {
        let got = logits[id as usize];
        assert!(
            (got - w).abs() <= LOGIT_TOL,
            "{what}: step {step}: logit of token {id} is {got}, transformers has {w}"
        );
    }
    let argmax = tandem::device::sampling::processors::argmax(logits);
    assert_eq!(
        argmax, case.generated_ids[step],
        "{what}: step {step}: greedy token {argmax}, transformers chose {}",
        case.generated_ids[step]
    );
}

/// Asserts `|got - want| <= atol + |want| * rtol` everywhere (NaN never passes).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut bad = 0;
    let mut first = None;
    let mut worst = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let ok = err <= atol + w.abs() * rtol; // false for NaN
        if !ok {
            bad += 1;
            first.get_or_insert((i, g, w));
        }
        if err.is_finite() {
            worst = worst.max(err);
        }
    }
    if let Some((i, g, w)) = first {
        panic!(
            "{what}: {bad} of {} elements out of tolerance (atol {atol}, rtol {rtol}); first at \
             {i}: got {g}, want {w}",
            got.len()
        );
    }
    eprintln!("{what}: ok, {} elements, max |err| {worst:e}", got.len());
}
