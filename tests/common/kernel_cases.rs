//! Kernel test cases shared by the GPU parity tests (tests/cuda_parity.rs,
//! tests/cuda_attention.rs) and the emulated kernels (tests/kernel_emu.rs): layouts, shapes and
//! random paged-attention steps.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tandem::device::backend::{AttentionParams, CacheShape, QkvLayout};
use tandem::device::cpu;
use tandem::device::sampling::{
    sample, sample_entry, DeviceSampling, RowConstraint, Sampled, SamplerScratch, SamplerState,
};
use tandem::device::step::{SeqChunk, StepInput};
use tandem::engine::request::SamplingParams;

use super::scattered;

/// (rows, dim) for the norms: one row, non-multiples of the block, wide rows, width 1.
pub const NORM_SHAPES: [(usize, usize); 5] = [(1, 64), (7, 100), (33, 4096), (3, 5003), (2, 1)];

/// q/k/v layouts: GQA and MHA, head_dim 16 to 256.
pub const LAYOUTS: [QkvLayout; 4] = [
    QkvLayout {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
    },
    QkvLayout {
        num_heads: 8,
        num_kv_heads: 1,
        head_dim: 128,
    },
    QkvLayout {
        num_heads: 5,
        num_kv_heads: 5,
        head_dim: 80,
    },
    QkvLayout {
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 256,
    },
];

/// Layouts whose widths miss the element-wise kernels' vector paths (rope: half not a multiple
/// of 4 or 8 elements; qk_norm: head_dim not a multiple of 4; write_kv: rows not a multiple of 16
/// bytes), in one dtype or both, so the scalar fallbacks run too.
pub const ODD_LAYOUTS: [QkvLayout; 3] = [
    QkvLayout {
        num_heads: 3,
        num_kv_heads: 1,
        head_dim: 18,
    },
    QkvLayout {
        num_heads: 2,
        num_kv_heads: 2,
        head_dim: 24,
    },
    QkvLayout {
        num_heads: 4,
        num_kv_heads: 1,
        head_dim: 36,
    },
];

/// Layouts for the decode kernel: GQA ratios 1, 2, 3, 4, 5, 8, 16 and head_dim 32 to 256 (its
/// instances: widths 64 (two key rows per warp), 128 and 256, 1 to 8 heads per warp, groups in
/// up to 4 chunks), plus a head_dim that is not a multiple of 4 (falls back to the general
/// kernel).
pub const DECODE_LAYOUTS: [(usize, usize, usize); 12] = [
    (4, 4, 64),
    (32, 8, 64),
    (16, 1, 64),
    (8, 4, 32),
    (8, 2, 80),
    (32, 8, 128),
    (8, 1, 128),
    (16, 1, 128),
    (9, 3, 64),
    (10, 2, 96),
    (8, 1, 256),
    (6, 3, 18),
];

/// The absolute tolerance for the tensor-core prefill kernel (paged_attention_prefill.cu, bf16;
/// rtol stays bf16's 1e-2). It rounds the softmax weights P to bf16 for the P.V product (as
/// FlashAttention does; l sums the rounded weights, so they still sum to 1), which moves an output
/// by up to ~sum_j p_j 2^-9 |v_j - out| on top of the output's own rounding: measured in
/// tests/kernel_emu.rs (`paged_attention_prefill_tc`, ~2M outputs) at most 1.25e-3 beyond the
/// rtol band (max |err| 2.8e-3), against ~1e-8 for the general kernel, whose only rounding is
/// the output's. 2e-3 leaves that a margin and still fails any real error (off by O(0.1)).
pub const PREFILL_TC_ATOL: f32 = 2e-3;

