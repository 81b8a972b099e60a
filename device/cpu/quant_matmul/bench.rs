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
        let Kernel::Blocks32(dot, _) = kernel(detected_isa(), dtype) else {
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
