//! The CPU matrix products at the default model's decode shapes (SmolLM2-135M: 30 layers of
//! q|k|v 576→960, o 576→576, gate|up 576→3072, down 1536→576, plus the 576→49152 lm_head),
//! with the HF row-major weights (`matmul_transposed`: the gemm crate packs them every call)
//! and with the load-time packed layout (`matmul_packed`), and the machine's peak: one
//! 1024³ product. This is the compute roofline of `benches/RESULTS.md`.
//!
//! Run: `cargo bench --bench cpu_gemm`. Prints wall and process CPU time (the best of 5 for
//! each): on a shared machine the CPU time is the steadier figure.

use std::time::Instant;

use tandem::device::cpu::{matmul_packed, matmul_transposed, PackedWeight};

const LAYERS: usize = 30;
/// (k, n) of each layer's products.
const SHAPES: [(usize, usize); 4] = [(576, 960), (576, 576), (576, 3072), (1536, 576)];
const LM_HEAD: (usize, usize) = (576, 49152);

fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Deterministic values in [-0.5, 0.5): never zeros, which would flatter nothing here but
/// keep the habit.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Best (wall, cpu) seconds of 5 runs of `f`.
fn best_of_5(mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut best = (f64::MAX, 0.0);
    for _ in 0..5 {
        let (t, c) = (Instant::now(), cpu_seconds());
        f();
        let wall = t.elapsed().as_secs_f64();
        if wall < best.0 {
            best = (wall, cpu_seconds() - c);
        }
    }
    best
}

fn report(what: &str, flop: f64, (wall, cpu): (f64, f64)) {
    println!(
        "{what:<44} wall {:>8.1} ms  cpu {:>8.1} ms  {:>6.1} GFLOP/s (wall)",
        wall * 1e3,
        cpu * 1e3,
        flop / wall / 1e9
    );
}

fn main() {
    println!("threads: {}", rayon::current_num_threads());
    let mut weights: Vec<(usize, usize, Vec<f32>)> = Vec::new();
    for l in 0..LAYERS {
        for (i, &(k, n)) in SHAPES.iter().enumerate() {
            weights.push((k, n, values(n * k, (l * 4 + i) as u64)));
        }
    }
    weights.push((LM_HEAD.0, LM_HEAD.1, values(LM_HEAD.0 * LM_HEAD.1, 999)));
    let packed: Vec<PackedWeight> = weights
        .iter()
        .map(|(k, n, w)| PackedWeight::from_rows(w, *n, *k).unwrap())
        .collect();
    let params: usize = weights.iter().map(|(k, n, _)| k * n).sum();
    let x = values(256 * 1536, 7);
    let mut out = vec![0.0f32; 256 * 49152];

    for m in [1usize, 8, 32, 64, 256] {
        let flop = 2.0 * (m * params) as f64;
        let row_major = best_of_5(|| {
            for (k, n, w) in &weights {
                matmul_transposed(&x[..m * k], w, None, m, *k, *n, &mut out).unwrap();
            }
        });
        report(
            &format!("{m:>3} tokens, row-major weights"),
            flop,
            row_major,
        );
        let packed_time = best_of_5(|| {
            for w in &packed {
                matmul_packed(&x[..m * w.k()], w, None, m, &mut out).unwrap();
            }
        });
        report(&format!("{m:>3} tokens, packed weights"), flop, packed_time);
    }

    let n = 1024;
    let (a, b) = (values(n * n, 1), values(n * n, 2));
    let mut c = vec![0.0f32; n * n];
    let peak = best_of_5(|| matmul_transposed(&a, &b, None, n, n, n, &mut c).unwrap());
    report("peak: 1024^3 product", 2.0 * (n * n * n) as f64, peak);
}
