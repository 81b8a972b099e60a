//! The 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, with the reference quantisers
//! of those a GGUF writer needs.
//!
//! Every block starts with an `f16` scale `d`; the `_1` types add an `f16` offset `m` (Q8_1: the
//! block's sum `d * Σq`, which only dot-product kernels read). 4-bit codes are packed two per
//! byte: element `j` in the low nibble of byte `j`, element `j + 16` in its high nibble. The 5-bit
//! types keep each element's fifth bit in one little-endian `u32`, bit `j` for element `j`.

use half::f16;

use super::{read_f16, QK};

/// Q4_0: `x = (q - 8) * d`.
pub(super) fn dequant_q4_0(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = (nibble(&block[2..], j) as f32 - 8.0) * d;
    }
}

/// Q4_1: `x = q * d + m`.
pub(super) fn dequant_q4_1(block: &[u8], out: &mut [f32]) {
    let (d, m) = (read_f16(block, 0), read_f16(block, 2));
    for (j, o) in out.iter_mut().enumerate() {
        *o = nibble(&block[4..], j) as f32 * d + m;
    }
}

/// Q5_0: `x = (q - 16) * d`, `q` five bits.
pub(super) fn dequant_q5_0(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, 0);
    let qh = read_u32(block, 2);
    for (j, o) in out.iter_mut().enumerate() {
        *o = (five_bits(&block[6..], qh, j) as f32 - 16.0) * d;
    }
}

/// Q5_1: `x = q * d + m`, `q` five bits.
pub(super) fn dequant_q5_1(block: &[u8], out: &mut [f32]) {
    let (d, m) = (read_f16(block, 0), read_f16(block, 2));
    let qh = read_u32(block, 4);
    for (j, o) in out.iter_mut().enumerate() {
        *o = five_bits(&block[8..], qh, j) as f32 * d + m;
    }
}

/// Q8_0: `x = q * d`, `q` a signed byte after the scale.
pub(super) fn dequant_q8_0(block: &[u8], out: &mut [f32]) {
    signed_bytes_times(read_f16(block, 0), &block[2..], out);
}

/// Q8_1: `x = q * d`; the stored sum after `d` plays no part in the value.
pub(super) fn dequant_q8_1(block: &[u8], out: &mut [f32]) {
    signed_bytes_times(read_f16(block, 0), &block[4..], out);
}

/// `out[j] = qs[j] as i8 * d`; shared with Q8_K.
pub(super) fn signed_bytes_times(d: f32, qs: &[u8], out: &mut [f32]) {
    for (o, q) in out.iter_mut().zip(qs) {
        *o = f32::from(*q as i8) * d;
    }
}

/// The 4-bit code of element `j` (0..32) of a block whose packed codes are `qs`.
pub(super) fn nibble(qs: &[u8], j: usize) -> u8 {
    let half = QK / 2;
    if j < half {
        qs[j] & 0x0F
    } else {
        qs[j - half] >> 4
    }
}

fn five_bits(qs: &[u8], qh: u32, j: usize) -> u8 {
    nibble(qs, j) | ((((qh >> j) & 1) as u8) << 4)
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// ggml's reference Q8_0 quantiser: `d = max|x| / 127`, codes rounded half away from zero.
pub(super) fn quant_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// ggml's reference Q4_0 (`levels` 16) and Q5_0 (`levels` 32) quantiser: the value with the
/// largest magnitude, sign kept, maps to code 0 (`-levels/2 * d`).
fn quant_symmetric(x: &[f32], levels: u8, out: &mut Vec<u8>) -> Vec<u8> {
    let max = x
        .iter()
        .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m });
    let half = f32::from(levels / 2);
    let d = max / -half;
    let id = inverse(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    x.iter()
        .map(|v| ((v * id + half + 0.5) as i32).clamp(0, i32::from(levels) - 1) as u8)
        .collect()
}