/// A random step: sequence `i` has `q_lens[i]` new rows and context `ctx_lens[i]`, its blocks
/// handed out from a scrambled permutation of the cache's blocks.
pub fn attention_step(
    q_lens: &[usize],
    ctx_lens: &[usize],
    block_size: usize,
) -> (StepInput, usize) {
    let per_seq: Vec<usize> = ctx_lens.iter().map(|c| c.div_ceil(block_size)).collect();
    let num_blocks = per_seq.iter().sum::<usize>() + 3;
    let order = scattered(num_blocks);
    let mut tables = Vec::new();
    let mut next = 0;
    for &n in &per_seq {
        tables.push(order[next..next + n].to_vec());
        next += n;
    }
    let tokens: Vec<Vec<u32>> = q_lens.iter().map(|&q| vec![0; q]).collect();
    let chunks: Vec<SeqChunk> = q_lens
        .iter()
        .zip(ctx_lens)
        .enumerate()
        .map(|(i, (&q, &c))| SeqChunk {
            tokens: &tokens[i],
            num_cached: c - q,
            block_table: &tables[i],
            want_logits: true,
        })
        .collect();
    (StepInput::build(&chunks, block_size).unwrap(), num_blocks)
}

/// One attention check's inputs and the CPU reference output: a random step
/// ([`attention_step`]), a cache over it, q/k/v drawn from `seed` (q scaled by 3: a peakier
/// softmax than uniform inputs give) and rounded by `round` to what the device stores.
pub struct AttentionCase {
    pub step: StepInput,
    pub params: AttentionParams,
    pub qkv: Vec<f32>,
    pub k_cache: Vec<f32>,
    pub v_cache: Vec<f32>,
    pub want: Vec<f32>,
}

impl AttentionCase {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        layout: QkvLayout,
        block_size: usize,
        window: Option<usize>,
        q_lens: &[usize],
        ctx_lens: &[usize],
        seed: u64,
        round: &dyn Fn(&[f32]) -> Vec<f32>,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut uniform = |n: usize, scale: f32| -> Vec<f32> {
            let v: Vec<f32> = (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0) * scale)
                .collect();
            round(&v)
        };
        let (step, num_blocks) = attention_step(q_lens, ctx_lens, block_size);
        let cache = CacheShape {
            num_blocks,
            block_size,
            num_kv_heads: layout.num_kv_heads,
            head_dim: layout.head_dim,
        };
        let params = AttentionParams {
            layout,
            cache,
            scale: 1.0 / (layout.head_dim as f32).sqrt(),
            sliding_window: window,
        };
        let rows = step.num_tokens();
        let qkv = uniform(rows * layout.row_width(), 3.0);
        let k_cache = uniform(cache.elements(), 1.0);
        let v_cache = uniform(cache.elements(), 1.0);
        let mut want = vec![0.0; rows * layout.q_width()];
        cpu::attention(&qkv, &k_cache, &v_cache, &step, &params, &mut want).unwrap();
        AttentionCase {
            step,
            params,
            qkv,
            k_cache,
            v_cache,
            want,
        }
    }
}

// ---- Device sampling (kernels/sampling.cu) against the CPU sampler ----
/// The sampling parameter sets the tests cycle through: (name, params).
pub fn sampling_cases() -> Vec<(&'static str, SamplingParams)> {
    let p = |temperature: f32, top_k: usize, top_p: f32, min_p: f32| SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        ..SamplingParams::default()
    };
    vec![
        ("greedy", p(0.0, 0, 1.0, 0.0)),
        ("top_k 1 (greedy)", p(0.9, 1, 1.0, 0.0)),
        ("temperature 0.7", p(0.7, 0, 1.0, 0.0)),
        ("temperature 1.5", p(1.5, 0, 1.0, 0.0)),
        ("top_k 5", p(1.0, 5, 1.0, 0.0)),
        ("top_k 200", p(0.8, 200, 1.0, 0.0)),
        ("top_p 0.5", p(1.0, 0, 0.5, 0.0)),
        ("top_p 0.9", p(0.8, 0, 0.9, 0.0)),
        ("top_p 0", p(1.0, 0, 0.0, 0.0)),
        ("min_p 0.1", p(1.0, 0, 1.0, 0.1)),
        ("min_p 0.6", p(1.2, 0, 1.0, 0.6)),
        ("top_k 40 top_p 0.9 min_p 0.05", p(0.8, 40, 0.9, 0.05)),
        ("top_k 1000 top_p 0.7", p(1.0, 1000, 0.7, 0.0)),
        ("top_p 0.95 min_p 0.02", p(0.6, 0, 0.95, 0.02)),
    ]
}

