//! The CUDA backend's kernels against the CPU reference ops, on seeded random inputs (awkward
//! sizes, one token, scattered blocks). Attention is in tests/cuda_attention.rs; the whole
//! model, the device sampler and the launch-ahead and graph paths are in tests/cuda_model.rs.
//!
//! Built only with `--features cuda`. Without a CUDA driver they run on the emulated device when
//! built with `kernel-emu` too (device/cuda/emulated.rs; the test command does), and a device that
//! fails to open fails them; in a plain `cuda` build without a GPU every test prints
//! `skipped: <name>: no CUDA device (<reason>)` and returns: never a silent pass.
//! Every kernel test runs once per storage dtype (f32, bf16). Inputs are rounded to the dtype on
//! the host first, so the CPU reference sees exactly the values the device holds; outputs are
//! poisoned with NaN before each run, so an element the kernel fails to write fails the
//! comparison; the tolerance is `atol + |ref| * rtol`, sized per dtype by [`tol`].

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::gpu::*;
use common::scattered;
use tandem::device::backend::{AttentionParams, Backend, CacheShape, QkNorm, QkvLayout};
use tandem::device::cpu;
use tandem::device::cuda::{CudaBackend, CudaOptions, DType, GemmPath};
use tandem::device::step::StepInput;

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
            check_linear(&b, &mut rng, rows, k, n, with_bias).unwrap();
        }
    }
}

/// One product on `b` against the CPU's; an error only if the backend refused it.
fn check_linear(
    b: &CudaBackend,
    rng: &mut StdRng,
    rows: usize,
    k: usize,
    n: usize,
    with_bias: bool,
) -> anyhow::Result<()> {
    let x = random_as(b, rng, rows * k);
    let w = random_as(b, rng, n * k);
    let bias = with_bias.then(|| random_as(b, rng, n));
    let mut want = vec![0.0; rows * n];
    cpu::matmul_transposed(&x, &w, bias.as_deref(), rows, k, n, &mut want).unwrap();
    let (xd, wd) = (b.upload(&x).unwrap(), b.upload(&w).unwrap());
    let bd = bias.as_ref().map(|v| b.upload(v).unwrap());
    let mut out = poisoned(b, rows * n);
    b.linear(&xd, &wd, bd.as_ref(), rows, k, n, &mut out)?;
    let got = b.download(&out, rows * n).unwrap();
    // bf16: cuBLAS's output is rounded before the bias is added, an error relative to the
    // product, which the bias may cancel: atol scales with the outputs' size.
    let atol = match b.dtype() {
        DType::F32 => 1e-4,
        DType::Bf16 => 4e-3 * want.iter().fold(0.0f32, |m, v| m.max(v.abs())),
    };
    check(
        b,
        &format!(
            "linear {rows}x{k} -> {n}, bias {with_bias}, gemm {:?}",
            b.gemm_path()
        ),
        &got,
        &want,
        atol,
        1e-4,
    );
    Ok(())
}

