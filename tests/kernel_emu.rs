//! The CUDA kernels (kernels/*.cu), compiled for the CPU and run by the emulator
//! (`--features kernel-emu`, kernels/emu), against the CPU reference ops on seeded random inputs:
//! every machine checks the kernels' logic (indexing, barriers, warp shuffles, split-and-merge,
//! rounding) without a GPU. Launch shapes and argument lists are the ones the CUDA backend uses
//! (runtime/cuda), as each kernel's header comment states them; the emulator checks the argument
//! count and sizes against the kernel's declaration. What only a GPU shows (speed, the launch
//! code in runtime/cuda, cuBLAS) is for tests/cuda_*.rs.
//!
//! Outputs are poisoned with NaN first, so an element a kernel fails to write fails.

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::emu::*;
use common::kernel_cases::*;
use common::scattered;
use tandem::runtime::backend::{AttentionParams, CacheShape, QkvLayout};
use tandem::runtime::cpu;

fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap()
}

/// Elements per thread of the kernels that move 16-byte vectors where a row width allows
/// (`CudaBackend::vector_elems`): 16 bytes' worth, else 1.
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

/// Which attention kernel a step runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum AttnPath {
    /// paged_attention.cu: any step.
    General,
    /// paged_attention_decode.cu over this many context splits (merged when more than one):
    /// pure decode steps only.
    Decode(u32),
    /// paged_attention_prefill.cu (tensor cores; bf16, head_dim a multiple of 16 up to 128).
    Prefill,
}

/// Runs one attention step on `path` and checks it against the CPU reference.
#[allow(clippy::too_many_arguments)]
fn check_attention(
    dt: Dt,
    path: AttnPath,
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
    let qkv: Vec<f32> = random_as(Dt::F32, &mut rng, rows * layout.row_width())
        .iter()
        .map(|v| v * 3.0) // peakier softmax than uniform inputs give
        .collect();
    let qkv = dt.round(&qkv);
    let k_cache = random_as(dt, &mut rng, cache.elements());
    let v_cache = random_as(dt, &mut rng, cache.elements());
    let mut want = vec![0.0; rows * layout.q_width()];
    cpu::attention(&qkv, &k_cache, &v_cache, &step, &params, &mut want).unwrap();

    let (qd, kd, vd) = (
        Buf::new(dt, &qkv),
        Buf::new(dt, &k_cache),
        Buf::new(dt, &v_cache),
    );
    let mut out = Buf::poisoned(dt, want.len());
    let seqs = step.num_seqs();
    let tables = Arg::ptr(&step.block_tables);
    let common = [
        qd.arg(),
        kd.arg(),
        vd.arg(),
        Arg::ptr(&step.query_start_locs),
        Arg::ptr(&step.context_lens),
        tables,
    ];
    let sizes: [Arg; 7] = [
        u(step.max_blocks_per_seq).into(),
        u(layout.num_heads).into(),
        u(layout.num_kv_heads).into(),
        u(layout.head_dim).into(),
        u(block_size).into(),
        params.scale.into(),
        u(window.unwrap_or(0)).into(),
    ];
    match path {
        AttnPath::General => {
            let mut args = common.to_vec();
            args.push(u(seqs).into());
            args.extend(sizes);
            args.push(out.arg_mut());
            let grid = (u(rows), u(layout.num_heads), 1);
            run(&dt.kernel("paged_attention"), grid, 128, &args);
        }
        AttnPath::Prefill => {
            // As runtime/cuda/attention.rs launches it: the general kernel's arguments and the
            // step's row tiles of 64, one block per (tile, head).
            assert_eq!(dt, Dt::Bf16, "the prefill kernel is bf16 only");
            let tiles: Vec<u32> = step.row_tiles(64).flat_map(|(s, t)| [s, t]).collect();
            let mut args = common.to_vec();
            args.push(u(seqs).into());
            args.extend(sizes);
            args.extend([out.arg_mut(), Arg::ptr(&tiles)]);
            let grid = (u(tiles.len() / 2), u(layout.num_heads), 1);
            let name = format!("paged_attention_prefill_bf16_d{}", layout.head_dim);
            run(&name, grid, 128, &args);
        }
        AttnPath::Decode(splits) => {
            assert_eq!(rows, seqs, "the decode kernel takes one row per sequence");
            // The instance the backend picks (runtime/cuda/attention.rs): 4 or 8 elements per
            // lane, the group's heads per warp rounded up to a power of two, at most 8 (4).
            let per = if layout.head_dim <= 128 { 4 } else { 8 };
            let group = layout.num_heads / layout.num_kv_heads;
            let hc = group.next_power_of_two().min(if per == 4 { 8 } else { 4 });
            let name = format!("paged_attention_decode_{}_d{}_h{hc}", dt.name(), 32 * per);
            let parts = seqs * splits as usize * layout.num_heads;
            let mut part_o = vec![f32::NAN; parts * layout.head_dim];
            let mut part_ml = vec![f32::NAN; parts * 2];
            let mut args = common.to_vec();
            args.extend(sizes);
            args.extend([splits.into(), out.arg_mut()]);
            args.extend([Arg::ptr_mut(&mut part_o), Arg::ptr_mut(&mut part_ml)]);
            run(&name, (splits, u(layout.num_kv_heads), u(seqs)), 128, &args);
            if splits > 1 {
                let args = [
                    Arg::ptr(&part_o),
                    Arg::ptr(&part_ml),
                    Arg::ptr(&step.query_start_locs),
                    splits.into(),
                    u(layout.num_heads).into(),
                    u(layout.head_dim).into(),
                    out.arg_mut(),
                ];
                let merge = dt.kernel("paged_attention_merge");
                run(&merge, (u(seqs), u(layout.num_heads), 1), 128, &args);
            }
        }
    }
    let what = format!("{path:?} {layout:?} block {block_size} window {window:?} q {q_lens:?}");
    let atol = match path {
        AttnPath::Prefill => PREFILL_TC_ATOL,
        _ => 2e-5,
    };
    check(dt, &what, &out.read(), &want, atol, 1e-4);
}

