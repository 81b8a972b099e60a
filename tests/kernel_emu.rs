//! The CUDA kernels (kernels/*.cu), compiled for the CPU and run by the emulator
//! (`--features kernel-emu`, kernels/emu), against the CPU reference ops on seeded random inputs
//! (the attention kernels: tests/kernel_emu_attention.rs):
//! every machine checks the kernels' logic (indexing, barriers, warp shuffles, split-and-merge,
//! rounding) without a GPU. Launch shapes and argument lists are the ones the CUDA backend uses
//! (device/cuda), as each kernel's header comment states them; the emulator checks the argument
//! count and sizes against the kernel's declaration. What only a GPU shows (speed, the launch
//! code in device/cuda, cuBLAS) is for tests/cuda_*.rs.
//!
//! Outputs are poisoned with NaN first, so an element a kernel fails to write fails.

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::emu::*;
use common::kernel_cases::*;
use common::scattered;
use tandem::device::backend::{AttentionParams, CacheShape};
use tandem::device::cpu;

fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap()
}

/// Elements per thread of the kernels that move 16-byte vectors where a row width allows
/// (`DType::vector_elems` in device/cuda): 16 bytes' worth, else 1.
fn vector_elems(dt: Dt, width: usize) -> usize {
    let per = 16 / dt.size();
    if width.is_multiple_of(per) {
        per
    } else {
        1
    }
}

