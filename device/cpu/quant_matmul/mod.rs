//! `out = x · wᵀ` with `w` kept in its GGML blocks ([`QuantMatrix`]), computed on the blocks.
//!
//! Each activation row is quantised once per product to int8 blocks ([`activations`]); each
//! weight row then meets it in an integer dot product per block, scaled by the two blocks'
//! scales ([`portable`], [`avx2`]). The weights are read in their packed size (a Q4_1 row is
//! 5/32 of its f32 size), which is what bounds a decode step. Types without a block kernel go
//! through [`float_tile`]: rows dequantised to f32, then a GEMM.
//!
//! Batches go through tiles of weight rows × eight tokens where the instruction set has them
//! (`avx2_tile` for the K-quants, `avx2`'s group loop for the 32-element types): a block's codes
//! and scales are unpacked once for the eight tokens. One token goes through a kernel that takes
//! a task's whole run of rows in one call, two rows at a time.
//!
//! Work splits over weight rows: each task takes a chunk of rows of one segment (one type) and
//! computes them for every token, so a row's bytes are fetched from memory once and reused from
//! cache for all `m` tokens.

mod activations;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx2_tile;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod bench;
mod float_tile;
mod isa;
mod kernels;
mod portable;
mod portable_k;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

use anyhow::Result;
use rayon::prelude::*;

use super::gemm::{add_bias, check_operands};
use crate::device::quant::matrix::QuantMatrix;
use activations::{Q8KRows, Q8Rows};
use isa::{detected_isa, Isa};
use kernels::{kernel, Kernel, TILE_ROWS, TILE_TOKENS};

/// Weight rows per task: enough tasks to balance threads even for a 192-row k/v projection,
/// few enough that a 49152-row lm_head does not drown in scheduling.
const CHUNK_ROWS: usize = 16;

/// Weight rows per task on the float path: a GEMM against 16 rows spends more on packing and
/// edges than on products, so the float path dequantises bigger tiles.
const FLOAT_CHUNK_ROWS: usize = 96;

/// `out[m, n] = x[m, k] · wᵀ (+ bias)` for a `[n, k]` block-quantised `w`.
pub fn matmul_quant(
    x: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    matmul_quant_on(detected_isa(), Path::Measured, x, w, bias, m, out)
}

/// Which way segments with a block kernel go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The faster one for the type and token count ([`float_tile::prefer_float`]).
    Measured,
    /// Always the block kernel (tests, measurements).
    #[cfg(test)]
    Blocks,
    /// The block kernel without its rows × tokens tile (one row against four tokens at most):
    /// what the tile is measured and checked against.
    #[cfg(test)]
    BlocksUntiled,
    /// Always dequantise-then-GEMM (tests, measurements).
    #[cfg(test)]
    Float,
}