/// ggml's reference Q4_1 (`levels` 16) and Q5_1 (`levels` 32) quantiser: `m` is the block's
/// minimum, `d` spreads the range over the codes.
fn quant_affine(x: &[f32], levels: u8, out: &mut Vec<u8>) -> Vec<u8> {
    let min = x.iter().fold(f32::INFINITY, |a, v| a.min(*v));
    let max = x.iter().fold(f32::NEG_INFINITY, |a, v| a.max(*v));
    let d = (max - min) / f32::from(levels - 1);
    let id = inverse(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    x.iter()
        .map(|v| (((v - min) * id + 0.5) as i32).clamp(0, i32::from(levels) - 1) as u8)
        .collect()
}

pub(super) fn quant_q4_0(x: &[f32], out: &mut Vec<u8>) {
    let q = quant_symmetric(x, 16, out);
    push_nibbles(&q, out);
}

pub(super) fn quant_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let q = quant_affine(x, 16, out);
    push_nibbles(&q, out);
}

pub(super) fn quant_q5_0(x: &[f32], out: &mut Vec<u8>) {
    let q = quant_symmetric(x, 32, out);
    push_fifth_bits(&q, out);
    push_nibbles(&q, out);
}

pub(super) fn quant_q5_1(x: &[f32], out: &mut Vec<u8>) {
    let q = quant_affine(x, 32, out);
    push_fifth_bits(&q, out);
    push_nibbles(&q, out);
}

fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Appends the low four bits of each code, two codes per byte (see the module doc).
fn push_nibbles(q: &[u8], out: &mut Vec<u8>) {
    let (lo, hi) = q.split_at(QK / 2);
    out.extend(
        lo.iter()
            .zip(hi)
            .map(|(l, h)| (l & 0x0F) | ((h & 0x0F) << 4)),
    );
}

/// Appends the `u32` whose bit `j` is the fifth bit of code `j`.
fn push_fifth_bits(q: &[u8], out: &mut Vec<u8>) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, c)| h | (u32::from((c >> 4) & 1) << j));
    out.extend_from_slice(&qh.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::tests::deq;
    use super::super::GgmlType;
    use half::f16;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q8_0_block() {
        let mut src = f16_bytes(0.5).to_vec();
        src.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let want: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        assert_eq!(deq(GgmlType::Q8_0, &src, 32), want);
    }

    #[test]
    fn q8_1_block_ignores_the_sum() {
        let mut src = f16_bytes(0.25).to_vec();
        src.extend(f16_bytes(1000.0));
        src.extend((0..32).map(|i| (i as i8 - 3) as u8));
        let want: Vec<f32> = (0..32).map(|i| (i as f32 - 3.0) * 0.25).collect();
        assert_eq!(deq(GgmlType::Q8_1, &src, 32), want);
    }

    #[test]
    fn q4_0_block() {
        let mut src = f16_bytes(2.0).to_vec();
        src.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = deq(GgmlType::Q4_0, &src, 32);
        for j in 0..16 {
            assert_eq!(got[j], (j as f32 - 8.0) * 2.0);
            assert_eq!(got[j + 16], (7.0 - j as f32) * 2.0);
        }
    }

    #[test]
    fn q4_1_block() {
        let mut src = f16_bytes(0.5).to_vec();
        src.extend(f16_bytes(-1.0));
        src.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = deq(GgmlType::Q4_1, &src, 32);
        for j in 0..16 {
            assert_eq!(got[j], j as f32 * 0.5 - 1.0);
            assert_eq!(got[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    /// Every code 8 (low nibbles) with the fifth bit of element 3 and element 20 set:
    /// those two are `24 - 16 = 8` units, every other element `8 - 16 = -8` units.
    fn five_bit_block(header: &[u8]) -> Vec<u8> {
        let mut src = header.to_vec();
        src.extend(((1u32 << 3) | (1u32 << 20)).to_le_bytes());
        src.extend([0x88u8; 16]);
        src
    }

    #[test]
    fn q5_0_block() {
        let got = deq(GgmlType::Q5_0, &five_bit_block(&f16_bytes(0.5)), 32);
        for (j, v) in got.iter().enumerate() {
            let want = if j == 3 || j == 20 { 4.0 } else { -4.0 };
            assert_eq!(*v, want, "element {j}");
        }
    }

    #[test]
    fn q5_1_block() {
        let mut header = f16_bytes(0.5).to_vec();
        header.extend(f16_bytes(1.0));
        let got = deq(GgmlType::Q5_1, &five_bit_block(&header), 32);
        for (j, v) in got.iter().enumerate() {
            let want = if j == 3 || j == 20 {
                24.0 * 0.5 + 1.0
            } else {
                8.0 * 0.5 + 1.0
            };
            assert_eq!(*v, want, "element {j}");
        }
    }
}
