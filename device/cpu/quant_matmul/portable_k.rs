//! Portable block dot products for the K-quants (and IQ4_NL): each 256-element super-block is
//! decoded to integer codes with one integer scale and minimum per 16 elements, then meets the
//! activation block as `d_a · (d · Σ_s scale_s · Σ_{i∈s} q_i a_i − dmin · Σ_s min_s · bsum_s)`,
//! the minimum taken through the activation's per-16 sums.

use super::activations::{Q8KRow, Q8Row, QKK};
use super::portable::f16_at;

/// A super-block decoded: codes, per-16 scales and minimums, and the two `f16` factors.
struct Decoded {
    q: [i8; QKK],
    scale: [i32; 16],
    min: [i32; 16],
    d: f32,
    dmin: f32,
}

impl Decoded {
    fn new() -> Self {
        Decoded {
            q: [0; QKK],
            scale: [0; 16],
            min: [0; 16],
            d: 0.0,
            dmin: 0.0,
        }
    }
}

/// Σ over super-blocks, decoding each with `decode`.
#[inline]
fn dot_super_blocks(
    w: &[u8],
    block_bytes: usize,
    a: Q8KRow<'_>,
    decode: impl Fn(&[u8], &mut Decoded),
) -> f32 {
    let mut acc = 0f32;
    let mut dec = Decoded::new();
    for (b, blk) in w.chunks_exact(block_bytes).enumerate() {
        decode(blk, &mut dec);
        let qa = &a.qs[b * QKK..(b + 1) * QKK];
        let bsums = &a.bsums[b * 16..(b + 1) * 16];
        let mut sumi = 0i32;
        let mut mins = 0i32;
        for s in 0..16 {
            let dot: i32 = dec.q[s * 16..(s + 1) * 16]
                .iter()
                .zip(&qa[s * 16..(s + 1) * 16])
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
            sumi += dec.scale[s] * dot;
            mins += dec.min[s] * i32::from(bsums[s]);
        }
        acc += a.d[b] * (dec.d * sumi as f32 - dec.dmin * mins as f32);
    }
    acc
}

/// The 6-bit scale and minimum of 32-element sub-block `j` from Q4_K/Q5_K's 12 packed bytes
/// (the first four in the low six bits of bytes `j`, `j + 4`; the last four split between the
/// nibbles of byte `j + 4` and the top two bits of bytes `j - 4`, `j`).
pub fn k4_scale_min(p: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (p[j] & 0x3F, p[j + 4] & 0x3F)
    } else {
        (
            (p[j + 4] & 0x0F) | ((p[j - 4] >> 6) << 4),
            (p[j + 4] >> 4) | ((p[j] >> 6) << 4),
        )
    }
}

/// Q4_K and Q5_K share the scales and the 4-bit layout (byte `i` of 32-byte run `c`: element
/// `64 c + i` low, `64 c + 32 + i` high); Q5_K adds bit `j` of `qh[i]` as bit 4 of element
/// `32 j + i`.
fn decode_k4_k5(blk: &[u8], qh: Option<&[u8]>, qs: &[u8], dec: &mut Decoded) {
    dec.d = f16_at(blk, 0);
    dec.dmin = f16_at(blk, 2);
    for j in 0..8 {
        let (sc, mn) = k4_scale_min(&blk[4..16], j);
        dec.scale[2 * j..2 * j + 2].fill(i32::from(sc));
        dec.min[2 * j..2 * j + 2].fill(i32::from(mn));
        for i in 0..32 {
            let low = (qs[(j / 2) * 32 + i] >> (4 * (j % 2))) & 0x0F;
            let high = qh.map_or(0, |h| ((h[i] >> j) & 1) << 4);
            dec.q[32 * j + i] = (low | high) as i8;
        }
    }
}

pub fn q4_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    dot_super_blocks(w, 144, a, |blk, dec| {
        decode_k4_k5(blk, None, &blk[16..144], dec)
    })
}

pub fn q5_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    dot_super_blocks(w, 176, a, |blk, dec| {
        decode_k4_k5(blk, Some(&blk[16..48]), &blk[48..176], dec)
    })
}

