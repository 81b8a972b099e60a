//! The CUDA backend against the CPU reference: every op on seeded random inputs (awkward sizes,
//! one token, long contexts, scattered blocks), then the whole model on the tiny fixtures.
//!
//! Built only with `--features cuda`. Without a usable GPU every test prints
//! `skipped: <name>: no CUDA device (<reason>)` and returns: they never pass silently.
//! Every kernel test runs once per storage dtype (f32, bf16). Inputs are rounded to the dtype on
//! the host first, so the CPU reference sees exactly the values the device holds; outputs are
//! poisoned with NaN before each run, so an element the kernel fails to write fails the
//! comparison; the tolerance is `atol + |ref| * rtol`, sized per dtype by [`tol`].

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::{
    check_all_cases_batched, check_each_case_alone, fixture_names, load_fixture, model_path,
    scattered, Driver, Seq,
};
use tandem::model::llama::StepLimits;
use tandem::model::loader::ModelSource;
use tandem::runtime::backend::{AttentionParams, Backend, CacheShape, QkvLayout};
use tandem::runtime::cpu::{self, CpuBackend};
use tandem::runtime::cuda::{CudaBackend, DType, DecodePath};
use tandem::runtime::request::SamplingParams;
use tandem::runtime::sampling::{sample, Sampled, SamplerScratch, SamplerState};
use tandem::runtime::step::{SeqChunk, StepInput};

/// The GPU with f32 storage, or `None` after printing why this test is skipped.
fn gpu(name: &str) -> Option<CudaBackend> {
    gpu_as(name, DType::F32)
}

fn gpu_as(name: &str, dtype: DType) -> Option<CudaBackend> {
    match CudaBackend::new(0, dtype) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("skipped: {name}: no CUDA device ({e:#})");
            None
        }
    }
}

/// The GPU once per storage dtype (f32, then bf16); empty after printing why this test is
/// skipped.
fn gpus(name: &str) -> Vec<CudaBackend> {
    let Some(f32_backend) = gpu_as(name, DType::F32) else {
        return vec![];
    };
    let bf16_backend = CudaBackend::new(0, DType::Bf16).expect("bf16 backend");
    vec![f32_backend, bf16_backend]
}

/// The tolerance `(atol, rtol)` for `b`'s dtype, given the f32 one. Copies stay exact in bf16.
/// Otherwise bf16 gets rtol 1e-2: the inputs are already bf16 values, every kernel computes in
/// f32 and rounds its output once (at most 2^-9 ≈ 0.2% relative), so 1e-2 leaves room for the
/// few ops that round an intermediate (the residual in add_rms_norm, the GEMM output before
/// the bias) without hiding a real error (a wrong element is off by O(1)).
fn tol(b: &CudaBackend, atol: f32, rtol: f32) -> (f32, f32) {
    match b.dtype() {
        DType::F32 => (atol, rtol),
        DType::Bf16 if atol == 0.0 && rtol == 0.0 => (0.0, 0.0),
        DType::Bf16 => (atol.max(1e-3), rtol.max(1e-2)),
    }
}

