//! The K-quants: 256-element super-blocks split into sub-blocks of 16 or 32 elements, each with
//! its own small integer scale (and for Q2_K, Q4_K, Q5_K a minimum), both multiplied by the
//! super-block's `f16` factors `d` and `dmin`.
//!
//! Within a super-block the codes are laid out in 128-element halves: a byte at position `i` of
//! a half's code array holds the 2-, 4- or 6-bit parts of several elements `32` (or `64`) apart.
//! The products `d * scale * q` are exact in f32 (at most 24 significant bits), and the minimum
//! is subtracted last, so the results equal the reference formulas bit for bit.

use super::legacy::signed_bytes_times;
use super::{read_f16, QK_K};

/// Q2_K: 16 scale bytes (low nibble scale, high nibble minimum, one per 16 elements), 64 bytes of
/// 2-bit codes, `d`, `dmin`. `x = d * scale * q - dmin * min`.
pub(super) fn dequant_q2_k(block: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&block[..16], &block[16..80]);
    let (d, dmin) = (read_f16(block, 80), read_f16(block, 82));
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let (half, shift, i) = (e / 128, (e / 32) % 4, e % 32);
        let q = (qs[half * 32 + i] >> (2 * shift)) & 3;
        let sc = scales[e / 16];
        *o = d * f32::from(sc & 0x0F) * f32::from(q) - dmin * f32::from(sc >> 4);
    }
}

/// Q3_K: 32 bytes of high bits (bit `b` of byte `i` for element `32 b + i`), 64 bytes of low
/// 2-bit codes, 12 bytes of 6-bit signed scales (one per 16 elements, offset by 32), `d`.
/// `x = d * scale * q` with `q = low - 4` when the high bit is clear, `low` when it is set.
pub(super) fn dequant_q3_k(block: &[u8], out: &mut [f32]) {
    let (hmask, qs, packed) = (&block[..32], &block[32..96], &block[96..108]);
    let d = read_f16(block, 108);
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let (half, shift, i) = (e / 128, (e / 32) % 4, e % 32);
        let low = ((qs[half * 32 + i] >> (2 * shift)) & 3) as i8;
        let high = (hmask[i] >> (e / 32)) & 1;
        let q = if high == 1 { low } else { low - 4 };
        *o = d * f32::from(q3_scale(packed, e / 16)) * f32::from(q);
    }
}

/// Scale `k` (0..16) of a Q3_K super-block: its low four bits are nibble `k / 8` of byte `k % 8`,
/// its high two bits are bits `2 (k / 4)` of byte `8 + k % 4`.
fn q3_scale(packed: &[u8], k: usize) -> i8 {
    let low = (packed[k % 8] >> (4 * (k / 8))) & 0x0F;
    let high = (packed[8 + k % 4] >> (2 * (k / 4))) & 0x03;
    (low | (high << 4)) as i8 - 32
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) from Q4_K/Q5_K's 12 packed bytes: the
/// first four sub-blocks' values are the low six bits of bytes `j` and `j + 4`; the last four's
/// low nibbles come from byte `j + 4` (scale low, minimum high) and their top two bits from the
/// spare high bits of bytes `j - 4` and `j`.
fn scale_min_k4(packed: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 0x3F, packed[j + 4] & 0x3F)
    } else {
        let sc = (packed[j + 4] & 0x0F) | ((packed[j - 4] >> 2) & 0x30);
        let min = (packed[j + 4] >> 4) | ((packed[j] >> 2) & 0x30);
        (sc, min)
    }
}

/// Q4_K: `d`, `dmin`, 12 scale bytes (eight 32-element sub-blocks), 128 bytes of 4-bit codes;
/// byte `i` of 32-byte group `c` holds element `64 c + i` (low nibble) and `64 c + 32 + i`.
/// `x = d * scale * q - dmin * min`.
pub(super) fn dequant_q4_k(block: &[u8], out: &mut [f32]) {
    dequant_k4_k5(block, None, &block[16..144], out);
}

