//! The block kernels against the dequantise-then-f32 product, and against each other.
//!
//! Tolerance: a product here differs from the f32 product of the dequantised weights only by the
//! activation quantisation, at most half a step (`max|x_block| / 254`) per element, so output
//! `(t, r)` may be off by `Σ_j |w[r, j]| · max|x[t, block(j)]| / 254`; on top of that, f32
//! rounding of at most `1e-5 · Σ_j |w[r, j] · x[t, j]|` (a few ulps per block, summed). The
//! portable and AVX2 kernels compute the same integer sums and may only differ by the second
//! term.

use super::activations::{QK32, QKK};
use super::isa::{available_isas, Isa};
use super::kernels::{kernel, Kernel};
use super::reference::matmul_quant_reference;
use super::*;
use crate::device::quant::{quantize, random_blocks, GgmlType};

/// Deterministic values in about [-2, 2] with varying magnitude per block.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|i| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            u * 4.0 * (1.0 + ((i / 32) % 3) as f32) / 3.0
        })
        .collect()
}

/// A `[n, k]` matrix of `dtype` with its dequantised f32 rows.
fn matrix(dtype: GgmlType, n: usize, k: usize, seed: u64) -> (QuantMatrix, Vec<f32>) {
    let data = if GgmlType::QUANTISABLE.contains(&dtype) {
        quantize(dtype, &values(n * k, seed)).unwrap()
    } else {
        random_blocks(dtype, n * k / dtype.block_size(), seed)
    };
    let w = QuantMatrix::new(dtype, data, n, k).unwrap();
    let f = w.to_f32().unwrap();
    (w, f)
}

/// The activation block size `dtype`'s kernel quantises `x` in (1 for the float path).
fn activation_block(isa: Isa, dtype: GgmlType) -> usize {
    match kernel(isa, dtype) {
        Kernel::Blocks32(..) => QK32,
        Kernel::BlocksK(..) => QKK,
        Kernel::Float => 1,
    }
}

/// Checks `got` against the exact product of `x` and the dequantised rows `wf` within the bound
/// of the module comment; `block[r]` is row r's activation block size.
#[allow(clippy::too_many_arguments)]
fn check(
    what: &str,
    got: &[f32],
    x: &[f32],
    wf: &[f32],
    bias: Option<&[f32]>,
    block: &[usize],
    m: usize,
    k: usize,
) {
    let n = wf.len() / k;
    for t in 0..m {
        let xt = &x[t * k..(t + 1) * k];
        for r in 0..n {
            let wr = &wf[r * k..(r + 1) * k];
            let exact: f64 = xt
                .iter()
                .zip(wr)
                .map(|(a, b)| f64::from(a * b))
                .sum::<f64>()
                + f64::from(bias.map_or(0.0, |b| b[r]));
            let abs: f32 = xt.iter().zip(wr).map(|(a, b)| (a * b).abs()).sum();
            let quant: f32 = if block[r] == 1 {
                0.0
            } else {
                wr.iter()
                    .enumerate()
                    .map(|(j, w)| {
                        let blk = &xt[j / block[r] * block[r]..][..block[r]];
                        w.abs() * blk.iter().fold(0f32, |a, v| a.max(v.abs())) / 254.0
                    })
                    .sum()
            };
            let tol = quant + 1e-5 * abs + 1e-6;
            let g = got[t * n + r];
            assert!(
                (f64::from(g) - exact).abs() <= f64::from(tol),
                "{what}: out[{t}, {r}] = {g}, exact {exact}, tolerance {tol}"
            );
        }
    }
}

/// Types whose rows may be any multiple of 32 long.
const TYPES_32: [GgmlType; 9] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
];

/// Types of 256-element super-blocks.
const TYPES_256: [GgmlType; 6] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
];

/// Every type with the row lengths it allows (a non-multiple of 256 for the 32-element ones).
fn types_and_lengths() -> Vec<(GgmlType, usize)> {
    let mut v: Vec<(GgmlType, usize)> = TYPES_32
        .iter()
        .flat_map(|&t| [32, 96, 576].map(|k| (t, k)))
        .collect();
    v.extend(TYPES_256.iter().flat_map(|&t| [256, 768].map(|k| (t, k))));
    v
}