/// Q6_K: 128 bytes of low nibbles, 64 of 2-bit high parts, 16 signed scales, `d`; codes `q - 32`.
pub fn q6_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    dot_super_blocks(w, 210, a, |blk, dec| {
        let (ql, qh) = (&blk[..128], &blk[128..192]);
        dec.d = f16_at(blk, 208);
        dec.dmin = 0.0;
        for (s, sc) in dec.scale.iter_mut().enumerate() {
            *sc = i32::from(blk[192 + s] as i8);
        }
        for (e, q) in dec.q.iter_mut().enumerate() {
            let (half, r) = (e / 128, e % 128);
            let low = (ql[half * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
            let high = (qh[half * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
            *q = (low | (high << 4)) as i8 - 32;
        }
    })
}

/// Q3_K: 32 bytes of high bits, 64 of low 2-bit codes, 12 of 6-bit scales (offset 32), `d`;
/// the code is `low - 4` where the high bit is clear.
pub fn q3_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    dot_super_blocks(w, 110, a, |blk, dec| {
        let (hmask, qs, packed) = (&blk[..32], &blk[32..96], &blk[96..108]);
        dec.d = f16_at(blk, 108);
        dec.dmin = 0.0;
        for (s, sc) in dec.scale.iter_mut().enumerate() {
            let low = (packed[s % 8] >> (4 * (s / 8))) & 0x0F;
            let high = (packed[8 + s % 4] >> (2 * (s / 4))) & 0x03;
            *sc = i32::from(low | (high << 4)) - 32;
        }
        for (e, q) in dec.q.iter_mut().enumerate() {
            let (half, shift, i) = (e / 128, (e / 32) % 4, e % 32);
            let low = ((qs[half * 32 + i] >> (2 * shift)) & 3) as i8;
            let high = (hmask[i] >> (e / 32)) & 1;
            *q = if high == 1 { low } else { low - 4 };
        }
    })
}

/// Q2_K: 16 scale bytes (scale low nibble, minimum high), 64 bytes of 2-bit codes, `d`, `dmin`.
pub fn q2_k(w: &[u8], a: Q8KRow<'_>) -> f32 {
    dot_super_blocks(w, 84, a, |blk, dec| {
        let (scales, qs) = (&blk[..16], &blk[16..80]);
        dec.d = f16_at(blk, 80);
        dec.dmin = f16_at(blk, 82);
        for ((sc, mn), &byte) in dec.scale.iter_mut().zip(&mut dec.min).zip(scales) {
            *sc = i32::from(byte & 0x0F);
            *mn = i32::from(byte >> 4);
        }
        for (e, q) in dec.q.iter_mut().enumerate() {
            let (half, shift, i) = (e / 128, (e / 32) % 4, e % 32);
            *q = ((qs[half * 32 + i] >> (2 * shift)) & 3) as i8;
        }
    })
}

/// The 16 values IQ4_NL and IQ4_XS codes index.
const IQ4_LEVELS: [i32; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL: 32-element blocks of an `f16` scale and 16 bytes of 4-bit indices into a fixed table
/// (the Q4_0 nibble order).
pub fn iq4_nl(w: &[u8], a: Q8Row<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let qa = &a.qs[b * 32..(b + 1) * 32];
        let mut s = 0i32;
        for (j, &byte) in blk[2..18].iter().enumerate() {
            s += IQ4_LEVELS[usize::from(byte & 0x0F)] * i32::from(qa[j]);
            s += IQ4_LEVELS[usize::from(byte >> 4)] * i32::from(qa[j + 16]);
        }
        acc += f16_at(blk, 0) * a.d[b] * s as f32;
    }
    acc
}

/// IQ4_XS: `d`, a `u16` of the sub-blocks' high 2 scale bits, 4 bytes of their low 4 bits, then
/// 16 bytes of 4-bit table indices per 32-element sub-block; scales offset by 32.
pub fn iq4_xs(w: &[u8], a: Q8KRow<'_>) -> f32 {
    dot_super_blocks(w, 136, a, |blk, dec| {
        dec.d = f16_at(blk, 0);
        dec.dmin = 0.0;
        let high = u16::from_le_bytes([blk[2], blk[3]]);
        for j in 0..8 {
            let lo = (blk[4 + j / 2] >> (4 * (j % 2))) & 0x0F;
            let hi = ((high >> (2 * j)) & 0x03) as u8;
            dec.scale[2 * j..2 * j + 2].fill(i32::from(lo | (hi << 4)) - 32);
            let qs = &blk[8 + 16 * j..8 + 16 * (j + 1)];
            for (i, &byte) in qs.iter().enumerate() {
                dec.q[32 * j + i] = IQ4_LEVELS[usize::from(byte & 0x0F)] as i8;
                dec.q[32 * j + i + 16] = IQ4_LEVELS[usize::from(byte >> 4)] as i8;
            }
        }
    })
}