/// Q5_K: as Q4_K, with 32 bytes of fifth bits (bit `b` of byte `i` for element `32 b + i`)
/// between the scales and the 4-bit codes.
pub(super) fn dequant_q5_k(block: &[u8], out: &mut [f32]) {
    dequant_k4_k5(block, Some(&block[16..48]), &block[48..176], out);
}

fn dequant_k4_k5(block: &[u8], qh: Option<&[u8]>, qs: &[u8], out: &mut [f32]) {
    let (d, dmin) = (read_f16(block, 0), read_f16(block, 2));
    let packed = &block[4..16];
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let (sub, i) = (e / 32, e % 32);
        let low = (qs[(sub / 2) * 32 + i] >> (4 * (sub % 2))) & 0x0F;
        let high = qh.map_or(0, |h| ((h[i] >> sub) & 1) << 4);
        let (sc, min) = scale_min_k4(packed, sub);
        *o = d * f32::from(sc) * f32::from(low | high) - dmin * f32::from(min);
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scale bytes (one per
/// 16 elements), `d`. In half `h`, low-nibble byte `64 h + i` (i < 64) holds element
/// `128 h + i` (low) and `128 h + 64 + i` (high); high byte `32 h + i` (i < 32) holds bits 4-5 of
/// elements `128 h + 32 s + i` at bits `2 s`. `x = d * scale * (q - 32)`.
pub(super) fn dequant_q6_k(block: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&block[..128], &block[128..192], &block[192..208]);
    let d = read_f16(block, 208);
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let (half, r) = (e / 128, e % 128);
        let low = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i8 - 32;
        *o = d * f32::from(scales[e / 16] as i8) * f32::from(q);
    }
}

/// Q8_K: an `f32` scale, 256 signed bytes, then sixteen `i16` partial sums for dot products
/// (not needed for the value). `x = d * q`.
pub(super) fn dequant_q8_k(block: &[u8], out: &mut [f32]) {
    let d = f32::from_le_bytes([block[0], block[1], block[2], block[3]]);
    signed_bytes_times(d, &block[4..4 + QK_K], out);
}

#[cfg(test)]
mod tests {
    use super::super::tests::deq;
    use super::super::GgmlType;
    use half::f16;

    const N: usize = 256;

    fn put_f16(b: &mut [u8], at: usize, v: f32) {
        b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
    }

    /// A block of `dtype` with every byte zero except those `edit` sets.
    fn block(dtype: GgmlType, edit: impl FnOnce(&mut [u8])) -> Vec<f32> {
        let mut b = vec![0u8; dtype.block_bytes()];
        edit(&mut b);
        deq(dtype, &b, N)
    }

    /// Asserts `got[e] == want` at `e` and `got == rest` everywhere else.
    fn one_different(got: &[f32], e: usize, want: f32, rest: f32) {
        for (i, v) in got.iter().enumerate() {
            let w = if i == e { want } else { rest };
            assert_eq!(*v, w, "element {i}");
        }
    }

    #[test]
    fn q2_k_one_code() {
        // Element 128 + 2*32 + 5 = 197: half 1, shift 2, byte 32 + 5; sub-block 12.
        let got = block(GgmlType::Q2_K, |b| {
            b[16 + 37] = 3 << 4;
            b[12] = 0x25; // scale 5, min 2
            put_f16(b, 80, 0.5);
            put_f16(b, 82, 0.25);
        });
        for (i, v) in got.iter().enumerate() {
            let want = match i {
                197 => 0.5 * 5.0 * 3.0 - 0.25 * 2.0,
                192..=207 => -0.5,
                _ => 0.0,
            };
            assert_eq!(*v, want, "element {i}");
        }
    }