#[test]
fn rms_norm() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(3);
        for (rows, dim) in NORM_SHAPES {
            let x = random_as(dt, &mut rng, rows * dim);
            let w = random_as(dt, &mut rng, dim);
            let mut want = vec![0.0; rows * dim];
            cpu::rms_norm(&x, &w, 1e-6, &mut want);
            let (xd, wd) = (Buf::new(dt, &x), Buf::new(dt, &w));
            let mut out = Buf::poisoned(dt, rows * dim);
            let args = [
                xd.arg(),
                wd.arg(),
                1e-6f32.into(),
                u(dim).into(),
                out.arg_mut(),
            ];
            run(&dt.kernel("rms_norm"), (u(rows), 1, 1), 256, &args);
            check(
                dt,
                &format!("rms_norm {rows}x{dim}"),
                &out.read(),
                &want,
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn add_rms_norm() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(4);
        for (rows, dim) in NORM_SHAPES {
            let mut residual = random_as(dt, &mut rng, rows * dim);
            let delta = random_as(dt, &mut rng, rows * dim);
            let w = random_as(dt, &mut rng, dim);
            let mut rd = Buf::new(dt, &residual);
            let (dd, wd) = (Buf::new(dt, &delta), Buf::new(dt, &w));
            let mut want = vec![0.0; rows * dim];
            cpu::add_rms_norm(&mut residual, &delta, &w, 1e-5, &mut want);
            let mut out = Buf::poisoned(dt, rows * dim);
            let args = [
                rd.arg_mut(),
                dd.arg(),
                wd.arg(),
                1e-5f32.into(),
                u(dim).into(),
                out.arg_mut(),
            ];
            run(&dt.kernel("add_rms_norm"), (u(rows), 1, 1), 256, &args);
            let what = format!("add_rms_norm {rows}x{dim}");
            // The residual is the f32 sum, rounded as the device stores it.
            check(
                dt,
                &format!("{what} residual"),
                &rd.read(),
                &dt.round(&residual),
                0.0,
                0.0,
            );
            check(dt, &what, &out.read(), &want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn qk_norm() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(6);
        for layout in LAYOUTS.into_iter().chain(ODD_LAYOUTS) {
            for rows in [1, 9] {
                let mut qkv = random_as(dt, &mut rng, rows * layout.row_width());
                let q_w = random_as(dt, &mut rng, layout.head_dim);
                let k_w = random_as(dt, &mut rng, layout.head_dim);
                let mut d = Buf::new(dt, &qkv);
                let (qd, kd) = (Buf::new(dt, &q_w), Buf::new(dt, &k_w));
                cpu::qk_norm(&mut qkv, &q_w, &k_w, 1e-6, layout);
                let heads = u(layout.num_heads + layout.num_kv_heads);
                let args = [
                    d.arg_mut(),
                    qd.arg(),
                    kd.arg(),
                    1e-6f32.into(),
                    u(layout.num_heads).into(),
                    u(layout.num_kv_heads).into(),
                    u(layout.head_dim).into(),
                ];
                run(
                    &dt.kernel("qk_norm"),
                    (u(rows), heads.div_ceil(4), 1),
                    128,
                    &args,
                );
                check(
                    dt,
                    &format!("qk_norm {layout:?} x{rows}"),
                    &d.read(),
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
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(7);
        for layout in LAYOUTS.into_iter().chain(ODD_LAYOUTS) {
            let (hd, max_pos) = (layout.head_dim, 300);
            let freqs: Vec<f32> = (0..hd / 2).map(|_| rng.random_range(0.0f32..1.0)).collect();
            let mut table = Vec::with_capacity(max_pos * hd);
            for pos in 0..max_pos {
                table.extend(freqs.iter().map(|f| (pos as f32 * f).cos()));
                table.extend(freqs.iter().map(|f| (pos as f32 * f).sin()));
            }
            let table = dt.round(&table);
            let td = Buf::new(dt, &table);
            for rows in [1, 13] {
                let positions: Vec<u32> = (0..rows)
                    .map(|_| rng.random_range(0..max_pos as u32))
                    .collect();
                let mut qkv = random_as(dt, &mut rng, rows * layout.row_width());
                let mut d = Buf::new(dt, &qkv);
                cpu::rope(&mut qkv, &table, &positions, layout).unwrap();
                let args = [
                    d.arg_mut(),
                    td.arg(),
                    Arg::ptr(&positions),
                    u(max_pos).into(),
                    u(layout.num_heads).into(),
                    u(layout.num_kv_heads).into(),
                    u(hd).into(),
                ];
                run(&dt.kernel("rope"), (u(rows), 1, 1), 256, &args);
                check(
                    dt,
                    &format!("rope {layout:?} x{rows}"),
                    &d.read(),
                    &qkv,
                    1e-6,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn silu_mul() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(8);
        for (rows, inter) in [(1, 128), (13, 333), (3, 4100), (2, 2052), (5, 2400)] {
            let gu: Vec<f32> = random_as(dt, &mut rng, rows * 2 * inter)
                .iter()
                .map(|v| v * 8.0)
                .collect();
            let mut want = vec![0.0; rows * inter];
            cpu::silu_mul(&gu, inter, &mut want);
            let gd = Buf::new(dt, &gu);
            let mut out = Buf::poisoned(dt, rows * inter);
            let args = [gd.arg(), u(inter).into(), out.arg_mut()];
            // One 16-byte vector per thread when rows are a multiple of it (see silu_mul.cu).
            let grid = (u(rows), u(inter.div_ceil(256 * vector_elems(dt, inter))), 1);
            run(&dt.kernel("silu_mul"), grid, 256, &args);
            check(
                dt,
                &format!("silu_mul {rows}x{inter}"),
                &out.read(),
                &want,
                1e-6,
                1e-5,
            );
        }
    }
}

#[test]
fn add_bias() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(11);
        for (rows, n) in [(1, 64), (7, 333)] {
            let x = random_as(dt, &mut rng, rows * n);
            let bias = random_as(dt, &mut rng, n);
            let want: Vec<f32> = x.iter().enumerate().map(|(i, v)| v + bias[i % n]).collect();
            let mut xd = Buf::new(dt, &x);
            let bd = Buf::new(dt, &bias);
            let args = [xd.arg_mut(), bd.arg(), u(n).into()];
            run(
                &dt.kernel("add_bias"),
                (u(rows), u(n).div_ceil(256), 1),
                256,
                &args,
            );
            // One rounding of the f32 sum.
            check(
                dt,
                &format!("add_bias {rows}x{n}"),
                &xd.read(),
                &dt.round(&want),
                0.0,
                0.0,
            );
        }
    }
}

/// The skinny-GEMM kernel's token tiles and k-warp splits (kernels/gemm_skinny.cu).
const SKINNY_TILES: [u32; 4] = [1, 2, 4, 8];
const SKINNY_KWARPS: [u32; 4] = [1, 2, 4, 8];

#[test]
fn gemm_skinny() {
    let dt = Dt::Bf16;
    let mut rng = StdRng::seed_from_u64(12);
    // (rows, n, k): a partial feature block (n = 40), k whose chunk count is not a multiple of
    // the warps' stride, and full 64-row tiles.
    for (rows, n, k) in [
        (1, 16, 32),
        (3, 40, 96),
        (8, 96, 512),
        (13, 48, 160),
        (64, 32, 288),
    ] {
        let x = random_as(dt, &mut rng, rows * k);
        let w = random_as(dt, &mut rng, n * k);
        let bias = random_as(dt, &mut rng, n);
        let (xd, wd, bd) = (Buf::new(dt, &x), Buf::new(dt, &w), Buf::new(dt, &bias));
        for with_bias in [false, true] {
            let mut want = vec![0.0; rows * n];
            cpu::matmul_transposed(
                &x,
                &w,
                with_bias.then_some(&bias[..]),
                rows,
                k,
                n,
                &mut want,
            )
            .unwrap();
            for nt in SKINNY_TILES
                .into_iter()
                .filter(|&nt| 8 * nt as usize >= rows)
            {
                for kw in SKINNY_KWARPS {
                    // Split k in 1, 2 and 3 (a split may get no chunk: k = 32 has one).
                    for splits in [1u32, 2, 3] {
                        let tiles = u(n).div_ceil(16 * (8 / kw));
                        let mut out = Buf::poisoned(dt, rows * n);
                        let mut ws = Buf::poisoned(Dt::F32, splits as usize * rows * n);
                        let mut counters = Buf::new(Dt::F32, &vec![0.0; tiles as usize]);
                        let b = if with_bias { bd.arg() } else { Arg::U64(0) };
                        let args = [
                            xd.arg(),
                            wd.arg(),
                            b,
                            u(rows).into(),
                            u(n).into(),
                            u(k).into(),
                            out.arg_mut(),
                            ws.arg_mut(),
                            counters.arg_mut(),
                        ];
                        let kernel = format!("gemm_skinny_bf16_t{nt}_k{kw}");
                        run(&kernel, (tiles, splits, 1), 256, &args);
                        // f32 sums in another order, rounded once to bf16: within half a step.
                        let what =
                            format!("{kernel} splits {splits} {rows}x{n}x{k} bias {with_bias}");
                        common::assert_close(&what, &out.read(), &want, 1e-5, 4e-3);
                        // Each tile's counter is back to 0 for the next launch (bits 0: 0.0).
                        assert!(
                            counters.read().iter().all(|&c| c == 0.0),
                            "{what}: counters"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gather_rows() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(1);
        // Widths whose rows are and are not a multiple of 16 bytes.
        for (vocab, dim, rows) in [(1000, 64, 1), (517, 100, 37), (300, 4099, 5)] {
            let table = random_as(dt, &mut rng, vocab * dim);
            let ids: Vec<u32> = (0..rows)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect();
            let mut want = vec![0.0; rows * dim];
            cpu::embed(&table, &ids, dim, &mut want).unwrap();
            let td = Buf::new(dt, &table);
            let mut out = Buf::poisoned(dt, rows * dim);
            let args = [
                td.arg(),
                Arg::ptr(&ids),
                u(vocab).into(),
                u(dim).into(),
                out.arg_mut(),
            ];
            run(&dt.kernel("gather_rows"), (u(rows), 1, 1), 256, &args);
            check(
                dt,
                &format!("gather_rows {vocab}x{dim}"),
                &out.read(),
                &want,
                0.0,
                0.0,
            );

            // An id outside the table writes NaN, never reads out of bounds.
            let bad = [vocab as u32];
            let mut out = Buf::new(dt, &vec![0.0; dim]);
            let args = [
                td.arg(),
                Arg::ptr(&bad),
                u(vocab).into(),
                u(dim).into(),
                out.arg_mut(),
            ];
            run(&dt.kernel("gather_rows"), (1, 1, 1), 256, &args);
            assert!(
                out.read().iter().all(|v| v.is_nan()),
                "a bad id must write NaN"
            );
        }
    }
}

#[test]
fn carry_tokens() {
    let mut ids: Vec<u32> = (100..400).collect();
    let sample_words = 3u32;
    let samples: Vec<u32> = (0..50 * sample_words).map(|i| 7000 + i).collect();
    let carry: Vec<u32> = [(5u32, 0u32), (299, 49), (0, 7), (150, 20)]
        .iter()
        .flat_map(|&(r, s)| [r, s])
        .collect();
    let mut want = ids.clone();
    for pair in carry.chunks(2) {
        want[pair[0] as usize] = samples[(pair[1] * sample_words) as usize];
    }
    let n = u(carry.len() / 2);
    let args = [
        Arg::ptr_mut(&mut ids),
        Arg::ptr(&carry),
        Arg::ptr(&samples),
        n.into(),
        sample_words.into(),
    ];
    run("carry_tokens", (n.div_ceil(128), 1, 1), 128, &args);
    assert_eq!(ids, want);
}

#[test]
fn write_kv() {
    for dt in DTYPES {
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
            let slots = cache.num_blocks * cache.block_size;
            let order = scattered(slots);
            let rows = 19;
            // Scattered distinct slots, some rows padding (-1), one past the cache (skipped).
            let mapping: Vec<i64> = (0..rows)
                .map(|i| match i % 4 {
                    3 => -1,
                    _ if i == 18 => slots as i64,
                    _ => order[i] as i64,
                })
                .collect();
            let qkv = random_as(dt, &mut rng, rows * layout.row_width());
            let mut k_want = random_as(dt, &mut rng, cache.elements());
            let mut v_want = random_as(dt, &mut rng, cache.elements());
            let (mut kd, mut vd) = (Buf::new(dt, &k_want), Buf::new(dt, &v_want));
            let mut cpu_mapping = mapping.clone();
            cpu_mapping[18] = -1; // the CPU op rejects it; the kernel skips it
            cpu::write_kv(&qkv, &mut k_want, &mut v_want, &cpu_mapping, &params).unwrap();
            let qd = Buf::new(dt, &qkv);
            let args = [
                qd.arg(),
                kd.arg_mut(),
                vd.arg_mut(),
                Arg::ptr(&mapping),
                u(layout.q_width()).into(),
                u(layout.kv_width()).into(),
                (slots as u64).into(),
            ];
            run(&dt.kernel("write_kv"), (u(rows), 1, 1), 128, &args);
            check(
                dt,
                &format!("write_kv k {layout:?}"),
                &kd.read(),
                &k_want,
                0.0,
                0.0,
            );
            check(
                dt,
                &format!("write_kv v {layout:?}"),
                &vd.read(),
                &v_want,
                0.0,
                0.0,
            );
        }
    }
}

/// Runs `sample_rows` on the batch `make` builds, once per greedy split count in `splits`, and
/// checks each launch against the CPU's `sample()` (`make` is called afresh for each check,
/// which consumes a batch) and that the split state is back at rest after it.
fn check_sampler_launches(
    dt: Dt,
    make: impl Fn() -> SamplingBatch,
    splits: &[u32],
    (atol, rtol): (f32, f32),
) {
    use tandem::device::sampling::device_words::{
        pack_constraints, pack_entries, unpack, OUT_WORDS, PARAM_WORDS,
    };
    let batch = make();
    let (rows, vocab) = (batch.states.len(), batch.vocab);
    let params = batch.device_params();
    let mut words = vec![0u32; rows * PARAM_WORDS];
    pack_entries(&params, &mut words);
    let logits = Buf::new(dt, &batch.logits);
    // The constrained rows' adjusted copies, as the engine makes them before sampling.
    let (constrained, constraints) = batch.constraints();
    let mut adjusted = vec![f32::NAN; constrained.len() * vocab];
    if !constrained.is_empty() {
        let mut c = Vec::new();
        let layout = pack_constraints(&constrained, &constraints, vocab, &mut c);
        let args = [
            logits.arg(),
            u(vocab).into(),
            Arg::ptr(&c),
            Arg::ptr(&c[layout.masks_at..]),
            Arg::ptr(&c[layout.bias_at..]),
            Arg::ptr_mut(&mut adjusted),
        ];
        run(
            &dt.kernel("constrain_rows"),
            (u(constrained.len()), 1, 1),
            512,
            &args,
        );
    }
    for &split in splits {
        let mut out = vec![u32::MAX; rows * OUT_WORDS];
        let mut best = vec![u64::MAX; rows];
        let mut done = vec![0u32; rows];
        let args = [
            logits.arg(),
            u(vocab).into(),
            Arg::ptr(&words),
            Arg::ptr(&adjusted),
            Arg::ptr_mut(&mut out),
            Arg::ptr_mut(&mut best),
            Arg::ptr_mut(&mut done),
        ];
        run(&dt.kernel("sample_rows"), (u(rows), split, 1), 512, &args);
        let got: Vec<_> = params
            .iter()
            .zip(out.chunks_exact(OUT_WORDS))
            .map(|(p, w)| unpack(p, w, vocab))
            .collect();
        make().check(&got, atol, rtol);
        let what = format!("{} vocab {vocab}, {split} splits", dt.name());
        assert!(best.iter().all(|&b| b == u64::MAX), "{what}: best");
        assert!(done.iter().all(|&d| d == 0), "{what}: counters");
    }
}

/// Greedy rows without logprobs, which the device sampler splits over a row's blocks: the
/// first maximum (ties, a NaN, a -inf in some rows) for every split count, including more blocks
/// than a row has runs for; the split state back at rest after.
#[test]
fn sample_rows_greedy_split() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(73);
        for (vocab, rows) in [(50_000, 3), (4099, 5), (7, 2)] {
            let seed = rng.random::<u64>();
            let make = || {
                let mut rng = StdRng::seed_from_u64(seed);
                SamplingBatch::greedy(&mut rng, rows, vocab, dt.name(), &|v| dt.round(v))
            };
            check_sampler_launches(dt, make, &[1, 2, 5, 64], (0.0, 0.0));
        }
    }
}

/// The device sampler (greedy, temperature, top-k, top-p, min-p, seeded draws, top-n logprobs)
/// against the CPU's `sample()`: tokens and top ids exactly, logprobs within 1e-5; every row
/// kind with the greedy split off and on (other rows then run on their first block, the rest of
/// theirs idle).
#[test]
fn sample_rows() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(71);
        for (round, (vocab, rows)) in [(5, 1), (64, 7), (33, 1000), (50_000, 6), (40, 14)]
            .into_iter()
            .enumerate()
        {
            let seed = rng.random::<u64>();
            let make = || {
                let mut rng = StdRng::seed_from_u64(seed);
                SamplingBatch::new(&mut rng, rows, vocab, round, dt.name(), &|v| dt.round(v))
            };
            check_sampler_launches(dt, make, &[1, 3], dt.tol(1e-5, 1e-5));
        }
    }
}

/// Constrained rows (structured outputs' masks, `logit_bias`): `constrain_rows` then
/// `sample_rows` pick what the host's sampler picks with the same bias and mask, for every row
/// kind, logprobs staying raw; unconstrained rows in the same launch unaffected; greedy rows split
/// over blocks read the adjusted copy too.
#[test]
fn sample_rows_constrained() {
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(79);
        for (round, (vocab, rows)) in [(5, 6), (64, 13), (1000, 24), (50_000, 12)]
            .into_iter()
            .enumerate()
        {
            let seed = rng.random::<u64>();
            let make = || {
                let mut rng = StdRng::seed_from_u64(seed);
                SamplingBatch::constrained(&mut rng, rows, vocab, round, dt.name(), &|v| {
                    dt.round(v)
                })
            };
            check_sampler_launches(dt, make, &[1, 4], dt.tol(1e-5, 1e-5));
        }
    }
}
