//! The CUDA backend's paged attention against the CPU reference attention, on seeded random
//! steps over scattered cache blocks: pure decode (the split-context decode kernel, its split
//! count chosen, pinned and off, scalar and on the tensor cores), prefill and chunked prefill
//! beside decode rows (the tensor-core prefill kernel and the general one), and sliding windows.
//! The other kernels are in tests/cuda_parity.rs.
//!
//! Built only with `--features cuda`. Without a CUDA driver they run on the emulated device when
//! built with `kernel-emu` too (device/cuda/emulated.rs; the test command does), and a device that
//! fails to open fails them; in a plain `cuda` build without a GPU every test prints
//! `skipped: <name>: no CUDA device (<reason>)` and returns: never a silent pass.
//! Every test runs once per storage dtype (f32, bf16). Inputs are rounded to the dtype on the
//! host first, so the CPU reference sees exactly the values the device holds; outputs are
//! poisoned with NaN before each run, so an element the kernel fails to write fails the
//! comparison; the tolerance is `atol + |ref| * rtol`, sized per dtype by [`tol`], with
//! [`PREFILL_TC_ATOL`] for the tensor-core kernels (they round the softmax weights to bf16).

mod common;

use common::gpu::*;
use tandem::device::backend::{Backend, QkvLayout};
use tandem::device::cuda::{CudaBackend, CudaOptions, DType, DecodePath};

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

/// A step that is not pure decode, on the general kernel (`general`: `b` was made with
/// [`CudaOptions::prefill_general`]) or on the kernel the backend picks: the tensor-core prefill
/// kernel for bf16 and head_dim a multiple of 16 up to 128, which rounds P to bf16 and gets
/// [`PREFILL_TC_ATOL`].
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
    let what = format!("{what} ({kernel})");
    check_attention_atol(
        b, &what, layout, block_size, window, q_lens, ctx_lens, seed, atol,
    );
}

/// Bf16 backends run the steps that are not pure decode on both kernels; f32 has only the
/// general one. Each with a backend pinned to it (`true`: the general kernel).
fn prefill_paths(b: &CudaBackend) -> Vec<(bool, CudaBackend)> {
    let generals: &[bool] = match b.dtype() {
        DType::Bf16 => &[false, true],
        DType::F32 => &[false],
    };
    generals
        .iter()
        .map(|&general| {
            let options = CudaOptions {
                prefill_general: general,
                ..CudaOptions::default()
            };
            (general, with_options(b, options))
        })
        .collect()
}

/// A backend like `b` with its decode attention pinned to `path`.
fn decode_backend(b: &CudaBackend, path: DecodePath) -> CudaBackend {
    let options = CudaOptions {
        decode_path: path,
        ..CudaOptions::default()
    };
    with_options(b, options)
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
        let paths: Vec<(DecodePath, CudaBackend)> = [
            DecodePath::Auto,
            DecodePath::Splits(1),
            DecodePath::Splits(7),
            DecodePath::General,
        ]
        .into_iter()
        .map(|path| (path, decode_backend(&b, path)))
        .collect();
        for (i, &(nh, nkv, hd)) in DECODE_LAYOUTS.iter().enumerate() {
            let layout = QkvLayout {
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: hd,
            };
            for (path, pinned) in &paths {
                for block_size in [16, 5] {
                    check_attention(
                        pinned,
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
            // One long sequence alone: Auto (the default) splits it as far as the kernel allows.
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
            let pinned = decode_backend(&b, path);
            for window in [1, 7, 64, 1000, 6000] {
                check_attention(
                    &pinned,
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
    }
}

#[test]
fn paged_attention_prefill() {
    for b in gpus("paged_attention_prefill") {
        for (general, b) in prefill_paths(&b) {
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
        for (general, b) in prefill_paths(&b) {
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
