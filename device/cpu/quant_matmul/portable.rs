//! Portable block dot products for the 32-element types: one weight row (its raw blocks) against
//! one quantised activation row. Integer products per block, then `f32` scale and sum: the
//! reference the SIMD kernels must match (their integer sums are the same; only the order of the
//! `f32` accumulation differs).

use half::f16;

use super::activations::{Q8Row, QK32};

/// The little-endian `f16` at `b[at..at + 2]` as `f32`.
#[inline]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Σ over blocks of `d_w · d_a · Σ code_w(j) · code_a(j) + offset_w · sum_a`, where `codes`
/// decodes a weight block into 32 integer codes and returns the block's (scale, offset).
#[inline]
fn dot_blocks(
    w: &[u8],
    block_bytes: usize,
    a: Q8Row<'_>,
    codes: impl Fn(&[u8], &mut [i32; QK32]) -> (f32, f32),
) -> f32 {
    let mut acc = 0f32;
    let mut q = [0i32; QK32];
    for (b, blk) in w.chunks_exact(block_bytes).enumerate() {
        let (d, offset) = codes(blk, &mut q);
        let qa = &a.qs[b * QK32..(b + 1) * QK32];
        let s: i32 = q.iter().zip(qa).map(|(&x, &y)| x * i32::from(y)).sum();
        acc += d * a.d[b] * s as f32 + offset * a.sum[b];
    }
    acc
}

/// Q8_0: `x = q · d`.
pub fn q8_0(w: &[u8], a: Q8Row<'_>) -> f32 {
    dot_blocks(w, 34, a, |blk, q| {
        for (o, &v) in q.iter_mut().zip(&blk[2..34]) {
            *o = i32::from(v as i8);
        }
        (f16_at(blk, 0), 0.0)
    })
}

/// Nibble `j` of a 16-byte run: element `j` in the low nibbles, `j + 16` in the high.
#[inline]
fn nibbles(qs: &[u8], q: &mut [i32; QK32]) {
    for (j, &byte) in qs[..QK32 / 2].iter().enumerate() {
        q[j] = i32::from(byte & 0x0F);
        q[j + QK32 / 2] = i32::from(byte >> 4);
    }
}

/// Q4_0: `x = (q - 8) · d`, taken as `d · q` plus the offset `-8 d` times the activation sum.
pub fn q4_0(w: &[u8], a: Q8Row<'_>) -> f32 {
    dot_blocks(w, 18, a, |blk, q| {
        nibbles(&blk[2..], q);
        let d = f16_at(blk, 0);
        (d, -8.0 * d)
    })
}

/// Q4_1: `x = q · d + m`.
pub fn q4_1(w: &[u8], a: Q8Row<'_>) -> f32 {
    dot_blocks(w, 20, a, |blk, q| {
        nibbles(&blk[4..], q);
        (f16_at(blk, 0), f16_at(blk, 2))
    })
}

/// The fifth bits of Q5 codes: bit `j` of the little-endian `u32` at `qh` is element `j`'s.
#[inline]
fn add_high_bits(qh: &[u8], q: &mut [i32; QK32]) {
    let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, o) in q.iter_mut().enumerate() {
        *o |= (((bits >> j) & 1) as i32) << 4;
    }
}

/// Q5_0: `x = (q - 16) · d` (`d`, 4 bytes of high bits, 16 bytes of nibbles).
pub fn q5_0(w: &[u8], a: Q8Row<'_>) -> f32 {
    dot_blocks(w, 22, a, |blk, q| {
        nibbles(&blk[6..], q);
        add_high_bits(&blk[2..6], q);
        let d = f16_at(blk, 0);
        (d, -16.0 * d)
    })
}

/// Q5_1: `x = q · d + m` (`d`, `m`, 4 bytes of high bits, 16 bytes of nibbles).
pub fn q5_1(w: &[u8], a: Q8Row<'_>) -> f32 {
    dot_blocks(w, 24, a, |blk, q| {
        nibbles(&blk[8..], q);
        add_high_bits(&blk[4..8], q);
        (f16_at(blk, 0), f16_at(blk, 2))
    })
}