/// `n` random values in [-1, 1), as `b`'s dtype stores them.
fn random_as(b: &CudaBackend, rng: &mut StdRng, n: usize) -> Vec<f32> {
    b.dtype().round(&random(rng, n))
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Asserts `|got - want| <= atol + |want| * rtol` everywhere (NaN never passes).
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
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

/// [`assert_close`] at `b`'s dtype: the tolerance from [`tol`], the dtype in the label.
fn check(b: &CudaBackend, what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    let (atol, rtol) = tol(b, atol, rtol);
    assert_close(&format!("{} {what}", b.dtype()), got, want, atol, rtol);
}

fn poisoned(b: &CudaBackend, len: usize) -> <CudaBackend as Backend>::Tensor {
    let mut t = b.zeros(len).unwrap();
    b.fill_nan(&mut t).unwrap();
    t
}

/// Metadata for `step`, its attention workspace sized for LAYOUTS[0] (ops that do not attend).
fn meta_for(b: &CudaBackend, step: &StepInput) -> <CudaBackend as Backend>::Meta {
    meta_with(b, step, LAYOUTS[0])
}

fn meta_with(
    b: &CudaBackend,
    step: &StepInput,
    layout: QkvLayout,
) -> <CudaBackend as Backend>::Meta {
    // Logit rows share the per-sequence buffers (the engine asks for at most one per sequence);
    // a test that gathers more rows than it has sequences sizes them for its rows.
    let seqs = step.num_seqs().max(step.logits_indices.len()).max(1);
    let mut meta = b.new_meta(step.num_tokens().max(1), seqs, layout).unwrap();
    b.upload_meta(step, &mut meta).unwrap();
    meta
}

/// A step of `tokens` rows of one sequence each (input ids and positions as given).
fn simple_step(ids: &[u32], positions: &[u32]) -> StepInput {
    StepInput {
        input_ids: ids.to_vec(),
        positions: positions.to_vec(),
        slot_mapping: vec![-1; ids.len()],
        query_start_locs: vec![0, ids.len() as u32],
        context_lens: vec![ids.len() as u32],
        block_tables: vec![],
        max_blocks_per_seq: 0,
        logits_indices: vec![],
    }
}

#[test]
fn embed() {
    for b in gpus("embed") {
        let mut rng = StdRng::seed_from_u64(1);
        for (vocab, dim, rows) in [(1000, 64, 1), (517, 100, 37), (300, 4099, 5)] {
            let table = random_as(&b, &mut rng, vocab * dim);
            let ids: Vec<u32> = (0..rows)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect();
            let mut want = vec![0.0; rows * dim];
            cpu::embed(&table, &ids, dim, &mut want).unwrap();
            let step = simple_step(&ids, &vec![0; rows]);
            let meta = meta_for(&b, &step);
            let t = b.upload(&table).unwrap();
            let mut out = poisoned(&b, rows * dim);
            b.embed(&t, &meta, dim, &mut out).unwrap();
            let got = b.download(&out, rows * dim).unwrap();
            check(
                &b,
                &format!("embed {vocab}x{dim}, {rows} rows"),
                &got,
                &want,
                0.0,
                0.0,
            );

            // An id outside the table is an error, as on the CPU.
            let bad = simple_step(&[vocab as u32], &[0]);
            let meta = meta_for(&b, &bad);
            assert!(b.embed(&t, &meta, dim, &mut out).is_err());
        }
    }
}

#[test]
fn gather_logit_rows() {
    for b in gpus("gather_logit_rows") {
        let mut rng = StdRng::seed_from_u64(2);
        for (rows, dim, picks) in [(1, 64, vec![0u32]), (40, 77, vec![39, 0, 17, 17, 5])] {
            let x = random_as(&b, &mut rng, rows * dim);
            let mut step = simple_step(&vec![0; rows], &vec![0; rows]);
            step.logits_indices = picks.clone();
            let meta = meta_for(&b, &step);
            let mut want = vec![0.0; picks.len() * dim];
            cpu::embed(&x, &picks, dim, &mut want).unwrap();
            let xd = b.upload(&x).unwrap();
            let mut out = poisoned(&b, picks.len() * dim);
            b.gather_logit_rows(&xd, &meta, dim, &mut out).unwrap();
            let got = b.download(&out, want.len()).unwrap();
            check(
                &b,
                &format!("gather_logit_rows {rows}x{dim}"),
                &got,
                &want,
                0.0,
                0.0,
            );
        }
    }
}

const NORM_SHAPES: [(usize, usize); 5] = [(1, 64), (7, 100), (33, 4096), (3, 5003), (2, 1)];

#[test]
fn rms_norm() {
    for b in gpus("rms_norm") {
        let mut rng = StdRng::seed_from_u64(3);
        for (rows, dim) in NORM_SHAPES {
            let x = random_as(&b, &mut rng, rows * dim);
            let w = random_as(&b, &mut rng, dim);
            let mut want = vec![0.0; rows * dim];
            cpu::rms_norm(&x, &w, 1e-6, &mut want);
            let (xd, wd) = (b.upload(&x).unwrap(), b.upload(&w).unwrap());
            let mut out = poisoned(&b, rows * dim + 3); // longer than used: rows is what counts
            b.rms_norm(&xd, &wd, 1e-6, rows, dim, &mut out).unwrap();
            let got = b.download(&out, rows * dim).unwrap();
            check(
                &b,
                &format!("rms_norm {rows}x{dim}"),
                &got,
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn add_rms_norm() {
    for b in gpus("add_rms_norm") {
        let mut rng = StdRng::seed_from_u64(4);
        for (rows, dim) in NORM_SHAPES {
            let mut residual = random_as(&b, &mut rng, rows * dim);
            let delta = random_as(&b, &mut rng, rows * dim);
            let w = random_as(&b, &mut rng, dim);
            let mut rd = b.upload(&residual).unwrap();
            let (dd, wd) = (b.upload(&delta).unwrap(), b.upload(&w).unwrap());
            let mut want = vec![0.0; rows * dim];
            cpu::add_rms_norm(&mut residual, &delta, &w, 1e-5, &mut want);
            let mut out = poisoned(&b, rows * dim);
            b.add_rms_norm(&mut rd, &dd, &wd, 1e-5, rows, dim, &mut out)
                .unwrap();
            let got = b.download(&out, rows * dim).unwrap();
            let got_res = b.download(&rd, rows * dim).unwrap();
            check(
                &b,
                &format!("add_rms_norm residual {rows}x{dim}"),
                &got_res,
                &b.dtype().round(&residual), // the f32 sum, rounded as the device stores it
                0.0,
                0.0,
            );
            check(
                &b,
                &format!("add_rms_norm {rows}x{dim}"),
                &got,
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn linear() {
    for b in gpus("linear") {
        let mut rng = StdRng::seed_from_u64(5);
        for (rows, k, n, with_bias) in [
            (1, 64, 64, false),
            (7, 100, 33, true),
            (65, 256, 513, false),
            (130, 896, 1000, true),
        ] {
            let x = random_as(&b, &mut rng, rows * k);
            let w = random_as(&b, &mut rng, n * k);
            let bias = with_bias.then(|| random_as(&b, &mut rng, n));
            let mut want = vec![0.0; rows * n];
            cpu::matmul_transposed(&x, &w, bias.as_deref(), rows, k, n, &mut want).unwrap();
            let (xd, wd) = (b.upload(&x).unwrap(), b.upload(&w).unwrap());
            let bd = bias.as_ref().map(|v| b.upload(v).unwrap());
            let mut out = poisoned(&b, rows * n);
            b.linear(&xd, &wd, bd.as_ref(), rows, k, n, &mut out)
                .unwrap();
            let got = b.download(&out, rows * n).unwrap();
            // bf16: the GEMM's output is rounded before the bias is added, an error relative to
            // the product, which the bias may cancel: atol scales with the outputs' size.
            let atol = match b.dtype() {
                DType::F32 => 1e-4,
                DType::Bf16 => 4e-3 * want.iter().fold(0.0f32, |m, v| m.max(v.abs())),
            };
            check(
                &b,
                &format!("linear {rows}x{k} -> {n}, bias {with_bias}"),
                &got,
                &want,
                atol,
                1e-4,
            );
        }
    }
}

const LAYOUTS: [QkvLayout; 4] = [
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

#[test]
fn qk_norm() {
    for b in gpus("qk_norm") {
        let mut rng = StdRng::seed_from_u64(6);
        for layout in LAYOUTS {
            for rows in [1, 9] {
                let mut qkv = random_as(&b, &mut rng, rows * layout.row_width());
                let q_w = random_as(&b, &mut rng, layout.head_dim);
                let k_w = random_as(&b, &mut rng, layout.head_dim);
                let mut d = b.upload(&qkv).unwrap();
                let (qd, kd) = (b.upload(&q_w).unwrap(), b.upload(&k_w).unwrap());
                cpu::qk_norm(&mut qkv, &q_w, &k_w, 1e-6, layout);
                b.qk_norm(&mut d, &qd, &kd, 1e-6, rows, layout).unwrap();
                let got = b.download(&d, qkv.len()).unwrap();
                check(
                    &b,
                    &format!("qk_norm {layout:?} x{rows}"),
                    &got,
                    &qkv,
                    1e-5,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn rope() {
    for b in gpus("rope") {
        let mut rng = StdRng::seed_from_u64(7);
        for layout in LAYOUTS {
            let (hd, max_pos) = (layout.head_dim, 300);
            // A real table: cos | sin of pos * f_i for random frequencies.
            let freqs: Vec<f32> = (0..hd / 2).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let mut table = Vec::with_capacity(max_pos * hd);
            for pos in 0..max_pos {
                table.extend(freqs.iter().map(|f| (pos as f32 * f).cos()));
                table.extend(freqs.iter().map(|f| (pos as f32 * f).sin()));
            }
            let table = b.dtype().round(&table); // the table is stored in the dtype too
            for rows in [1, 13] {
                let positions: Vec<u32> = (0..rows)
                    .map(|_| rng.random_range(0..max_pos as u32))
                    .collect();
                let mut qkv = random_as(&b, &mut rng, rows * layout.row_width());
                let mut d = b.upload(&qkv).unwrap();
                let td = b.upload(&table).unwrap();
                cpu::rope(&mut qkv, &table, &positions, layout).unwrap();
                let meta = meta_for(&b, &simple_step(&vec![0; rows], &positions));
                b.rope(&mut d, &td, &meta, layout).unwrap();
                let got = b.download(&d, qkv.len()).unwrap();
                check(
                    &b,
                    &format!("rope {layout:?} x{rows}"),
                    &got,
                    &qkv,
                    1e-6,
                    1e-5,
                );
            }
            // A position past the table is an error, as on the CPU.
            let meta = meta_for(&b, &simple_step(&[0], &[max_pos as u32]));
            let mut d = b.zeros(layout.row_width()).unwrap();
            let td = b.upload(&table).unwrap();
            assert!(b.rope(&mut d, &td, &meta, layout).is_err());
        }
    }
}

#[test]
fn silu_mul() {
    for b in gpus("silu_mul") {
        let mut rng = StdRng::seed_from_u64(8);
        for (rows, inter) in [(1, 128), (13, 333), (64, 14336)] {
            let gu: Vec<f32> = random_as(&b, &mut rng, rows * 2 * inter)
                .iter()
                .map(|v| v * 8.0)
                .collect();
            let mut want = vec![0.0; rows * inter];
            cpu::silu_mul(&gu, inter, &mut want);
            let gd = b.upload(&gu).unwrap();
            let mut out = poisoned(&b, rows * inter);
            b.silu_mul(&gd, rows, inter, &mut out).unwrap();
            let got = b.download(&out, want.len()).unwrap();
            check(
                &b,
                &format!("silu_mul {rows}x{inter}"),
                &got,
                &want,
                1e-6,
                1e-5,
            );
        }
    }
}

/// A random step: sequence `i` has `q_lens[i]` new rows and context `ctx_lens[i]`, its blocks
/// handed out from a scrambled permutation of the cache's blocks.
fn attention_step(q_lens: &[usize], ctx_lens: &[usize], block_size: usize) -> (StepInput, usize) {
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

#[allow(clippy::too_many_arguments)]
fn check_attention(
    b: &CudaBackend,
    what: &str,
    layout: QkvLayout,
    block_size: usize,
    window: Option<usize>,
    q_lens: &[usize],
    ctx_lens: &[usize],
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
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
    let qkv: Vec<f32> = random(&mut rng, rows * layout.row_width())
        .iter()
        .map(|v| v * 3.0) // peakier softmax than uniform inputs give
        .collect();
    let qkv = b.dtype().round(&qkv);
    let k_cache = random_as(b, &mut rng, cache.elements());
    let v_cache = random_as(b, &mut rng, cache.elements());
    let mut want = vec![0.0; rows * layout.q_width()];
    cpu::attention(&qkv, &k_cache, &v_cache, &step, &params, &mut want).unwrap();
    let meta = meta_with(b, &step, layout);
    let (qd, kd, vd) = (
        b.upload(&qkv).unwrap(),
        b.upload(&k_cache).unwrap(),
        b.upload(&v_cache).unwrap(),
    );
    let mut out = poisoned(b, want.len());
    b.attention(&qd, &kd, &vd, &meta, &params, &mut out)
        .unwrap();
    let got = b.download(&out, want.len()).unwrap();
    check(b, what, &got, &want, 2e-5, 1e-4);
}

#[test]
fn paged_attention_decode() {
    for b in gpus("paged_attention_decode") {
        let ctx = [1, 2, 5, 16, 17, 100, 300, 2049];
        for (i, layout) in LAYOUTS.into_iter().enumerate() {
            for block_size in [16, 5] {
                check_attention(
                    &b,
                    &format!("decode {layout:?} block {block_size}"),
                    layout,
                    block_size,
                    None,
                    &[1; 8],
                    &ctx,
                    10 + i as u64,
                );
            }
        }
    }
}

/// Layouts for the decode kernel: GQA ratios 1, 3, 4, 5, 8, 16 and head_dim 16 to 256 (its
/// instances: 4 or 8 elements per lane, 1 to 8 heads per warp, groups in up to 4 chunks), plus
/// a head_dim that is not a multiple of 4 (falls back to the general kernel).
const DECODE_LAYOUTS: [(usize, usize, usize); 9] = [
    (4, 4, 64),
    (8, 2, 80),
    (32, 8, 128),
    (8, 1, 128),
    (16, 1, 128),
    (9, 3, 64),
    (10, 2, 96),
    (8, 1, 256),
    (6, 3, 18),
];

/// Pure decode steps (one row per sequence) on the decode kernel, with its split count chosen
/// (Auto), pinned to 1 (no merge) and to 7 (uneven splits, some empty for short sequences), and
/// on the general kernel: contexts of 1 to 5000 keys over scattered blocks.
#[test]
fn paged_attention_decode_split() {
    for b in gpus("paged_attention_decode_split") {
        let ctx = [1, 17, 600, 5000, 64, 65];
        for (i, &(nh, nkv, hd)) in DECODE_LAYOUTS.iter().enumerate() {
            let layout = QkvLayout {
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
            };
            for path in [
                DecodePath::Auto,
                DecodePath::Splits(1),
                DecodePath::Splits(7),
                DecodePath::General,
            ] {
                b.set_decode_path(path);
                for block_size in [16, 5] {
                    check_attention(
                        &b,
                        &format!("decode {layout:?} block {block_size} {path:?}"),
                        layout,
                        block_size,
                        None,
                        &[1; 6],
                        &ctx,
                        50 + i as u64,
                    );
                }
            }
            // One long sequence alone: Auto splits it as far as the kernel allows.
            b.set_decode_path(DecodePath::Auto);
            check_attention(
                &b,
                &format!("decode {layout:?} one sequence of 5000"),
                layout,
                16,
                None,
                &[1],
                &[5000],
                70 + i as u64,
            );
        }
        b.set_decode_path(DecodePath::Auto);
    }
}

/// Decode steps with a sliding window: windows shorter and longer than the contexts, split and
/// unsplit.
#[test]
fn paged_attention_decode_sliding_window() {
    for b in gpus("paged_attention_decode_sliding_window") {
        let layout = QkvLayout {
            num_heads: 8,
            num_kv_heads: 2,
            head_dim: 128,
        };
        for path in [
            DecodePath::Auto,
            DecodePath::Splits(1),
            DecodePath::Splits(5),
        ] {
            b.set_decode_path(path);
            for window in [1, 7, 64, 1000, 6000] {
                check_attention(
                    &b,
                    &format!("decode sliding window {window} {path:?}"),
                    layout,
                    16,
                    Some(window),
                    &[1; 5],
                    &[1, 17, 600, 5000, 1000],
                    80 + window as u64,
                );
            }
        }
        b.set_decode_path(DecodePath::Auto);
    }
}

#[test]
fn paged_attention_prefill() {
    for b in gpus("paged_attention_prefill") {
        for (i, layout) in LAYOUTS.into_iter().enumerate() {
            for block_size in [16, 7] {
                // Whole prompts, then chunked prefill beside decode rows (c > q: earlier context is
                // read from the cache).
                check_attention(
                    &b,
                    &format!("prefill {layout:?} block {block_size}"),
                    layout,
                    block_size,
                    None,
                    &[1, 33, 64, 3],
                    &[1, 33, 64, 3],
                    20 + i as u64,
                );
                check_attention(
                    &b,
                    &format!("chunked prefill {layout:?} block {block_size}"),
                    layout,
                    block_size,
                    None,
                    &[17, 1, 40, 2],
                    &[50, 9, 1000, 2],
                    30 + i as u64,
                );
            }
        }
    }
}

#[test]
fn paged_attention_sliding_window() {
    for b in gpus("paged_attention_sliding_window") {
        for window in [1, 7, 64] {
            check_attention(
                &b,
                &format!("sliding window {window}"),
                LAYOUTS[0],
                16,
                Some(window),
                &[1, 20, 5, 1],
                &[300, 20, 70, 3],
                40 + window as u64,
            );
        }
    }
}

#[test]
fn write_kv() {
    for b in gpus("write_kv") {
        let mut rng = StdRng::seed_from_u64(9);
        for layout in LAYOUTS {
            let cache = CacheShape {
                num_blocks: 11,
                block_size: 5,
                num_kv_heads: layout.num_kv_heads,
                head_dim: layout.head_dim,
            };
            let params = AttentionParams {
                layout,
                cache,
                scale: 1.0,
                sliding_window: None,
            };
            // Scattered distinct slots, some rows padding (-1).
            let order = scattered(cache.num_blocks * cache.block_size);
            let rows = 19;
            let mapping: Vec<i64> = (0..rows)
                .map(|i| if i % 4 == 3 { -1 } else { order[i] as i64 })
                .collect();
            let qkv = random_as(&b, &mut rng, rows * layout.row_width());
            let mut k_want = random_as(&b, &mut rng, cache.elements());
            let mut v_want = random_as(&b, &mut rng, cache.elements());
            let (mut kd, mut vd) = (b.upload(&k_want).unwrap(), b.upload(&v_want).unwrap());
            cpu::write_kv(&qkv, &mut k_want, &mut v_want, &mapping, &params).unwrap();
            let mut step = simple_step(&vec![0; rows], &vec![0; rows]);
            step.slot_mapping = mapping;
            let meta = meta_for(&b, &step);
            let qd = b.upload(&qkv).unwrap();
            b.write_kv(&qd, &mut kd, &mut vd, &meta, &params).unwrap();
            // The whole cache: written slots match, every other slot is untouched.
            let (kg, vg) = (
                b.download(&kd, cache.elements()).unwrap(),
                b.download(&vd, cache.elements()).unwrap(),
            );
            check(
                &b,
                &format!("write_kv k {layout:?}"),
                &kg,
                &k_want,
                0.0,
                0.0,
            );
            check(
                &b,
                &format!("write_kv v {layout:?}"),
                &vg,
                &v_want,
                0.0,
                0.0,
            );

            // A slot past the cache is an error, as on the CPU.
            step.slot_mapping[0] = (cache.num_blocks * cache.block_size) as i64;
            let meta = meta_for(&b, &step);
            assert!(b.write_kv(&qd, &mut kd, &mut vd, &meta, &params).is_err());
        }
    }
}

/// The whole model on the GPU, f32: every fixture case alone and all cases batched over
/// scattered 4-token blocks; greedy ids identical to the fixture (transformers), top-5 logits
/// within the fixture tolerance.
#[test]
fn model_fixtures() {
    let Some(_) = gpu("model_fixtures") else {
        return;
    };
    let limits = StepLimits {
        max_tokens: 256,
        max_seqs: 16,
    };
    let mut ran = 0;
    for name in fixture_names() {
        let f = load_fixture(&name);
        let Some(path) = model_path(&f) else { continue };
        let backend = CudaBackend::new(0, DType::F32).unwrap();
        let (model, _) = ModelSource::open(&path)
            .and_then(|s| s.into_model(backend, limits))
            .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()));

        let label = format!("cuda {name}");
        let model = check_each_case_alone(model, &f, &label);
        check_all_cases_batched(model, &f, &label);
        eprintln!("model_fixtures: {name}: ok");
        ran += 1;
    }
    assert!(ran > 0, "no fixture ran");
}

/// One row of bf16 GPU logits against the CPU's f32 ones: (max |Δ| / the CPU row's range
/// (max - min), exact top-1 agreement, whether the GPU's top-1 is a near-tie on the CPU: its CPU
/// logit within 2·max|Δ| of the CPU's maximum).
fn compare_bf16_row(what: &str, got: &[f32], want: &[f32]) -> (f32, bool, bool) {
    assert_eq!(got.len(), want.len(), "{what}: vocab sizes differ");
    let (lo, hi) = want
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let range = (hi - lo).max(1e-6);
    let mut worst = 0.0f32;
    for (&g, &w) in got.iter().zip(want) {
        let d = (g - w).abs();
        assert!(d.is_finite(), "{what}: logit {g} against {w}");
        worst = worst.max(d);
    }
    let (g_top, w_top) = (
        tandem::runtime::generate::argmax(got),
        tandem::runtime::generate::argmax(want),
    );
    let near_tie = want[g_top as usize] >= hi - 2.0 * worst;
    (worst / range, g_top == w_top, near_tie)
}

/// Most max |Δlogit| of a row, relative to its CPU logit range, that bf16 may show. Measured on
/// an H200 (2026-11-27): tiny-llama 3.2%, tiny-mistral 4.1%, tiny-qwen2 5.5% (teacher-forced
/// fixture cases). bf16 keeps 8 bits of mantissa, so each stored weight and activation is off
/// by up to 2^-9 relative, and these tiny random-weight models have logit ranges small against
/// their activations, so the error relative to the range is large; 10% is about twice the
/// worst measured, still far below what a wrong kernel gives (O(100%)).
const BF16_LOGIT_TOL: f32 = 0.10;

/// The whole model in bf16 on the GPU against the CPU (f32) reference, on the same tokens: each
/// fixture case alone, its prompt then each generated token. Every row: max |Δlogit| within
/// [`BF16_LOGIT_TOL`] of its range, and the GPU's top-1 a near-tie on the CPU
/// ([`compare_bf16_row`]); over all rows, exact top-1 agreement on at least 2/3. Measures every
/// model first, prints the figures, then asserts.
#[test]
fn model_bf16_vs_cpu() {
    let Some(_) = gpu_as("model_bf16_vs_cpu", DType::Bf16) else {
        return;
    };
    let limits = StepLimits {
        max_tokens: 256,
        max_seqs: 16,
    };
    let (mut rows, mut agree, mut worst) = (0usize, 0usize, 0.0f32);
    let mut failures = Vec::new();
    for name in fixture_names() {
        let f = load_fixture(&name);
        let Some(path) = model_path(&f) else { continue };
        let load = |what: &str| -> ModelSource {
            ModelSource::open(&path)
                .unwrap_or_else(|e| panic!("{what}: loading {}: {e:#}", path.display()))
        };
        let (gpu_model, _) = load("bf16")
            .into_model(CudaBackend::new(0, DType::Bf16).unwrap(), limits)
            .unwrap();
        let (cpu_model, _) = load("cpu").into_model(CpuBackend::new(), limits).unwrap();
        let mut gpu = Driver::new(gpu_model, 64, 16, (0..64).collect());
        let mut cpu_ref = Driver::new(cpu_model, 64, 16, (0..64).collect());
        let (mut name_worst, mut name_rows, mut name_agree) = (0.0f32, 0usize, 0usize);
        for case in &f.cases {
            let tokens = [&case.prompt_ids[..], &case.generated_ids[..]].concat();
            let new_seq = || Seq {
                tokens: tokens.clone(),
                cached: 0,
                blocks: vec![],
            };
            let (mut gs, mut cs) = (vec![new_seq()], vec![new_seq()]);
            let mut counts = vec![case.prompt_ids.len()];
            for i in 0..case.generated_ids.len() {
                let got = gpu.step(&mut gs, &counts);
                let want = cpu_ref.step(&mut cs, &counts);
                let what = format!("bf16 {name} {:?} step {i}", case.prompt);
                let (ratio, same, near_tie) = compare_bf16_row(&what, &got[0], &want[0]);
                if ratio > BF16_LOGIT_TOL || !near_tie {
                    failures.push(format!(
                        "{what}: max |Δlogit| {:.1}% of range, top-1 near-tie {near_tie}",
                        100.0 * ratio
                    ));
                }
                name_worst = name_worst.max(ratio);
                name_rows += 1;
                name_agree += usize::from(same);
                counts = vec![1];
            }
            gpu = Driver::new(gpu.model, 64, 16, (0..64).collect());
            cpu_ref = Driver::new(cpu_ref.model, 64, 16, (0..64).collect());
        }
        eprintln!(
            "model_bf16_vs_cpu: {name}: max |Δlogit| {:.2}% of the logit range, top-1 agreement \
             {name_agree}/{name_rows}",
            100.0 * name_worst
        );
        worst = worst.max(name_worst);
        rows += name_rows;
        agree += name_agree;
    }
    assert!(rows > 0, "no fixture ran");
    eprintln!(
        "model_bf16_vs_cpu: {rows} rows, top-1 agreement {agree}/{rows}, worst |Δlogit| {:.2}% \
         of range",
        100.0 * worst
    );
    assert!(
        failures.is_empty(),
        "{} rows out of tolerance:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        3 * agree >= 2 * rows,
        "top-1 agreement {agree}/{rows} is below 2/3"
    );
}

// ---- Device sampling (kernels/sampling.cu) against the CPU sampler ----
//
// The device computes the same f32 values and weights as `sample()` bit for bit (temperature,
// `exp_nonpos`, keys); only its f64 sums run in another order. A top-p cut or a draw could
// therefore differ only if its target fell within ~1e-15 (relative) of a cumulative weight: with
// seeded uniform logits spread over [-s, s] (s from 0.5, nearly flat, to 12, peaked), that is a
// ~1e-12 chance per draw, so tokens must match exactly. Exact ties (every bf16 row has many;
// f32 rows get some copied values, including a copy of the maximum) check the tie rule (lower
// id first); a NaN and a -inf in some rows check the sanitising.

/// The sampling parameter sets the tests cycle through: (name, params).
fn sampling_cases() -> Vec<(&'static str, SamplingParams)> {
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

/// `rows` seeded logit rows of width `vocab`, as `dtype` stores them (see the section comment).
fn sampling_logits(rng: &mut StdRng, rows: usize, vocab: usize, dtype: DType) -> Vec<f32> {
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
        v.extend(dtype.round(&row));
    }
    v
}

/// Samples every row on the CPU (`sample()`) and on the device; asserts equal tokens, equal top
/// logprob ids and logprobs within a tolerance.
fn check_sampling(b: &CudaBackend, rng: &mut StdRng, vocab: usize, rows: usize, round: usize) {
    let logits = sampling_logits(rng, rows, vocab, b.dtype());
    let cases = sampling_cases();
    let mut states = Vec::new();
    let mut what = Vec::new();
    for r in 0..rows {
        let (name, mut params) = cases[(r + round) % cases.len()].clone();
        params.logprobs = match (r + round) % 4 {
            0 => None,
            1 => Some(0),
            2 => Some(5),
            _ => Some(20),
        };
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
            "{} vocab {vocab} row {r} ({name}, seed {seed}, position {position})",
            b.dtype()
        ));
    }
    let params: Vec<_> = states
        .iter()
        .map(|s| s.device_sampling().expect("no penalties: device-eligible"))
        .collect();
    let t = b.upload(&logits).unwrap();
    let mut meta = b.new_meta(1, rows, LAYOUTS[0]).unwrap();
    let mut got: Vec<Sampled> = Vec::new();
    assert!(b
        .sample_rows(&t, vocab, &params, &mut meta, &mut got)
        .unwrap());
    assert_eq!(got.len(), rows);
    let mut scratch = SamplerScratch::new(vocab);
    let (atol, rtol) = tol(b, 1e-5, 1e-5);
    for r in 0..rows {
        let mut row = logits[r * vocab..(r + 1) * vocab].to_vec();
        let want = sample(&mut states[r], &mut row, &mut scratch);
        let g = &got[r];
        assert_eq!(g.token, want.token, "{}: token", what[r]);
        match (&g.logprob, &want.logprob) {
            (None, None) => {}
            (Some(g), Some(w)) => {
                assert_close(&what[r], &[g.logprob], &[w.logprob], atol, rtol);
                let ids = |t: &[(u32, f32)]| t.iter().map(|x| x.0).collect::<Vec<_>>();
                let lps = |t: &[(u32, f32)]| t.iter().map(|x| x.1).collect::<Vec<_>>();
                assert_eq!(ids(&g.top), ids(&w.top), "{}: top ids", what[r]);
                assert_close(&what[r], &lps(&g.top), &lps(&w.top), atol, rtol);
            }
            _ => panic!("{}: logprobs present on one side only", what[r]),
        }
    }
    eprintln!(
        "{} sample_rows vocab {vocab}: {rows} rows match the CPU sampler",
        b.dtype()
    );
}

#[test]
fn sample_rows_small_vocab() {
    for b in gpus("sample_rows_small_vocab") {
        let mut rng = StdRng::seed_from_u64(71);
        for round in 0..4 {
            check_sampling(&b, &mut rng, 1, 5, round);
            check_sampling(&b, &mut rng, 7, 64, round);
            check_sampling(&b, &mut rng, 1000, 33, round);
        }
    }
}

#[test]
fn sample_rows_large_vocab() {
    for b in gpus("sample_rows_large_vocab") {
        let mut rng = StdRng::seed_from_u64(72);
        for round in 0..3 {
            check_sampling(&b, &mut rng, 50_000, 28, round);
            check_sampling(&b, &mut rng, 128_256, 14, round);
        }
    }
}

/// Penalties stay on the host: such a request is not device-eligible.
#[test]
fn sample_rows_penalties_stay_on_the_host() {
    let params = SamplingParams {
        temperature: 1.0,
        repetition_penalty: 1.2,
        ..SamplingParams::default()
    };
    let s = SamplerState::new(std::sync::Arc::new(params), 1, &[1, 2], &[]);
    assert!(s.device_sampling().is_none());
}