/// `rows` seeded logit rows of width `vocab`, rounded as the device stores them (see the section comment).
fn sampling_logits(
    rng: &mut StdRng,
    rows: usize,
    vocab: usize,
    round: &dyn Fn(&[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * vocab);
    for r in 0..rows {
        let scale = [0.5f32, 2.0, 6.0, 12.0][r % 4];
        let mut row: Vec<f32> = (0..vocab)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale)
            .collect();
        if vocab > 8 {
            for i in (0..vocab).step_by(97).skip(1) {
                row[i] = row[i / 2]; // exact ties
            }
            let max_at = (0..vocab).fold(0, |m, i| if row[i] > row[m] { i } else { m });
            row[vocab - 1 - (r % 3)] = row[max_at]; // a tie at the top
            if r % 5 == 1 {
                row[3] = f32::NAN;
                row[5] = f32::NEG_INFINITY;
            }
        }
        v.extend(round(&row));
    }
    v
}

/// Case `i` of `cases` (cycling), with the `i`-th of `logprobs` (cycling).
fn cycled(
    cases: &[(&'static str, SamplingParams)],
    i: usize,
    logprobs: [Option<usize>; 4],
) -> (&'static str, SamplingParams) {
    let (name, mut params) = cases[i % cases.len()].clone();
    params.logprobs = logprobs[i % 4];
    (name, params)
}

/// Logit rows with a sampler state per row (the parameter sets of [`sampling_cases`] in turn,
/// seeded, at random positions, some with logprobs), for the device sampler to match `sample()`.
pub struct SamplingBatch {
    pub vocab: usize,
    pub logits: Vec<f32>,
    pub states: Vec<SamplerState>,
    /// Per row, a grammar-like mask the device applies (one bit per token id), made by
    /// [`SamplingBatch::constrained`]; such rows are checked against `sample_entry` with the
    /// row's bias and mask (the functions `sample` applies them with), the others against
    /// `sample` itself.
    pub masks: Vec<Option<Vec<u32>>>,
    /// A label per row for failure messages.
    pub what: Vec<String>,
}

impl SamplingBatch {
    pub fn new(
        rng: &mut StdRng,
        rows: usize,
        vocab: usize,
        round: usize,
        label: &str,
        rounding: &dyn Fn(&[f32]) -> Vec<f32>,
    ) -> Self {
        let cases = sampling_cases();
        Self::with_cases(rng, rows, vocab, label, rounding, |r| {
            cycled(&cases, r + round, [None, Some(0), Some(5), Some(20)])
        })
    }

    /// [`new`](Self::new)'s rows, constrained: a logit bias on two rows in three (a ban, a
    /// nudge, a token forced with +100, a token listed twice, one past the vocabulary), a mask on
    /// two rows in three (one token allowed, about half, a few, or only the lower half of the
    /// vocabulary: a mask shorter than the row), both on one row in three.
    pub fn constrained(
        rng: &mut StdRng,
        rows: usize,
        vocab: usize,
        round: usize,
        label: &str,
        rounding: &dyn Fn(&[f32]) -> Vec<f32>,
    ) -> Self {
        let cases = sampling_cases();
        let mut b = Self::with_cases(rng, rows, vocab, label, rounding, |r| {
            let (name, mut params) = cycled(&cases, r + round, [None, Some(3), None, Some(20)]);
            if r % 3 != 2 {
                let t = |k: usize| ((r + 1) * k % vocab) as u32;
                params.logit_bias = match r % 4 {
                    0 => vec![(t(7919), -100.0), (t(104_729), 2.5)],
                    1 => vec![(t(31), 100.0)],
                    2 => vec![(t(13), 0.75), (t(13), 0.5), (vocab as u32 + 3, 9.0)],
                    _ => vec![(t(5), -1.5)],
                };
            }
            (name, params)
        });
        let words = vocab.div_ceil(32);
        for r in 0..rows {
            if r % 3 == 1 {
                continue;
            }
            let mut m = vec![0u32; words];
            let mut allow = |i: usize| m[i / 32] |= 1 << (i % 32);
            match (r / 3) % 4 {
                0 => allow(rng.random_range(0..vocab)),
                1 => (0..vocab).filter(|_| rng.random_bool(0.5)).for_each(allow),
                2 => (0..vocab).filter(|_| rng.random_bool(0.03)).for_each(allow),
                _ => (0..vocab / 2 + 1).for_each(allow),
            }
            if (r / 3) % 4 == 3 {
                m.truncate(words / 2 + 1);
            }
            b.masks[r] = Some(m);
            b.what[r] += " masked";
        }
        b
    }

    /// Rows that are all greedy without logprobs (the rows the device sampler may split over
    /// several blocks).
    pub fn greedy(
        rng: &mut StdRng,
        rows: usize,
        vocab: usize,
        label: &str,
        rounding: &dyn Fn(&[f32]) -> Vec<f32>,
    ) -> Self {
        Self::with_cases(rng, rows, vocab, label, rounding, |_| {
            sampling_cases()[0].clone()
        })
    }

    fn with_cases(
        rng: &mut StdRng,
        rows: usize,
        vocab: usize,
        label: &str,
        rounding: &dyn Fn(&[f32]) -> Vec<f32>,
        case: impl Fn(usize) -> (&'static str, SamplingParams),
    ) -> Self {
        let logits = sampling_logits(rng, rows, vocab, rounding);
        let mut states = Vec::new();
        let mut what = Vec::new();
        for r in 0..rows {
            let (name, params) = case(r);
            let seed = rng.random::<u64>();
            let position = rng.random_range(0..300usize);
            let generated = vec![0u32; position];
            states.push(SamplerState::new(
                std::sync::Arc::new(params),
                seed,
                &[],
                &generated,
            ));
            what.push(format!(
                "{label} vocab {vocab} row {r} ({name}, seed {seed}, position {position})"
            ));
        }
        SamplingBatch {
            vocab,
            logits,
            masks: vec![None; states.len()],
            states,
            what,
        }
    }

    /// Each row's entry for the device sampler.
    pub fn device_params(&self) -> Vec<DeviceSampling> {
        self.states
            .iter()
            .zip(&self.masks)
            .map(|(s, m)| {
                let mut e = s.device_sampling().expect("no penalties: device-eligible");
                e.constrained |= m.is_some();
                e
            })
            .collect()
    }

    /// The constraint of each constrained row, in order, and their rows.
    pub fn constraints(&self) -> (Vec<u32>, Vec<RowConstraint<'_>>) {
        let params = self.device_params();
        (0u32..)
            .zip(&params)
            .filter(|(_, e)| e.constrained)
            .map(|(r, _)| (r, self.constraint(r as usize)))
            .unzip()
    }

    fn constraint(&self, r: usize) -> RowConstraint<'_> {
        RowConstraint {
            bias: &self.states[r].params().logit_bias,
            mask: self.masks[r].as_deref(),
        }
    }

    /// Asserts the device's samples equal `sample()`'s: tokens and top ids exactly, logprobs
    /// within `atol + |want| * rtol`.
    pub fn check(mut self, got: &[Sampled], atol: f32, rtol: f32) {
        let vocab = self.vocab;
        assert_eq!(got.len(), self.states.len());
        let mut scratch = SamplerScratch::new(vocab);
        for (r, g) in got.iter().enumerate() {
            let mut row = self.logits[r * vocab..(r + 1) * vocab].to_vec();
            let want = match &self.masks[r] {
                Some(_) => {
                    let entry = self.device_params()[r];
                    sample_entry(&entry, Some(&self.constraint(r)), &mut row, &mut scratch)
                }
                None => sample(&mut self.states[r], &mut row, &mut scratch),
            };
            let what = &self.what[r];
            assert_eq!(g.token, want.token, "{what}: token");
            match (&g.logprob, &want.logprob) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    super::assert_close(what, &[g.logprob], &[w.logprob], atol, rtol);
                    let ids = |t: &[(u32, f32)]| t.iter().map(|x| x.0).collect::<Vec<_>>();
                    let lps = |t: &[(u32, f32)]| t.iter().map(|x| x.1).collect::<Vec<_>>();
                    assert_eq!(ids(&g.top), ids(&w.top), "{what}: top ids");
                    super::assert_close(what, &lps(&g.top), &lps(&w.top), atol, rtol);
                }
                _ => panic!("{what}: logprobs present on one side only"),
            }
        }
        eprintln!(
            "sample_rows vocab {vocab}: {} rows match the CPU sampler",
            got.len()
        );
    }
}
