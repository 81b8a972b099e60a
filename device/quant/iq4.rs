//! IQ4_NL and IQ4_XS: 4-bit codes that index a fixed non-uniform table of 16 levels (denser near
//! zero, where weights cluster) instead of standing for `q - 8`.

use super::legacy::nibble;
use super::read_f16;

/// The 16 levels a 4-bit IQ4 code selects, in units of the block scale.
const LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL: blocks of 32, an `f16` scale `d`, then 16 bytes of codes packed as in Q4_0.
/// `x = d * LEVELS[q]`.
pub(super) fn dequant_iq4_nl(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * f32::from(LEVELS[usize::from(nibble(&block[2..], j))]);
    }
}

/// IQ4_XS: 256-element super-blocks of eight 32-element sub-blocks: `f16` `d`, a `u16` of the
/// sub-blocks' high 2 scale bits (bits `2 j`), 4 bytes of their low 4 scale bits (sub-block `j`
/// in nibble `j % 2` of byte `j / 2`), then 16 code bytes per sub-block packed as in Q4_0.
/// `x = d * (scale - 32) * LEVELS[q]`.
pub(super) fn dequant_iq4_xs(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, 0);
    let high = u16::from_le_bytes([block[2], block[3]]);
    let (low, codes) = (&block[4..8], &block[8..136]);
    for (j, sub) in out.chunks_exact_mut(32).enumerate() {
        let lo = (low[j / 2] >> (4 * (j % 2))) & 0x0F;
        let hi = ((high >> (2 * j)) & 0x03) as u8;
        let dl = d * f32::from((lo | (hi << 4)) as i8 - 32);
        let qs = &codes[16 * j..16 * (j + 1)];
        for (i, o) in sub.iter_mut().enumerate() {
            *o = dl * f32::from(LEVELS[usize::from(nibble(qs, i))]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::deq;
    use super::super::GgmlType;
    use super::LEVELS;
    use half::f16;

    #[test]
    fn iq4_nl_codes_pick_levels() {
        let mut src = f16::from_f32(0.5).to_le_bytes().to_vec();
        src.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = deq(GgmlType::IQ4_NL, &src, 32);
        for j in 0..16 {
            assert_eq!(got[j], 0.5 * f32::from(LEVELS[j]));
            assert_eq!(got[j + 16], 0.5 * f32::from(LEVELS[15 - j]));
        }
        assert_eq!((got[0], got[8]), (-63.5, 0.5));
    }

    #[test]
    fn iq4_xs_sub_block_scales() {
        let mut src = f16::from_f32(0.25).to_le_bytes().to_vec();
        // Sub-block 5: high bits 2 (bits 10-11), low nibble 3 (high nibble of byte 2): 35 - 32 = 3.
        // Every other sub-block: 0 - 32 = -32.
        src.extend((2u16 << 10).to_le_bytes());
        src.extend([0x00, 0x00, 0x30, 0x00]);
        let mut codes = vec![0x88u8; 128]; // code 8: level 1
        codes[16 * 5 + 4] = 0x8F; // sub-block 5, element 4: level 113
        src.extend(codes);
        let got = deq(GgmlType::IQ4_XS, &src, 256);
        for (i, v) in got.iter().enumerate() {
            let want = match i {
                164 => 0.25 * 3.0 * 113.0,
                160..=191 => 0.25 * 3.0,
                _ => 0.25 * -32.0,
            };
            assert_eq!(*v, want, "element {i}");
        }
    }
}
