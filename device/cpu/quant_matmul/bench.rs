//! Timing of the block kernels on the default model's decode shapes against the f32 packed path.
//! Run by hand:
//! `cargo test --release --lib quant_matmul::bench -- --ignored --nocapture`

use std::time::Instant;

use super::isa::detected_isa;
use super::*;
use crate::device::cpu::{matmul_packed, PackedWeight};
use crate::device::quant::{quantize, random_blocks, GgmlType};

/// Seconds per call of `f`: the best of 5 rounds of enough calls to take ~50 ms, because the
/// machine is shared and the best round is the one least disturbed.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed().as_secs_f64() < 0.01 {
        f();
        calls += 1;
    }
    let reps = ((0.05 / (start.elapsed().as_secs_f64() / calls as f64)) as usize).max(1);
    (0..5)
        .map(|_| {
            let s = Instant::now();
            (0..reps).for_each(|_| f());
            s.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn weights(dtype: GgmlType, n: usize, k: usize) -> QuantMatrix {
    let data = if GgmlType::QUANTISABLE.contains(&dtype) {
        let v: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0)
            .collect();
        quantize(dtype, &v).unwrap()
    } else {
        random_blocks(dtype, n * k / dtype.block_size(), 1)
    };
    QuantMatrix::new(dtype, data, n, k).unwrap()
}

/// One line: shape, type, m, block path time and weight GB/s, f32 packed time and GB/s.
fn row(label: &str, dtype: GgmlType, w: &QuantMatrix, m: usize, path: Path) {
    let (n, k) = (w.n(), w.k());
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
        .collect();
    let mut out = vec![0.0; m * n];
    let isa = detected_isa();
    let tq = time(|| matmul_quant_on(isa, path, &x, w, None, m, &mut out).unwrap());
    let packed = PackedWeight::from_rows(&w.to_f32().unwrap(), n, k).unwrap();
    let tf = time(|| matmul_packed(&x, &packed, None, m, &mut out).unwrap());
    let gb = |bytes: usize, t: f64| bytes as f64 / t / 1e9;
    println!(
        "{label:>12} {:>6} m={m:<3} blocks {:>8.1} µs {:>6.1} GB/s | f32 packed {:>8.1} µs {:>6.1} GB/s | {:.2}x",
        format!("{dtype:?}"),
        tq * 1e6,
        gb(w.bytes(), tq),
        tf * 1e6,
        gb(n * k * 4, tf),
        tf / tq
    );
}

#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn decode_shapes() {
    println!(
        "{:?}, {} threads",
        detected_isa(),
        rayon::current_num_threads()
    );
    let shapes = [
        ("q|o 576x576", 576, 576),
        ("k/v 192x576", 192, 576),
        ("g|u 3072x576", 3072, 576),
        ("down 576x1536", 576, 1536),
        ("lm 49152x576", 49152, 576),
    ];
    for (label, n, k) in shapes {
        let mut types = vec![GgmlType::Q4_1, GgmlType::Q8_0];
        if k % 256 == 0 {
            types.extend([GgmlType::Q4_K, GgmlType::Q6_K]);
        }
        for dtype in types {
            let w = weights(dtype, n, k);
            for m in [1, 32] {
                row(label, dtype, &w, m, Path::Measured);
            }
        }
    }
}

#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn prefill_crossover() {
    for (label, n, k) in [("g|u 3072x576", 3072, 576), ("down 576x1536", 576, 1536)] {
        for dtype in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K] {
            if k % dtype.block_size() != 0 {
                continue;
            }
            let w = weights(dtype, n, k);
            for m in [8, 16, 32, 64] {
                row(&format!("{label} blk"), dtype, &w, m, Path::Blocks);
                row(&format!("{label} flt"), dtype, &w, m, Path::Float);
            }
        }
    }
}

