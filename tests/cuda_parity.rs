//! The CUDA backend's kernels against the CPU reference ops, on seeded random inputs (awkward
//! sizes, one token, long contexts, scattered blocks). The whole model, the device sampler and
//! the launch-ahead and graph paths are in tests/cuda_model.rs.
//!
//! Built only with `--features cuda`. Without a CUDA driver they run on the emulated device when
//! built with `kernel-emu` too (runtime/cuda/emulated.rs; the test command does); otherwise every
//! test prints `skipped: <name>: no CUDA device (<reason>)` and returns: never a silent pass.
//! Every kernel test runs once per storage dtype (f32, bf16). Inputs are rounded to the dtype on
//! the host first, so the CPU reference sees exactly the values the device holds; outputs are
//! poisoned with NaN before each run, so an element the kernel fails to write fails the
//! comparison; the tolerance is `atol + |ref| * rtol`, sized per dtype by [`tol`].

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::gpu::*;
use common::scattered;
use tandem::runtime::backend::{AttentionParams, Backend, CacheShape, QkNorm, QkvLayout};
use tandem::runtime::cpu;
use tandem::runtime::cuda::{CudaBackend, DType, DecodePath};
use tandem::runtime::step::StepInput;

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

#[test]
fn qk_norm() {
    for b in gpus("qk_norm") {
        let mut rng = StdRng::seed_from_u64(6);
        for layout in LAYOUTS.into_iter().chain(ODD_LAYOUTS) {
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
        for layout in LAYOUTS.into_iter().chain(ODD_LAYOUTS) {
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

/// A paged cache of 55 slots (11 blocks of 5) for `layout`, in attention parameters, for the
/// cache-write tests.
fn small_cache(layout: QkvLayout) -> AttentionParams {
    AttentionParams {
        layout,
        cache: CacheShape {
            num_blocks: 11,
            block_size: 5,
            num_kv_heads: layout.num_kv_heads,
            head_dim: layout.head_dim,
        },
        scale: 1.0,
        sliding_window: None,
    }
}

/// A step's metadata dropped right after its op is launched, before anything waited: the op
/// still reads the step it was given (the staging memory its upload reads is not freed under
/// the queued copy). On the emulated device, whose queues run only when the host waits, the
/// cache came back wrong before `PinnedWords` waited for the device on drop.
#[test]
fn metadata_dropped_with_work_queued() {
    for b in gpus("metadata_dropped_with_work_queued") {
        let mut rng = StdRng::seed_from_u64(19);
        let layout = LAYOUTS[0];
        let params = small_cache(layout);
        let cache = params.cache;
        let rows = 19;
        let order = scattered(cache.num_blocks * cache.block_size);
        let qkv = random_as(&b, &mut rng, rows * layout.row_width());
        let (mut k_want, mut v_want) = (vec![0.0; cache.elements()], vec![0.0; cache.elements()]);
        let mut step = simple_step(&vec![0; rows], &vec![0; rows]);
        step.slot_mapping = order[..rows].iter().map(|&s| s as i64).collect();
        cpu::write_kv(&qkv, &mut k_want, &mut v_want, &step.slot_mapping, &params).unwrap();
        let qd = b.upload(&qkv).unwrap();
        let (mut kd, mut vd) = (
            b.zeros(cache.elements()).unwrap(),
            b.zeros(cache.elements()).unwrap(),
        );
        let meta = meta_for(&b, &step);
        b.write_kv(&qd, &mut kd, &mut vd, &meta, &params).unwrap();
        drop(meta);
        let kg = b.download(&kd, cache.elements()).unwrap();
        check(
            &b,
            "write_kv k after its metadata was dropped",
            &kg,
            &k_want,
            0.0,
            0.0,
        );
    }
}

/// The fused rope + cache write, alone and after Qwen3's q/k norms, against the CPU's qk_norm,
/// rope then write_kv: the rotated rows, and the whole cache (written slots hold the rotated k
/// and the v heads; padding rows and every other slot are untouched); vector and scalar layouts
/// (head_dim 18 cannot take the fused norm: qk_norm runs first); a position past the table and
/// a slot past the cache are errors.
#[test]
fn rope_write_kv() {
    for b in gpus("rope_write_kv") {
        let mut rng = StdRng::seed_from_u64(17);
        for layout in LAYOUTS.into_iter().chain(ODD_LAYOUTS) {
            for with_norm in [false, true] {
                check_rope_write_kv(&b, &mut rng, layout, with_norm);
            }
        }
    }
}

fn check_rope_write_kv(b: &CudaBackend, rng: &mut StdRng, layout: QkvLayout, with_norm: bool) {
    let (hd, max_pos) = (layout.head_dim, 300);
    let freqs: Vec<f32> = (0..hd / 2).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let mut table = Vec::with_capacity(max_pos * hd);
    for pos in 0..max_pos {
        table.extend(freqs.iter().map(|f| (pos as f32 * f).cos()));
        table.extend(freqs.iter().map(|f| (pos as f32 * f).sin()));
    }
    let table = b.dtype().round(&table);
    let params = small_cache(layout);
    let cache = params.cache;
    let order = scattered(cache.num_blocks * cache.block_size);
    let rows = 19;
    let mapping: Vec<i64> = (0..rows)
        .map(|i| if i % 4 == 3 { -1 } else { order[i] as i64 })
        .collect();
    let positions: Vec<u32> = (0..rows)
        .map(|_| rng.random_range(0..max_pos as u32))
        .collect();
    let mut qkv = random_as(b, rng, rows * layout.row_width());
    let (q_w, k_w) = (random_as(b, rng, hd), random_as(b, rng, hd));
    let mut k_want = random_as(b, rng, cache.elements());
    let mut v_want = random_as(b, rng, cache.elements());
    let (qd, td) = (b.upload(&qkv).unwrap(), b.upload(&table).unwrap());
    let (qwd, kwd) = (b.upload(&q_w).unwrap(), b.upload(&k_w).unwrap());
    let (kd, vd) = (b.upload(&k_want).unwrap(), b.upload(&v_want).unwrap());
    if with_norm {
        cpu::qk_norm(&mut qkv, &q_w, &k_w, 1e-6, layout);
    }
    cpu::rope(&mut qkv, &table, &positions, layout).unwrap();
    cpu::write_kv(&qkv, &mut k_want, &mut v_want, &mapping, &params).unwrap();
    let mut step = simple_step(&vec![0; rows], &positions);
    step.slot_mapping = mapping;
    let norm = || {
        with_norm.then_some(QkNorm {
            q_w: &qwd,
            k_w: &kwd,
            eps: 1e-6,
        })
    };
    // The device buffers: qkv, k cache, v cache.
    type Bufs = [<CudaBackend as Backend>::Tensor; 3];
    let run = |step: &StepInput, [q, k, v]: &mut Bufs| {
        let meta = meta_for(b, step);
        b.rope_write_kv(q, rows, norm(), &td, k, v, &meta, &params)
    };
    let mut bufs: Bufs = [qd, kd, vd];
    run(&step, &mut bufs).unwrap();
    let [qd, kd, vd] = &bufs;
    let got = [
        (b.download(qd, qkv.len()).unwrap(), &qkv, "qkv"),
        (b.download(kd, cache.elements()).unwrap(), &k_want, "k"),
        (b.download(vd, cache.elements()).unwrap(), &v_want, "v"),
    ];
    // In bf16 the normalized heads are rounded before the rotation (as qk_norm then rope store
    // them), and x c - y s can cancel: an output may be off by 2^-9 (|x| + |y|) (|c| + |s|),
    // under 1e-2 for these normalized heads (|x| <= ~1.7), however small the output itself.
    let atol = if with_norm && b.dtype() == DType::Bf16 {
        1e-2
    } else {
        1e-5
    };
    for (got, want, what) in &got {
        let what = format!("rope_write_kv norm {with_norm} {what} {layout:?}");
        check(b, &what, got, want, atol, 1e-5);
    }

    let mut bad = step.clone();
    bad.positions[0] = max_pos as u32;
    assert!(run(&bad, &mut bufs).is_err(), "a position past the table");
    step.slot_mapping[0] = (cache.num_blocks * cache.block_size) as i64;
    assert!(run(&step, &mut bufs).is_err(), "a slot past the cache");
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
    // Pure decode steps may run on the tensor-core decode kernel, which rounds P to bf16 as the
    // prefill kernel does.
    let pure_decode = q_lens.iter().all(|&q| q == 1);
    let (atol, what) = if pure_decode && b.decode_uses_tensor_cores(layout, block_size) {
        (PREFILL_TC_ATOL, format!("{what} (tensor cores)"))
    } else {
        (2e-5, what.to_string())
    };
    check_attention_atol(
        b, &what, layout, block_size, window, q_lens, ctx_lens, seed, atol,
    );
}

/// A step that is not pure decode, on the general kernel (`general`) or on the kernel the backend
/// picks: the tensor-core prefill kernel for bf16 and head_dim a multiple of 16 up to 128, which
/// rounds P to bf16 and gets [`PREFILL_TC_ATOL`].
#[allow(clippy::too_many_arguments)]
fn check_prefill(
    b: &CudaBackend,
    general: bool,
    what: &str,
    layout: QkvLayout,
    block_size: usize,
    window: Option<usize>,
    q_lens: &[usize],
    ctx_lens: &[usize],
    seed: u64,
) {
    let hd = layout.head_dim;
    let tc = !general && b.dtype() == DType::Bf16 && hd.is_multiple_of(16) && hd <= 128;
    let (atol, kernel) = if tc {
        (PREFILL_TC_ATOL, "tensor cores")
    } else {
        (2e-5, "general")
    };
    b.set_prefill_general(general);
    let what = format!("{what} ({kernel})");
    check_attention_atol(
        b, &what, layout, block_size, window, q_lens, ctx_lens, seed, atol,
    );
    b.set_prefill_general(false);
}

/// Bf16 backends run the steps that are not pure decode on both kernels; f32 has only the
/// general one.
fn prefill_paths(b: &CudaBackend) -> &'static [bool] {
    match b.dtype() {
        DType::Bf16 => &[false, true],
        DType::F32 => &[false],
    }
}

#[allow(clippy::too_many_arguments)]
fn check_attention_atol(
    b: &CudaBackend,
    what: &str,
    layout: QkvLayout,
    block_size: usize,
    window: Option<usize>,
    q_lens: &[usize],
    ctx_lens: &[usize],
    seed: u64,
    atol: f32,
) {
    let dtype = b.dtype();
    let case = AttentionCase::new(layout, block_size, window, q_lens, ctx_lens, seed, &|v| {
        dtype.round(v)
    });
    let (step, params, want) = (&case.step, &case.params, &case.want);
    let meta = meta_with(b, step, layout);
    let (qd, kd, vd) = (
        b.upload(&case.qkv).unwrap(),
        b.upload(&case.k_cache).unwrap(),
        b.upload(&case.v_cache).unwrap(),
    );
    let mut out = poisoned(b, want.len());
    b.attention(&qd, &kd, &vd, &meta, params, &mut out).unwrap();
    let got = b.download(&out, want.len()).unwrap();
    check(b, what, &got, want, atol, 1e-4);
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
        for &general in prefill_paths(&b) {
            for (i, layout) in LAYOUTS.into_iter().enumerate() {
                for block_size in [16, 7] {
                    // Whole prompts, then chunked prefill beside decode rows (c > q: earlier
                    // context is read from the cache).
                    check_prefill(
                        &b,
                        general,
                        &format!("prefill {layout:?} block {block_size}"),
                        layout,
                        block_size,
                        None,
                        &[1, 33, 64, 3],
                        &[1, 33, 64, 3],
                        20 + i as u64,
                    );
                    check_prefill(
                        &b,
                        general,
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
            // Row counts around the prefill kernel's 16-row fragments and 64-row blocks, then
            // one long prompt (many row blocks, many key tiles).
            let layout = QkvLayout {
                num_heads: 8,
                num_kv_heads: 2,
                head_dim: 64,
            };
            check_prefill(
                &b,
                general,
                "prefill q around 16 and 64",
                layout,
                16,
                None,
                &[15, 16, 17, 63, 64, 65, 130, 1],
                &[15, 40, 17, 100, 64, 65, 200, 5],
                60,
            );
            check_prefill(
                &b,
                general,
                "prefill of 700",
                LAYOUTS[1],
                16,
                None,
                &[700],
                &[700],
                61,
            );
        }
    }
}

#[test]
fn paged_attention_sliding_window() {
    for b in gpus("paged_attention_sliding_window") {
        for &general in prefill_paths(&b) {
            for window in [1, 7, 64] {
                check_prefill(
                    &b,
                    general,
                    &format!("sliding window {window}"),
                    LAYOUTS[0],
                    16,
                    Some(window),
                    &[1, 20, 5, 1],
                    &[300, 20, 70, 3],
                    40 + window as u64,
                );
                check_prefill(
                    &b,
                    general,
                    &format!("sliding window {window}, 8/1 x 128"),
                    LAYOUTS[1],
                    16,
                    Some(window),
                    &[1, 130, 200],
                    &[300, 200, 1000],
                    45 + window as u64,
                );
            }
        }
    }
}

#[test]
fn write_kv() {
    for b in gpus("write_kv") {
        let mut rng = StdRng::seed_from_u64(9);
        for layout in LAYOUTS.into_iter().chain(ODD_LAYOUTS) {
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