/// [`matmul_quant`] with the kernels of `isa` (one this CPU runs) along `path`.
fn matmul_quant_on(
    isa: Isa,
    path: Path,
    x: &[f32],
    w: &QuantMatrix,
    bias: Option<&[f32]>,
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    let (n, k) = (w.n(), w.k());
    check_operands(x, bias, m, k, n, out)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let kernels: Vec<Kernel> = w
        .segments()
        .iter()
        .map(|s| {
            let float = match path {
                Path::Measured => float_tile::prefer_float(s.dtype, m),
                #[cfg(test)]
                Path::Blocks | Path::BlocksUntiled => false,
                #[cfg(test)]
                Path::Float => true,
            };
            match kernel(isa, s.dtype) {
                _ if float => Kernel::Float,
                #[cfg(test)]
                Kernel::Blocks32(dot, dot4, ..) if path == Path::BlocksUntiled => {
                    Kernel::Blocks32(dot, dot4, None, None)
                }
                #[cfg(test)]
                Kernel::BlocksK(dot, dot4, _) if path == Path::BlocksUntiled => {
                    Kernel::BlocksK(dot, dot4, None)
                }
                kn => kn,
            }
        })
        .collect();
    // A segment's type fixes k as a multiple of its block size (QuantMatrix checks), so a
    // kernel of 32- or 256-element blocks implies k is a multiple of that.
    let q32 = kernels
        .iter()
        .any(|kn| matches!(kn, Kernel::Blocks32(..)))
        .then(|| Q8Rows::new(isa, x, m, k));
    let qk = kernels
        .iter()
        .any(|kn| matches!(kn, Kernel::BlocksK(..)))
        .then(|| Q8KRows::new(isa, x, m, k));

    // Results as [n][m] (a row's m tokens together), so every task owns a contiguous slice;
    // for one token that is already the [m][n] layout of `out`.
    let mut transposed = if m == 1 { Vec::new() } else { vec![0.0; n * m] };
    let dst: &mut [f32] = if m == 1 {
        &mut out[..n]
    } else {
        &mut transposed
    };
    let mut tasks = Vec::with_capacity(n.div_ceil(CHUNK_ROWS) + kernels.len());
    let mut rest = dst;
    for (seg, kn) in w.segments().iter().zip(&kernels) {
        let row_bytes = seg.data.len() / seg.rows.max(1);
        let chunk = if matches!(kn, Kernel::Float) {
            FLOAT_CHUNK_ROWS
        } else {
            CHUNK_ROWS
        };
        for r0 in (0..seg.rows).step_by(chunk) {
            let rows = chunk.min(seg.rows - r0);
            let (mine, tail) = rest.split_at_mut(rows * m);
            rest = tail;
            let bytes = &seg.data[r0 * row_bytes..(r0 + rows) * row_bytes];
            tasks.push((seg.dtype, *kn, bytes, rows, mine));
        }
    }
    tasks
        .into_par_iter()
        .try_for_each(|(dtype, kn, bytes, rows, dst)| -> Result<()> {
            let row_bytes = bytes.len() / rows;
            match kn {
                Kernel::Blocks32(dot, dot4, tile, one_token) => {
                    let q = q32.as_ref().expect("quantised for a Blocks32 kernel");
                    let kernels = RowKernels {
                        dot,
                        dot4,
                        tile,
                        one_token,
                    };
                    rows_times_tokens(bytes, row_bytes, m, dst, |t| q.row(t), kernels);
                }
                Kernel::BlocksK(dot, dot4, tile) => {
                    let q = qk.as_ref().expect("quantised for a BlocksK kernel");
                    let kernels = RowKernels {
                        dot,
                        dot4,
                        tile,
                        one_token: None,
                    };
                    rows_times_tokens(bytes, row_bytes, m, dst, |t| q.row(t), kernels);
                }
                Kernel::Float => float_tile::multiply(dtype, bytes, rows, k, x, m, dst)?,
            }
            Ok(())
        })?;

    if m > 1 {
        transpose_into(&transposed, m, n, out);
    }
    add_bias(out, bias, m, n);
    Ok(())
}

/// A kernel of one weight row against four activation rows.
type DotX4<A> = fn(&[u8], &[A; 4]) -> [f32; 4];

/// A kernel of [`TILE_ROWS`] weight rows (`row_bytes` apart) against [`TILE_TOKENS`] activation
/// rows.
type Tile<A> = fn(&[u8], usize, &[A; TILE_TOKENS]) -> [[f32; TILE_TOKENS]; TILE_ROWS];

/// Rows of weights (`row_bytes` apart) against one activation row, one result per row of `out`.
type OneToken<A> = fn(&[u8], usize, A, &mut [f32]);

/// The kernels of one weight type against activations of type `A`, widest first.
#[derive(Clone, Copy)]
struct RowKernels<A> {
    dot: fn(&[u8], A) -> f32,
    dot4: Option<DotX4<A>>,
    tile: Option<Tile<A>>,
    one_token: Option<OneToken<A>>,
}