#[test]
fn paged_attention_prefill() {
    for dt in DTYPES {
        for (i, layout) in LAYOUTS.into_iter().enumerate() {
            for block_size in [16, 7] {
                // Whole prompts, then chunked prefill beside decode rows (earlier context read
                // from the cache).
                let (q, c) = ([1, 33, 64, 3], [1, 33, 64, 3]);
                check_attention(
                    dt,
                    AttnPath::General,
                    layout,
                    block_size,
                    None,
                    &q,
                    &c,
                    20 + i as u64,
                );
                let (q, c) = ([17, 1, 40, 2], [50, 9, 300, 2]);
                check_attention(
                    dt,
                    AttnPath::General,
                    layout,
                    block_size,
                    None,
                    &q,
                    &c,
                    30 + i as u64,
                );
            }
        }
        for window in [1, 7, 64] {
            let (q, c) = ([1, 20, 5, 1], [300, 20, 70, 3]);
            check_attention(
                dt,
                AttnPath::General,
                LAYOUTS[0],
                16,
                Some(window),
                &q,
                &c,
                40,
            );
        }
    }
}

/// The tensor-core prefill kernel (bf16): whole prompts and chunked prefill beside decode rows,
/// q lengths around the 16-row fragments and 64-row blocks, contexts longer than q (earlier keys
/// from the cache), block sizes 16 and 7, sliding windows, head_dim 16 to 128, GQA 1 to 8.
#[test]
fn paged_attention_prefill_tc() {
    let dt = Dt::Bf16;
    let layout = |num_heads, num_kv_heads, head_dim| QkvLayout {
        num_heads,
        num_kv_heads,
        head_dim,
    };
    let layouts = [
        layout(4, 2, 16),
        layout(4, 1, 64),
        layout(2, 2, 80),
        layout(8, 1, 128),
    ];
    for (i, &l) in layouts.iter().enumerate() {
        for block_size in [16, 7] {
            let seed = 100 + 10 * i as u64 + block_size as u64;
            // The general kernel's cases: whole prompts, then chunked prefill beside decode rows.
            let (q, c) = ([1, 33, 64, 3], [1, 33, 64, 3]);
            check_attention(dt, AttnPath::Prefill, l, block_size, None, &q, &c, seed);
            let (q, c) = ([17, 1, 40, 2], [50, 9, 300, 2]);
            check_attention(dt, AttnPath::Prefill, l, block_size, None, &q, &c, seed + 1);
        }
        // Row counts around the fragments (16) and blocks (64), some after cached context.
        let q = [15, 16, 17, 63, 64, 65, 130, 1];
        let c = [15, 40, 17, 100, 64, 65, 200, 5];
        check_attention(dt, AttnPath::Prefill, l, 16, None, &q, &c, 130 + i as u64);
    }
    // A long chunk after a long cached context: many tiles, many online-softmax rescales.
    let (q, c) = ([100, 3], [1000, 600]);
    check_attention(dt, AttnPath::Prefill, layouts[1], 16, None, &q, &c, 135);
    // The other instances (head_dim 32, 48, 96, 112).
    for (i, hd) in [32, 48, 96, 112].into_iter().enumerate() {
        let (q, c) = ([1, 33, 70], [5, 33, 90]);
        check_attention(
            dt,
            AttnPath::Prefill,
            layout(2, 1, hd),
            7,
            None,
            &q,
            &c,
            150 + i as u64,
        );
    }
    for window in [1, 7, 64] {
        for &l in &[layouts[1], layouts[3]] {
            let (q, c) = ([1, 20, 130, 1], [300, 20, 200, 3]);
            check_attention(dt, AttnPath::Prefill, l, 16, Some(window), &q, &c, 140);
        }
    }
}