#[test]
fn every_type_and_shape_matches_the_f32_product() {
    let n = 37; // not a multiple of CHUNK_ROWS
    for isa in available_isas() {
        for (dtype, k) in types_and_lengths() {
            {
                let (w, wf) = matrix(dtype, n, k, k as u64);
                let block = vec![activation_block(isa, dtype); n];
                for m in [1, 3, 17, 64] {
                    let x = values(m * k, 7 + m as u64);
                    let mut got = vec![f32::NAN; m * n];
                    matmul_quant_on(isa, Path::Blocks, &x, &w, None, m, &mut got).unwrap();
                    let what = format!("{isa:?} {dtype:?} k={k} m={m}");
                    check(&what, &got, &x, &wf, None, &block, m, k);
                    // The dequantise-then-GEMM path, forced.
                    matmul_quant_on(isa, Path::Float, &x, &w, None, m, &mut got).unwrap();
                    check(
                        &format!("{what} float"),
                        &got,
                        &x,
                        &wf,
                        None,
                        &[1; 37],
                        m,
                        k,
                    );
                }
            }
        }
    }
}

#[test]
fn portable_and_simd_kernels_agree() {
    let isas = available_isas();
    let (n, k, m) = (40, 1024, 5);
    let x = values(m * k, 3);
    for dtype in TYPES_32.into_iter().chain(TYPES_256) {
        let (w, wf) = matrix(dtype, n, k, 11);
        let results: Vec<Vec<f32>> = isas
            .iter()
            .map(|&isa| {
                let mut out = vec![0.0; m * n];
                matmul_quant_on(isa, Path::Blocks, &x, &w, None, m, &mut out).unwrap();
                out
            })
            .collect();
        for other in &results[1..] {
            for (i, (a, b)) in results[0].iter().zip(other).enumerate() {
                let (t, r) = (i / n, i % n);
                let abs: f32 = (0..k).map(|j| (x[t * k + j] * wf[r * k + j]).abs()).sum();
                assert!(
                    (a - b).abs() <= 1e-5 * abs,
                    "{dtype:?} out[{t}, {r}]: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn stacked_types_bias_and_the_reference_agree() {
    let k = 64;
    let (a, fa) = matrix(GgmlType::Q8_0, 20, k, 1);
    let (b, fb) = matrix(GgmlType::F16, 3, k, 2);
    let (c, fc) = matrix(GgmlType::Q4_1, 18, k, 3);
    let w = QuantMatrix::stack(vec![a, b, c]).unwrap();
    let wf = [fa, fb, fc].concat();
    let n = w.n();
    let bias: Vec<f32> = (0..n).map(|i| i as f32 / 7.0 - 2.0).collect();
    let isa = detected_isa();
    let mut block = vec![activation_block(isa, GgmlType::Q8_0); 20];
    block.extend([1; 3]);
    block.extend(vec![activation_block(isa, GgmlType::Q4_1); 18]);
    // 64 tokens: the measured rule sends the 32-element types down the float path.
    for m in [1, 4, 64] {
        let x = values(m * k, 9);
        let mut got = vec![0.0; m * n];
        matmul_quant(&x, &w, Some(&bias), m, &mut got).unwrap();
        check("stacked", &got, &x, &wf, Some(&bias), &block, m, k);
        let mut slow = vec![0.0; m * n];
        matmul_quant_reference(&x, &w, Some(&bias), m, &mut slow).unwrap();
        let fake_block = vec![1; n];
        check("reference", &slow, &x, &wf, Some(&bias), &fake_block, m, k);
    }
}

#[test]
fn bad_sizes_are_errors() {
    let (w, _) = matrix(GgmlType::Q4_1, 8, 64, 1);
    let x = values(2 * 64, 1);
    let mut out = vec![0.0; 16];
    assert!(matmul_quant(&x[..100], &w, None, 2, &mut out).is_err());
    assert!(matmul_quant(&x, &w, None, 2, &mut out[..15]).is_err());
    let e = matmul_quant(&x, &w, Some(&[0.0; 7]), 2, &mut out).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    // No tokens: nothing to do, nothing written.
    matmul_quant(&[], &w, None, 0, &mut []).unwrap();
}

/// The types with tile kernels on some instruction set, with row lengths to try them on.
fn tiled_types() -> Vec<(GgmlType, [usize; 3])> {
    let mut v: Vec<(GgmlType, [usize; 3])> = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
    ]
    .into_iter()
    .map(|t| (t, [32, 96, 576]))
    .collect();
    v.extend([GgmlType::Q4_K, GgmlType::Q6_K].map(|t| (t, [256, 768, 1536])));
    v
}

/// The rows × tokens tiles, where this CPU has them, on shapes that leave rows and tokens over
/// (rows per task not a multiple of the tile, tokens not a multiple of the tile, one token), for
/// several row lengths: against the f32 product, the one-row kernels and the portable ones.
#[test]
fn tiled_kernels_match_on_odd_shapes() {
    for (dtype, ks) in tiled_types() {
        for k in ks {
            for n in [1, 3, 37] {
                let (w, wf) = matrix(dtype, n, k, (n * k) as u64);
                for m in [1, 7, 8, 9, 17, 33] {
                    let x = values(m * k, m as u64);
                    let abs: Vec<f32> = (0..m * n)
                        .map(|i| {
                            let (t, r) = (i / n, i % n);
                            (0..k).map(|j| (x[t * k + j] * wf[r * k + j]).abs()).sum()
                        })
                        .collect();
                    let run = |isa: Isa, path: Path| {
                        let mut out = vec![f32::NAN; m * n];
                        matmul_quant_on(isa, path, &x, &w, None, m, &mut out).unwrap();
                        out
                    };
                    let portable = run(Isa::Portable, Path::Blocks);
                    for isa in available_isas() {
                        let what = format!("{isa:?} {dtype:?} n={n} k={k} m={m}");
                        let block = vec![activation_block(isa, dtype); n];
                        let tiled = run(isa, Path::Blocks);
                        check(&what, &tiled, &x, &wf, None, &block, m, k);
                        let untiled = run(isa, Path::BlocksUntiled);
                        for (i, ((a, b), c)) in
                            tiled.iter().zip(&untiled).zip(&portable).enumerate()
                        {
                            let tol = 1e-5 * abs[i] + 1e-6;
                            assert!(
                                (a - b).abs() <= tol && (a - c).abs() <= tol,
                                "{what} out[{}, {}]: tiled {a}, untiled {b}, portable {c}",
                                i / n,
                                i % n
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The tile kernels called directly (so a driver that never reached them could not pass), every
/// entry against the portable one-row kernel, rows not adjacent in memory (`row_bytes` wider
/// than a row) as the tile's contract allows.
#[test]
fn tile_kernels_match_the_portable_dot() {
    use super::activations::{Q8KRows, Q8Rows};
    use super::kernels::{TILE_ROWS, TILE_TOKENS};
    let mut tiles_seen = 0;
    for isa in available_isas() {
        for (dtype, ks) in tiled_types() {
            for k in ks {
                // Two rows per tile row: the tile reads every other row.
                let (w, wf) = matrix(dtype, 2 * TILE_ROWS, k, k as u64 + 5);
                let bytes = &w.segments()[0].data;
                let row_bytes = bytes.len() / (2 * TILE_ROWS);
                let x = values(TILE_TOKENS * k, 17);
                // (tile result, portable result per tile row and token), for either block form:
                // `$rows` quantises the activations the way that form's kernels read them.
                macro_rules! tile_and_portable {
                    ($rows:ident, $tile:expr, $dot:expr) => {{
                        let q = $rows::new(isa, &x, TILE_TOKENS, k);
                        let got = $tile(bytes, 2 * row_bytes, &std::array::from_fn(|t| q.row(t)));
                        let want: Vec<Vec<f32>> = (0..TILE_ROWS)
                            .map(|r| {
                                let wr = &bytes[2 * r * row_bytes..(2 * r + 1) * row_bytes];
                                (0..TILE_TOKENS).map(|t| $dot(wr, q.row(t))).collect()
                            })
                            .collect();
                        (got.to_vec(), want)
                    }};
                }
                let (got, want): (Vec<[f32; TILE_TOKENS]>, Vec<Vec<f32>>) =
                    match (kernel(isa, dtype), kernel(Isa::Portable, dtype)) {
                        (Kernel::BlocksK(_, _, Some(tile)), Kernel::BlocksK(dot, ..)) => {
                            tile_and_portable!(Q8KRows, tile, dot)
                        }
                        (Kernel::Blocks32(_, _, Some(tile), _), Kernel::Blocks32(dot, ..)) => {
                            tile_and_portable!(Q8Rows, tile, dot)
                        }
                        _ => continue,
                    };
                tiles_seen += 1;
                for (r, (vals, want)) in got.iter().zip(&want).enumerate() {
                    for (t, (v, want)) in vals.iter().zip(want).enumerate() {
                        let abs: f32 = (0..k)
                            .map(|j| (x[t * k + j] * wf[2 * r * k + j]).abs())
                            .sum();
                        assert!(
                            (v - want).abs() <= 1e-5 * abs + 1e-6,
                            "{isa:?} {dtype:?} k={k} tile[{r}][{t}] = {v}, portable {want}"
                        );
                    }
                }
            }
        }
    }
    // Every type listed has a tile on AVX2 and above (VNNI's own or AVX2's); portable has none.
    let expected = 21 * (available_isas().len() - 1);
    assert_eq!(tiles_seen, expected);
}

/// The one-token kernels over a run of rows, called directly: odd and even numbers of rows (the
/// kernel takes rows in pairs), rows not adjacent in memory, every result against the portable
/// one-row kernel, and no write past the rows asked for.
#[test]
fn one_token_row_kernels_match_the_portable_dot() {
    use super::activations::Q8Rows;
    let mut kernels_seen = 0;
    for isa in available_isas() {
        for dtype in TYPES_32 {
            let (Kernel::Blocks32(_, _, _, Some(rows_kernel)), Kernel::Blocks32(dot, ..)) =
                (kernel(isa, dtype), kernel(Isa::Portable, dtype))
            else {
                continue;
            };
            kernels_seen += 1;
            for k in [32, 96, 576] {
                let stored = 2 * 17;
                let (w, wf) = matrix(dtype, stored, k, k as u64 + 3);
                let bytes = &w.segments()[0].data;
                let row_bytes = bytes.len() / stored;
                let x = values(k, 29);
                let q = Q8Rows::new(isa, &x, 1, k);
                for n in [1, 2, 3, 5, 16, 17] {
                    // Every other stored row: `row_bytes` apart is twice a row.
                    let mut out = vec![f32::NAN; n + 1];
                    rows_kernel(bytes, 2 * row_bytes, q.row(0), &mut out[..n]);
                    assert!(
                        out[n].is_nan(),
                        "{dtype:?} k={k} n={n}: wrote past the rows"
                    );
                    for (r, v) in out[..n].iter().enumerate() {
                        let wr = &bytes[2 * r * row_bytes..(2 * r + 1) * row_bytes];
                        let want = dot(wr, q.row(0));
                        let abs: f32 = (0..k).map(|j| (x[j] * wf[2 * r * k + j]).abs()).sum();
                        assert!(
                            (v - want).abs() <= 1e-5 * abs + 1e-6,
                            "{isa:?} {dtype:?} k={k} n={n} row {r}: {v}, portable {want}"
                        );
                    }
                }
            }
        }
    }
    // The five 32-element types on every SIMD level (AVX-512 VNNI uses AVX2's); the portable
    // set has none.
    assert_eq!(kernels_seen, 5 * (available_isas().len() - 1));
}
