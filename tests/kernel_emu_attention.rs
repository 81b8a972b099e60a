//! The attention kernels (paged_attention.cu, paged_attention_prefill.cu,
//! paged_attention_decode.cu), compiled for the CPU and run by the emulator (`--features
//! kernel-emu`, kernels/emu), against the CPU reference attention on random steps over scattered
//! cache blocks, with the launch shapes and argument lists device/cuda/attention.rs uses (see
//! tests/kernel_emu.rs for the other kernels and what the emulator checks).
//!
//! Outputs are poisoned with NaN first, so an element a kernel fails to write fails.

mod common;

use common::emu::*;
use common::kernel_cases::*;
use tandem::device::backend::QkvLayout;

fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap()
}

/// Which attention kernel a step runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum AttnPath {
    /// paged_attention.cu: any step.
    General,
    /// paged_attention_decode.cu over this many context splits (merged when more than one):
    /// pure decode steps only.
    Decode(u32),
    /// paged_attention_decode_tc.cu (tensor cores; bf16, head_dim 64 or 128, GQA groups up to
    /// 8, block sizes a multiple of 16) over this many splits, merged as `Decode`'s.
    DecodeTc(u32),
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
    let case = AttentionCase::new(layout, block_size, window, q_lens, ctx_lens, seed, &|v| {
        dt.round(v)
    });
    let (step, params, want) = (&case.step, &case.params, &case.want);
    let rows = step.num_tokens();
    let (qd, kd, vd) = (
        Buf::new(dt, &case.qkv),
        Buf::new(dt, &case.k_cache),
        Buf::new(dt, &case.v_cache),
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
            // As device/cuda/attention.rs launches it: the general kernel's arguments and the
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
        AttnPath::Decode(splits) | AttnPath::DecodeTc(splits) => {
            assert_eq!(rows, seqs, "the decode kernel takes one row per sequence");
            let name = if let AttnPath::DecodeTc(_) = path {
                assert_eq!(dt, Dt::Bf16, "the tensor-core decode kernel is bf16 only");
                format!("paged_attention_decode_tc_bf16_d{}", layout.head_dim)
            } else {
                // The instance the backend picks (device/cuda/kernels.rs DECODE_SETS): the
                // smallest width of 64, 128, 256 that holds head_dim, the group's heads per
                // warp rounded up to a power of two, at most 8 at width 128, else 4.
                let width = [64, 128, 256]
                    .into_iter()
                    .find(|&w| layout.head_dim <= w)
                    .unwrap();
                let group = layout.num_heads / layout.num_kv_heads;
                let hc = group
                    .next_power_of_two()
                    .min(if width == 128 { 8 } else { 4 });
                format!("paged_attention_decode_{}_d{width}_h{hc}", dt.name())
            };
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
        // Both round the softmax weights to bf16 for the P.V product.
        AttnPath::Prefill | AttnPath::DecodeTc(_) => PREFILL_TC_ATOL,
        _ => 2e-5,
    };
    check(dt, &what, &out.read(), want, atol, 1e-4);
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

/// Pure decode steps on the tensor-core decode kernel (bf16, head_dim 64 and 128, GQA groups 1
/// to 8): unsplit, split in 7 and in 2 (split edges off the 16-key tiles), blocks of 16 and 32,
/// contexts shorter than a tile, tile-aligned and not; sliding windows (the first key off a tile
/// edge).
#[test]
fn paged_attention_decode_tc() {
    let ctx = [1, 17, 600, 64, 65, 16, 15];
    let layouts = DECODE_LAYOUTS
        .iter()
        .copied()
        .chain([(16, 2, 64), (24, 4, 128)])
        .filter(|&(nh, nkv, hd)| (hd == 64 || hd == 128) && nh / nkv <= 8);
    for (i, (nh, nkv, hd)) in layouts.enumerate() {
        let layout = QkvLayout {
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
        };
        for path in [
            AttnPath::DecodeTc(1),
            AttnPath::DecodeTc(7),
            AttnPath::DecodeTc(2),
        ] {
            for block_size in [16, 32] {
                let q = [1; 7];
                check_attention(
                    Dt::Bf16,
                    path,
                    layout,
                    block_size,
                    None,
                    &q,
                    &ctx,
                    90 + i as u64,
                );
            }
        }
    }
    let layout = QkvLayout {
        num_heads: 8,
        num_kv_heads: 2,
        head_dim: 128,
    };
    for path in [AttnPath::DecodeTc(1), AttnPath::DecodeTc(5)] {
        for window in [1, 7, 64, 1000] {
            let (q, c) = ([1; 4], [1, 17, 600, 1000]);
            check_attention(Dt::Bf16, path, layout, 16, Some(window), &q, &c, 81);
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