/// Pure decode steps on the decode kernel, unsplit (no merge), split in 7 (uneven, some splits
/// empty for short sequences) and in 2, over GQA ratios 1 to 16 and head_dim 16 to 256; and on
/// the general kernel.
#[test]
fn paged_attention_decode() {
    let ctx = [1, 17, 600, 64, 65];
    for dt in DTYPES {
        for (i, &(nh, nkv, hd)) in DECODE_LAYOUTS.iter().enumerate() {
            let layout = QkvLayout {
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
            };
            let paths: &[AttnPath] = if hd % 4 == 0 {
                &[
                    AttnPath::Decode(1),
                    AttnPath::Decode(7),
                    AttnPath::Decode(2),
                    AttnPath::General,
                ]
            } else {
                &[AttnPath::General] // the backend sends such layouts to the general kernel
            };
            for &path in paths {
                for block_size in [16, 5] {
                    let q = [1; 5];
                    check_attention(dt, path, layout, block_size, None, &q, &ctx, 50 + i as u64);
                }
            }
        }
        let layout = QkvLayout {
            num_heads: 8,
            num_kv_heads: 2,
            head_dim: 128,
        };
        for path in [AttnPath::Decode(1), AttnPath::Decode(5)] {
            for window in [1, 7, 64, 1000] {
                let (q, c) = ([1; 4], [1, 17, 600, 1000]);
                check_attention(dt, path, layout, 16, Some(window), &q, &c, 80);
            }
        }
    }
}

/// The device sampler (greedy, temperature, top-k, top-p, min-p, seeded draws, top-n logprobs)
/// against the CPU's `sample()`: tokens and top ids exactly, logprobs within 1e-5.
#[test]
fn sample_rows() {
    use tandem::runtime::sampling::device_words::{pack, unpack, OUT_WORDS, PARAM_WORDS};
    for dt in DTYPES {
        let mut rng = StdRng::seed_from_u64(71);
        for (round, (vocab, rows)) in [(5, 1), (64, 7), (33, 1000), (50_000, 6), (40, 14)]
            .into_iter()
            .enumerate()
        {
            let batch =
                SamplingBatch::new(&mut rng, rows, vocab, round, dt.name(), &|v| dt.round(v));
            let params = batch.device_params();
            let mut words = vec![0u32; rows * PARAM_WORDS];
            for (p, w) in params.iter().zip(words.chunks_exact_mut(PARAM_WORDS)) {
                pack(p, w);
            }
            let logits = Buf::new(dt, &batch.logits);
            let mut out = vec![u32::MAX; rows * OUT_WORDS];
            let args = [
                logits.arg(),
                u(vocab).into(),
                Arg::ptr(&words),
                Arg::ptr_mut(&mut out),
            ];
            run(&dt.kernel("sample_rows"), (u(rows), 1, 1), 512, &args);
            let got: Vec<_> = params
                .iter()
                .zip(out.chunks_exact(OUT_WORDS))
                .map(|(p, w)| unpack(p, w, vocab))
                .collect();
            let (atol, rtol) = dt.tol(1e-5, 1e-5);
            batch.check(&got, atol, rtol);
        }
    }
}