#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn one_row_kernels() {
    use super::activations::Q8Rows;
    use super::kernels::{kernel, Kernel};
    let k = 576;
    let x: Vec<f32> = (0..k)
        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
        .collect();
    let q = Q8Rows::new(detected_isa(), &x, 1, k);
    for dtype in [GgmlType::Q4_1, GgmlType::Q8_0] {
        let w = weights(dtype, 1, k);
        let bytes = &w.segments()[0].data;
        let Kernel::Blocks32(dot, ..) = kernel(detected_isa(), dtype) else {
            panic!()
        };
        let t = time(|| {
            std::hint::black_box(dot(std::hint::black_box(bytes), q.row(0)));
        });
        println!(
            "{dtype:?} one row k={k}: {:.1} ns, {:.2} ns/block",
            t * 1e9,
            t * 1e9 / 18.0
        );
    }
    let t = time(|| {
        std::hint::black_box(Q8Rows::new(detected_isa(), std::hint::black_box(&x), 1, k));
    });
    println!("quantise one row k={k}: {:.1} ns", t * 1e9);
}

/// Seconds per call of each of `fs`, measured in interleaved rounds (A B C, A B C, ...) so that
/// the machine's drift from minute to minute falls on all of them alike; the best round of each.
fn time_interleaved(fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let reps: Vec<usize> = fs
        .iter_mut()
        .map(|f| {
            f();
            let start = Instant::now();
            f();
            ((0.03 / start.elapsed().as_secs_f64()) as usize).max(1)
        })
        .collect();
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..7 {
        for ((f, &n), best) in fs.iter_mut().zip(&reps).zip(&mut best) {
            let s = Instant::now();
            (0..n).for_each(|_| f());
            *best = best.min(s.elapsed().as_secs_f64() / n as f64);
        }
    }
    best
}

/// The batched product: the one-row kernels, the tiles, the float path, and the f32 packed GEMM,
/// interleaved; with the multiply-adds per second and the weight bytes read per second of the
/// tiled path.
fn batched(shapes: &[(&str, usize, usize)], types: &[GgmlType], ms: &[usize]) {
    println!(
        "{:?}, {} threads",
        detected_isa(),
        rayon::current_num_threads()
    );
    let isa = detected_isa();
    for &(label, n, k) in shapes {
        for &dtype in types {
            let w = weights(dtype, n, k);
            let packed = PackedWeight::from_rows(&w.to_f32().unwrap(), n, k).unwrap();
            for &m in ms {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
                    .collect();
                let mut out = vec![0.0; m * n];
                let (x, w) = (&x, &w);
                let on = move |path| {
                    let mut out = vec![0.0; m * n];
                    move || matmul_quant_on(isa, path, x, w, None, m, &mut out).unwrap()
                };
                let (mut untiled, mut tiled, mut float) =
                    (on(Path::BlocksUntiled), on(Path::Blocks), on(Path::Float));
                let x32: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32).collect();
                let mut f32_packed = || matmul_packed(&x32, &packed, None, m, &mut out).unwrap();
                let t =
                    time_interleaved(&mut [&mut untiled, &mut tiled, &mut float, &mut f32_packed]);
                let macs = (m * n * k) as f64;
                println!(
                    "{label:>14} {:>5} m={m:<3} µs: 1-row {:>7.1} | tiled {:>7.1} ({:.2}x) | float {:>7.1} | f32 packed {:>7.1} || tiled {:>5.1} GMAC/s, weights {:>5.2} GB/s",
                    format!("{dtype:?}"),
                    t[0] * 1e6,
                    t[1] * 1e6,
                    t[0] / t[1],
                    t[2] * 1e6,
                    t[3] * 1e6,
                    macs / t[1] / 1e9,
                    w.bytes() as f64 / t[1] / 1e9,
                );
            }
        }
    }
}

#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn batched_k_quants() {
    batched(
        &[("down 576x1536", 576, 1536), ("1536x1536", 1536, 1536)],
        &[GgmlType::Q4_K, GgmlType::Q6_K],
        &[8, 16, 32],
    );
}

#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn batched_32_blocks() {
    batched(
        &[
            ("q|o 576x576", 576, 576),
            ("g|u 3072x576", 3072, 576),
            ("down 576x1536", 576, 1536),
        ],
        &[GgmlType::Q8_0, GgmlType::Q5_0],
        &[8, 16, 24, 32, 48, 64],
    );
}

#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn batched_lm_head() {
    batched(&[("lm 49152x576", 49152, 576)], &[GgmlType::Q8_0], &[8, 32]);
}

