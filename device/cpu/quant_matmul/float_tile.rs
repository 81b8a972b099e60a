//! The float path: a chunk of weight rows dequantised to f32, then one single-threaded GEMM of
//! the activations against it. For types without a block kernel (F32/F16/BF16 and any other
//! type `dequantize` knows), and for long prompts where a GEMM beats per-token dot products.

use anyhow::Result;
use gemm::Parallelism;

use crate::device::quant::{dequantize, GgmlType};

/// Whether `m` tokens against rows of `dtype` go faster dequantised to f32 and through a GEMM
/// than through the block kernels.
///
/// Measured on the decode shapes (`bench.rs`, `batched_32_blocks` and `batched_k_quants`, float
/// tiles of `FLOAT_CHUNK_ROWS` rows): the block kernels' cost grows with every token (their
/// 8-token tiles share a block's decoding, not its per-token products), while the float path pays
/// the dequantisation once and then a GEMM whose cost per token falls. The 32-element types'
/// tiles lead at 32 tokens (since they take a block's float step once for eight tokens, Q8_0's
/// too, which dequantises cheaply and led only to 24 before), the GEMM from 48. The K-quants'
/// tiles run about as fast as the f32 GEMM alone, before any dequantisation, at every length
/// measured: they always use the blocks.
pub fn prefer_float(dtype: GgmlType, m: usize) -> bool {
    match dtype {
        GgmlType::Q8_0
        | GgmlType::Q4_0
        | GgmlType::Q4_1
        | GgmlType::Q5_0
        | GgmlType::Q5_1
        | GgmlType::IQ4_NL => m >= 48,
        _ => false,
    }
}

/// `dst[r * m + t] = x[t] · row[r]` for the `rows` rows of `k` elements of `dtype` in `bytes`.
pub fn multiply(
    dtype: GgmlType,
    bytes: &[u8],
    rows: usize,
    k: usize,
    x: &[f32],
    m: usize,
    dst: &mut [f32],
) -> Result<()> {
    let mut tile = vec![0.0f32; rows * k];
    dequantize(dtype, bytes, &mut tile)?;
    anyhow::ensure!(
        x.len() >= m * k && dst.len() >= rows * m,
        "float tile: operands smaller than {m}x{k} and {rows}x{m}"
    );
    // SAFETY: x is read as the m×k matrix (row stride k, column stride 1), the tile as the k×rows
    // matrix tileᵀ (row stride 1, column stride k): exactly its rows·k elements; dst is written as
    // the m×rows matrix with element (t, r) at r·m + t, inside its rows·m elements (checked
    // above). None of the slices alias.
    unsafe {
        gemm::gemm(
            m,
            rows,
            k,
            dst.as_mut_ptr(),
            m as isize,
            1,
            false,
            x.as_ptr(),
            1,
            k as isize,
            tile.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    Ok(())
}