/// Products of a decode step's few rows on every GEMM path: cuBLAS, the skinny kernel at each
/// k-split, and tuning. Shapes the skinny kernel cannot take (f32, more than 64 rows, k not a
/// multiple of 32) must still come out right on cuBLAS; tuning times each shape once and keeps
/// the fastest candidate it measured.
#[test]
fn linear_paths() {
    for b in gpus("linear_paths") {
        let mut rng = StdRng::seed_from_u64(15);
        let shapes = [
            (1, 64, 64, false),
            (7, 96, 40, true),
            (16, 256, 200, true),
            (64, 128, 96, false),
            (65, 64, 32, false),
            (3, 100, 16, false),
        ];
        let paths = [
            GemmPath::Cublas,
            GemmPath::Skinny(2),
            GemmPath::Skinny(4),
            GemmPath::Skinny(8),
            GemmPath::Lt(0),
            GemmPath::Lt(1),
            GemmPath::Lt(usize::MAX),
            GemmPath::Auto,
        ];
        let mut fallbacks = 0;
        let mut last = None;
        for path in paths {
            let pinned = gemm_backend(&b, path);
            for (rows, k, n, with_bias) in shapes {
                check_linear(&pinned, &mut rng, rows, k, n, with_bias).unwrap();
            }
            fallbacks += pinned.gemm_lt_fallbacks();
            last = Some(pinned);
        }
        // Every cuBLASLt algorithm the paths above picked ran as picked.
        assert_eq!(fallbacks, 0);
        // The tuning of the last pass (Auto): one entry per shape the skinny kernel takes, on
        // bf16.
        let b = last.expect("at least one path");
        let tuned = b.gemm_tunings();
        let want = if b.dtype() == DType::Bf16 { 4 } else { 0 };
        assert_eq!(tuned.len(), want, "{tuned:?}");
        for t in &tuned {
            // cuBLAS, then each k-warp count unsplit and, where the heuristic splits k, split,
            // then cuBLASLt's algorithms.
            assert_eq!(t.times_us[0].0, "cublas", "{t:?}");
            assert!(
                t.rejected.is_empty(),
                "a skinny or cuBLASLt variant disagreed with cuBLAS: {t:?}"
            );
            let skinny = t
                .times_us
                .iter()
                .filter(|(c, _)| c.starts_with("skinny"))
                .count();
            assert!((4..=8).contains(&skinny), "{t:?}");
            let lt: Vec<&String> = t
                .times_us
                .iter()
                .map(|(c, _)| c)
                .filter(|c| c.starts_with("lt"))
                .collect();
            assert!(!lt.is_empty(), "no cuBLASLt candidate: {t:?}");
            assert_eq!(1 + skinny + lt.len(), t.times_us.len(), "{t:?}");
            for (i, c) in lt.iter().enumerate() {
                assert!(c.starts_with(&format!("lt{i}_")), "{t:?}");
            }
            let (fastest, _) = t
                .times_us
                .iter()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            assert_eq!(&t.picked, fastest, "{t:?}");
        }
        // A shape already tuned is not timed again.
        check_linear(&b, &mut rng, 7, 96, 40, true).unwrap();
        assert_eq!(b.gemm_tunings().len(), want);

        // Split k over blocks, where the heuristic does (the emulated device has 4 SMs).
        assert!(
            tuned.is_empty()
                || tuned.iter().any(|t| t
                    .times_us
                    .iter()
                    .any(|(c, _)| !c.ends_with("_s1") && c != "cublas")),
            "no split-k candidate: {tuned:?}"
        );
        // A cuBLASLt algorithm picked at one row count but not taken at another of the same
        // row tile goes to cuBLAS there, with the right answer. On the emulated library the
        // third algorithm takes only as many rows as it was found for.
        if b.dtype() == DType::Bf16 {
            let lt2 = gemm_backend(&b, GemmPath::Lt(2));
            check_linear(&lt2, &mut rng, 9, 64, 48, false).unwrap();
            let before = lt2.gemm_lt_fallbacks();
            check_linear(&lt2, &mut rng, 16, 64, 48, true).unwrap();
            if on_emulated_device() {
                assert_eq!(lt2.gemm_lt_fallbacks(), before + 1);
            }
        }
        // A k-warp count the kernel does not have is an error, not a crash (bf16, where it applies).
        let skinny3 = gemm_backend(&b, GemmPath::Skinny(3));
        let refused = check_linear(&skinny3, &mut rng, 1, 64, 64, false);
        assert_eq!(refused.is_err(), b.dtype() == DType::Bf16, "{refused:?}");
    }
}

/// A backend like `b` with its products of few rows pinned to `path`.
fn gemm_backend(b: &CudaBackend, path: GemmPath) -> CudaBackend {
    let options = CudaOptions {
        gemm: Some(path),
        ..CudaOptions::default()
    };
    with_options(b, options)
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