/// One thread, kernels only (no activation quantisation, no scheduling): nanoseconds per weight
/// row, token and super-block of the one-row four-token kernel and of tiles of several shapes,
/// to choose the tile.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn tile_shapes() {
    use super::activations::{Q8KRow, Q8KRows};
    use super::avx2_tile::{q4_k_tile, q6_k_tile};
    use super::kernels::{kernel, Kernel};
    if detected_isa() < super::isa::Isa::Avx2 {
        return;
    }
    let (n, k, m) = (64, 1536, 32);
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
        .collect();
    let q = Q8KRows::new(detected_isa(), &x, m, k);
    let rows: Vec<Q8KRow<'_>> = (0..m).map(|t| q.row(t)).collect();
    let rows = &rows[..];
    for dtype in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let w = weights(dtype, n, k);
        let bytes = &w.segments()[0].data;
        let rb = bytes.len() / n;
        let Kernel::BlocksK(_, Some(dot4), _) = kernel(detected_isa(), dtype) else {
            panic!()
        };
        let mut x4 = || {
            for r in 0..n {
                for t in (0..m).step_by(4) {
                    std::hint::black_box(dot4(
                        &bytes[r * rb..][..rb],
                        rows[t..t + 4].try_into().unwrap(),
                    ));
                }
            }
        };
        macro_rules! tile {
            ($r:expr, $t:expr) => {
                move || {
                    for r in (0..n).step_by($r) {
                        for t in (0..m).step_by($t) {
                            let a: &[Q8KRow<'_>; $t] = rows[t..t + $t].try_into().unwrap();
                            // SAFETY: AVX2 detected above; `$r` rows from row r and `$t` tokens
                            // of k / 256 super-blocks each are in range.
                            std::hint::black_box(unsafe {
                                if dtype == GgmlType::Q4_K {
                                    q4_k_tile::<$r, $t>(&bytes[r * rb..], rb, a)[0][0]
                                } else {
                                    q6_k_tile::<$r, $t>(&bytes[r * rb..], rb, a)[0][0]
                                }
                            });
                        }
                    }
                }
            };
        }
        let (mut a, mut b, mut c, mut d, mut e) = (
            tile!(1, 4),
            tile!(1, 8),
            tile!(2, 4),
            tile!(2, 8),
            tile!(4, 8),
        );
        let t = time_interleaved(&mut [&mut x4, &mut a, &mut b, &mut c, &mut d, &mut e]);
        let per = (n * m * k / 256) as f64;
        let names = ["1x4 (old)", "1x4", "1x8", "2x4", "2x8", "4x8"];
        let line: Vec<String> = names
            .iter()
            .zip(&t)
            .map(|(name, s)| format!("{name} {:.2}", s * 1e9 / per))
            .collect();
        println!(
            "{dtype:?} ns per row·token·super-block: {}",
            line.join(" | ")
        );
    }
}

/// AVX2 against AVX-512 VNNI on the default model's shapes, interleaved A/B, along the measured
/// path (what serving runs: the float path where it is faster) and the block path.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore = "a measurement: run by hand with --nocapture"]
fn avx2_vs_vnni() {
    use super::isa::Isa;
    if detected_isa() < Isa::Avx512Vnni {
        println!("no AVX-512 VNNI on this CPU");
        return;
    }
    println!("{} threads", rayon::current_num_threads());
    let shapes = [
        ("q|o 576x576", 576, 576),
        ("g|u 3072x576", 3072, 576),
        ("down 576x1536", 576, 1536),
        ("lm 49152x576", 49152, 576),
    ];
    for (label, n, k) in shapes {
        for dtype in [GgmlType::Q8_0] {
            let w = weights(dtype, n, k);
            for m in [1, 8, 32] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
                    .collect();
                let (x, w) = (&x, &w);
                let on = move |isa, path| {
                    let mut out = vec![0.0; m * n];
                    move || matmul_quant_on(isa, path, x, w, None, m, &mut out).unwrap()
                };
                let (mut avx2, mut vnni) = (
                    on(Isa::Avx2, Path::Blocks),
                    on(Isa::Avx512Vnni, Path::Blocks),
                );
                let t = time_interleaved(&mut [&mut avx2, &mut vnni]);
                println!(
                    "{label:>14} {:>5} m={m:<3} blocks µs: avx2 {:>8.1} | vnni {:>8.1} | {:.2}x",
                    format!("{dtype:?}"),
                    t[0] * 1e6,
                    t[1] * 1e6,
                    t[0] / t[1],
                );
            }
        }
    }
}