    #[test]
    fn q3_k_one_code_and_its_scale() {
        // Element 166 = half 1, shift 1, i 6: low code in byte 32 + 32 + 6 at bits 2-3; its high
        // bit is bit 5 of hmask byte 6. Sub-block 10: low nibble is the high nibble of byte 2,
        // high bits are bits 4-5 of byte 8 + 2.
        let got = block(GgmlType::Q3_K, |b| {
            b[32 + 38] = 2 << 2;
            b[6] = 1 << 5;
            b[96 + 2] = 0x30; // sub-block 10 low = 3
            b[96 + 10] = 0x2 << 4; // sub-block 10 high = 2 → 3 | 32 = 35 → 35 - 32 = 3
            put_f16(b, 108, 0.5);
        });
        // Everywhere else: scale -32, code 0 - 4 = -4 → 0.5 * -32 * -4 = 64; in sub-block 10 the
        // scale is 3 → 0.5 * 3 * -4 = -6 except element 166: 0.5 * 3 * 2 = 3.
        for (i, v) in got.iter().enumerate() {
            let want = match i {
                166 => 3.0,
                160..=175 => -6.0,
                _ => 64.0,
            };
            assert_eq!(*v, want, "element {i}");
        }
    }

    #[test]
    fn q4_k_scales_of_late_sub_blocks() {
        // Element 6*32 + 9 = 201: sub-block 6 is the low nibbles of code group 3 → byte 96 + 9.
        // Sub-block 6's scale: low nibble of byte 4+6 = 10, top bits from byte 2's bits 6-7;
        // its min: high nibble of byte 10, top bits from byte 6's bits 6-7.
        let got = block(GgmlType::Q4_K, |b| {
            b[16 + 96 + 9] = 7;
            b[4 + 10] = 0x35; // scale low 5, min low 3
            b[4 + 2] = 0x40; // scale += 16
            b[4 + 6] = 0x80; // min += 32
            put_f16(b, 0, 0.5);
            put_f16(b, 2, 0.25);
        });
        for (i, v) in got.iter().enumerate() {
            let want = match i {
                201 => 0.5 * 21.0 * 7.0 - 0.25 * 35.0,
                192..=223 => -0.25 * 35.0,
                _ => 0.0,
            };
            assert_eq!(*v, want, "element {i}");
        }
    }

    #[test]
    fn q5_k_fifth_bit() {
        // Sub-block 1 scale 3 (byte 4+1), min 0. Element 32 + 4: low nibble is the high nibble
        // of code byte 4; its fifth bit is bit 1 of qh byte 4.
        let got = block(GgmlType::Q5_K, |b| {
            b[4 + 1] = 3;
            b[16 + 4] = 1 << 1;
            b[48 + 4] = 0x20;
            put_f16(b, 0, 0.5);
        });
        one_different(&got, 36, 0.5 * 3.0 * f32::from(2u8 | 16), 0.0);
    }

    #[test]
    fn q6_k_one_code() {
        // Element 128 + 64 + 32 + 3 = 227: half 1, low nibble high half of ql byte 64 + 32 + 3,
        // high pair bits 6-7 (s = 3) of qh byte 32 + 3. Every other code is 0 - 32.
        let got = block(GgmlType::Q6_K, |b| {
            b[64 + 35] = 0x9 << 4;
            b[128 + 35] = 0x2 << 6;
            b[192..208].fill(2);
            b[192 + 14] = (-3i8) as u8;
            put_f16(b, 208, 0.5);
        });
        for (i, v) in got.iter().enumerate() {
            let want = match i {
                227 => 0.5 * -3.0 * 9.0, // (9 | 2 << 4) - 32
                224..=239 => 0.5 * -3.0 * -32.0,
                _ => 0.5 * 2.0 * -32.0,
            };
            assert_eq!(*v, want, "element {i}");
        }
    }

    #[test]
    fn q8_k_is_scale_times_code() {
        let got = block(GgmlType::Q8_K, |b| {
            b[..4].copy_from_slice(&0.125f32.to_le_bytes());
            b[4 + 100] = (-7i8) as u8;
            b[260..].fill(0xFF); // the partial sums do not enter the value
        });
        one_different(&got, 100, -0.875, 0.0);
    }
}