/// Rows of `TRANSPOSE_ROWS` results per pass of [`transpose_into`]: one pass reads a
/// `TRANSPOSE_ROWS × m` block (in L1) and writes a cache line's worth of each token's row.
const TRANSPOSE_ROWS: usize = 16;

/// `out[t * n + r] = transposed[r * m + t]`, in blocks of rows: written one value at a time
/// down the rows, every store of a wide product (the lm_head's `n` is 49152) would land on its
/// own cache line and page.
fn transpose_into(transposed: &[f32], m: usize, n: usize, out: &mut [f32]) {
    for (b, block) in transposed.chunks(TRANSPOSE_ROWS * m).enumerate() {
        let r0 = b * TRANSPOSE_ROWS;
        let rows = block.len() / m;
        for (t, dst) in out.chunks_exact_mut(n).take(m).enumerate() {
            for (i, v) in dst[r0..r0 + rows].iter_mut().enumerate() {
                *v = block[i * m + t];
            }
        }
    }
}

/// `dst[r * m + t] = dot(row r, activation row t)` for the weight rows in `bytes`: whole tiles
/// of rows × tokens where there is a tile kernel, the tokens left over (and the rows left over)
/// four at a time, then one at a time.
fn rows_times_tokens<'a, A: Copy + 'a>(
    bytes: &[u8],
    row_bytes: usize,
    m: usize,
    dst: &mut [f32],
    act: impl Fn(usize) -> A,
    kernels: RowKernels<A>,
) {
    let rows = bytes.len() / row_bytes;
    if let Some(one_token) = kernels.one_token.filter(|_| m == 1) {
        one_token(bytes, row_bytes, act(0), &mut dst[..rows]);
        return;
    }
    let mut r0 = 0;
    if let Some(tile) = kernels.tile.filter(|_| m >= TILE_TOKENS) {
        let whole_tokens = m - m % TILE_TOKENS;
        let whole_rows = rows - rows % TILE_ROWS;
        // Tokens outside, rows inside: a group's activation rows are gathered once for all of
        // the task's rows (whose bytes stay in cache from one group to the next).
        for t in (0..whole_tokens).step_by(TILE_TOKENS) {
            let acts: [A; TILE_TOKENS] = std::array::from_fn(|i| act(t + i));
            for r0 in (0..whole_rows).step_by(TILE_ROWS) {
                let group = &bytes[r0 * row_bytes..(r0 + TILE_ROWS) * row_bytes];
                for (r, vals) in tile(group, row_bytes, &acts).iter().enumerate() {
                    let at = (r0 + r) * m + t;
                    dst[at..at + TILE_TOKENS].copy_from_slice(vals);
                }
            }
        }
        for (wr, o) in bytes[..whole_rows * row_bytes]
            .chunks_exact(row_bytes)
            .zip(dst.chunks_exact_mut(m))
        {
            row_times_tokens(wr, whole_tokens, o, &act, kernels);
        }
        r0 = whole_rows;
    }
    for (wr, o) in bytes[r0 * row_bytes..]
        .chunks_exact(row_bytes)
        .zip(dst[r0 * m..].chunks_exact_mut(m))
    {
        row_times_tokens(wr, 0, o, &act, kernels);
    }
}

/// `o[t] = dot(wr, activation row t)` for the tokens from `t0` to `o.len()`, four at a time where
/// there is a four-token kernel.
fn row_times_tokens<'a, A: Copy + 'a>(
    wr: &[u8],
    t0: usize,
    o: &mut [f32],
    act: &impl Fn(usize) -> A,
    kernels: RowKernels<A>,
) {
    let m = o.len();
    let mut t = t0;
    if let Some(dot4) = kernels.dot4 {
        while t + 4 <= m {
            o[t..t + 4].copy_from_slice(&dot4(wr, &[act(t), act(t + 1), act(t + 2), act(t + 3)]));
            t += 4;
        }
    }
    for (u, v) in o.iter_mut().enumerate().skip(t) {
        *v = (kernels.dot)(wr, act(u));
    }
}
