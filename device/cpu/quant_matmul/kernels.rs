//! Which dot-product kernel multiplies a weight type on an instruction set.

use super::activations::{Q8KRow, Q8Row};
use super::isa::Isa;
use super::{portable, portable_k};
use crate::device::quant::GgmlType;

/// One weight row's raw blocks against one quantised activation row.
pub type Dot32 = fn(&[u8], Q8Row<'_>) -> f32;
pub type DotK = fn(&[u8], Q8KRow<'_>) -> f32;
/// One weight row against four activation rows (each block decoded once for the four).
pub type Dot32x4 = fn(&[u8], &[Q8Row<'_>; 4]) -> [f32; 4];
/// [`TILE_ROWS`] weight rows (`row_bytes` apart) against [`TILE_TOKENS`] activation rows.
pub type Dot32Tile = fn(&[u8], usize, &[Q8Row<'_>; TILE_TOKENS]) -> [[f32; TILE_TOKENS]; TILE_ROWS];
/// `out.len()` weight rows (`row_bytes` apart) against one activation row, in one call.
pub type Dot32Rows = fn(&[u8], usize, Q8Row<'_>, &mut [f32]);
pub type DotKx4 = fn(&[u8], &[Q8KRow<'_>; 4]) -> [f32; 4];
/// [`TILE_ROWS`] weight rows (`row_bytes` apart in the slice) against [`TILE_TOKENS`] activation
/// rows: each block decoded once per row for all the tokens, each activation block reused from
/// L1 across the rows.
pub type DotKTile = fn(&[u8], usize, &[Q8KRow<'_>; TILE_TOKENS]) -> [[f32; TILE_TOKENS]; TILE_ROWS];

/// Weight rows per tile. The tile kernels keep one row's token accumulators in registers and
/// walk the rows inside each super-block, so more rows only add L1 reuse of the activations.
pub const TILE_ROWS: usize = 2;
/// Tokens per tile: eight i32 accumulators plus the unpacked codes and scales fill the sixteen
/// AVX2 registers.
pub const TILE_TOKENS: usize = 8;

/// How rows of one weight type are multiplied.
#[derive(Clone, Copy)]
pub enum Kernel {
    /// Against 32-element int8 activation blocks, with a four-token form, a rows × tokens tile
    /// and a many-rows × one-token form where there are.
    Blocks32(Dot32, Option<Dot32x4>, Option<Dot32Tile>, Option<Dot32Rows>),
    /// Against 256-element int8 activation blocks with per-16 sums (the K-quants), with a
    /// four-token form and a rows × tokens tile where there are.
    BlocksK(DotK, Option<DotKx4>, Option<DotKTile>),
    /// No block kernel: rows are dequantised to f32 (the float types, types not done yet).
    Float,
}

/// The kernel for `dtype` on `isa`. `isa` must be one this CPU runs ([`super::isa::detected_isa`] or
/// [`Isa::Portable`] or one below it): the SIMD kernels are only safe to call where their set
/// was detected.
pub fn kernel(isa: Isa, dtype: GgmlType) -> Kernel {
    match isa {
        Isa::Portable => portable_kernel(dtype),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::kernel(dtype),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => avx512_vnni::kernel(dtype),
    }
}

fn portable_kernel(dtype: GgmlType) -> Kernel {
    match dtype {
        GgmlType::Q8_0 => Kernel::Blocks32(portable::q8_0, None, None, None),
        GgmlType::Q4_0 => Kernel::Blocks32(portable::q4_0, None, None, None),
        GgmlType::Q4_1 => Kernel::Blocks32(portable::q4_1, None, None, None),
        GgmlType::Q5_0 => Kernel::Blocks32(portable::q5_0, None, None, None),
        GgmlType::Q5_1 => Kernel::Blocks32(portable::q5_1, None, None, None),
        GgmlType::IQ4_NL => Kernel::Blocks32(portable_k::iq4_nl, None, None, None),
        GgmlType::Q2_K => Kernel::BlocksK(portable_k::q2_k, None, None),
        GgmlType::Q3_K => Kernel::BlocksK(portable_k::q3_k, None, None),
        GgmlType::Q4_K => Kernel::BlocksK(portable_k::q4_k, None, None),
        GgmlType::Q5_K => Kernel::BlocksK(portable_k::q5_k, None, None),
        GgmlType::Q6_K => Kernel::BlocksK(portable_k::q6_k, None, None),
        GgmlType::IQ4_XS => Kernel::BlocksK(portable_k::iq4_xs, None, None),
        // Float types, and Q8_1/Q8_K (activation formats, not found as weights).
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_1 | GgmlType::Q8_K => {
            Kernel::Float
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Safe entry points to the AVX2 kernels, reachable only through [`super::kernel`] with
    //! `Isa::Avx2`, which `detected_isa` returns only after checking the CPU.

    use super::super::activations::{Q8KRow, Q8Row, GROUP, GROUP_STRIDE, QK32, QKK};
    use super::super::{avx2 as simd, avx2_k as simd_k, avx2_tile as tile};
    use super::{Kernel, TILE_ROWS, TILE_TOKENS};
    use crate::device::quant::GgmlType;

    /// Whether `a` holds `blocks` blocks of codes and sums.
    pub(super) fn sized(a: &Q8Row<'_>, blocks: usize) -> bool {
        a.d.len() == blocks && a.sum.len() == blocks && a.qs.len() >= blocks * QK32
    }

    // The 32-element tiles take their tokens as one group of scales.
    const _: () = assert!(TILE_TOKENS == GROUP);

    macro_rules! safe {
        ($name:ident, $four:ident, $tile:ident, $rows:ident, $block_bytes:expr) => {
            fn $tile(
                w: &[u8],
                row_bytes: usize,
                a: &[Q8Row<'_>; TILE_TOKENS],
            ) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
                let blocks = a[0].d.len();
                assert!(
                    row_bytes >= blocks * $block_bytes
                        && w.len() >= (TILE_ROWS - 1) * row_bytes + blocks * $block_bytes
                        && a.iter().all(|r| sized(r, blocks))
                        && a[0].group.len() == blocks * GROUP_STRIDE
                );
                // SAFETY: as for the one-row kernels; every row of the tile, every token's
                // blocks and the group's scales are checked just above.
                unsafe { simd::$tile::<TILE_ROWS>(w, row_bytes, a) }
            }

            fn $rows(w: &[u8], row_bytes: usize, a: Q8Row<'_>, out: &mut [f32]) {
                let blocks = a.d.len();
                assert!(
                    row_bytes >= blocks * $block_bytes
                        && (out.is_empty()
                            || w.len() >= (out.len() - 1) * row_bytes + blocks * $block_bytes)
                        && sized(&a, blocks)
                );
                // SAFETY: as for the one-row kernels; every row's blocks are checked just above.
                unsafe { simd::$rows(w, row_bytes, a, out) }
            }

            fn $name(w: &[u8], a: Q8Row<'_>) -> f32 {
                let blocks = a.d.len();
                assert!(w.len() >= blocks * $block_bytes && sized(&a, blocks));
                // SAFETY: only handed out for Isa::Avx2, which is detected before use; the
                // kernel reads `a.d.len()` blocks of `w` and `a`, checked just above.
                unsafe { simd::$name(w, a) }
            }

            fn $four(w: &[u8], a: &[Q8Row<'_>; 4]) -> [f32; 4] {
                let blocks = a[0].d.len();
                assert!(w.len() >= blocks * $block_bytes && a.iter().all(|r| sized(r, blocks)));
                // SAFETY: as above, for each of the four rows.
                unsafe { simd::$four(w, a) }
            }
        };
    }
    safe!(q8_0, q8_0_x4, q8_0_tile, q8_0_rows, 34);
    safe!(q4_0, q4_0_x4, q4_0_tile, q4_0_rows, 18);
    safe!(q4_1, q4_1_x4, q4_1_tile, q4_1_rows, 20);
    safe!(q5_0, q5_0_x4, q5_0_tile, q5_0_rows, 22);
    safe!(q5_1, q5_1_x4, q5_1_tile, q5_1_rows, 24);

    /// Whether `a` holds `blocks` super-blocks of codes and sums.
    fn sized_k(a: &Q8KRow<'_>, blocks: usize) -> bool {
        a.d.len() == blocks && a.qs.len() >= blocks * QKK && a.bsums.len() >= blocks * 16
    }

    macro_rules! safe_k {
        ($name:ident, $four:ident, $block_bytes:expr) => {
            fn $name(w: &[u8], a: Q8KRow<'_>) -> f32 {
                let blocks = a.d.len();
                assert!(w.len() >= blocks * $block_bytes && sized_k(&a, blocks));
                // SAFETY: as for the 32-element kernels; the sizes are checked just above.
                unsafe { simd_k::$name(w, a) }
            }

            fn $four(w: &[u8], a: &[Q8KRow<'_>; 4]) -> [f32; 4] {
                let blocks = a[0].d.len();
                assert!(w.len() >= blocks * $block_bytes && a.iter().all(|r| sized_k(r, blocks)));
                // SAFETY: as above, for each of the four rows.
                unsafe { simd_k::$four(w, a) }
            }
        };
    }
    safe_k!(q4_k, q4_k_x4, 144);
    safe_k!(q6_k, q6_k_x4, 210);

    macro_rules! safe_tile {
        ($name:ident, $kernel:ident, $block_bytes:expr) => {
            fn $name(
                w: &[u8],
                row_bytes: usize,
                a: &[Q8KRow<'_>; TILE_TOKENS],
            ) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
                let blocks = a[0].d.len();
                assert!(
                    row_bytes >= blocks * $block_bytes
                        && w.len() >= (TILE_ROWS - 1) * row_bytes + blocks * $block_bytes
                        && a.iter().all(|r| sized_k(r, blocks))
                );
                // SAFETY: as for the one-row kernels; every row of the tile and every token's
                // blocks are checked just above.
                unsafe { tile::$kernel::<TILE_ROWS, TILE_TOKENS>(w, row_bytes, a) }
            }
        };
    }
    safe_tile!(q4_k_tile, q4_k_tile, 144);
    safe_tile!(q6_k_tile, q6_k_tile, 210);

    /// AVX2 kernels where there are, the portable ones for the rest.
    pub fn kernel(dtype: GgmlType) -> Kernel {
        match dtype {
            GgmlType::Q8_0 => {
                Kernel::Blocks32(q8_0, Some(q8_0_x4), Some(q8_0_tile), Some(q8_0_rows))
            }
            GgmlType::Q4_0 => {
                Kernel::Blocks32(q4_0, Some(q4_0_x4), Some(q4_0_tile), Some(q4_0_rows))
            }
            GgmlType::Q4_1 => {
                Kernel::Blocks32(q4_1, Some(q4_1_x4), Some(q4_1_tile), Some(q4_1_rows))
            }
            GgmlType::Q5_0 => {
                Kernel::Blocks32(q5_0, Some(q5_0_x4), Some(q5_0_tile), Some(q5_0_rows))
            }
            GgmlType::Q5_1 => {
                Kernel::Blocks32(q5_1, Some(q5_1_x4), Some(q5_1_tile), Some(q5_1_rows))
            }
            GgmlType::Q4_K => Kernel::BlocksK(q4_k, Some(q4_k_x4), Some(q4_k_tile)),
            GgmlType::Q6_K => Kernel::BlocksK(q6_k, Some(q6_k_x4), Some(q6_k_tile)),
            other => super::portable_kernel(other),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512_vnni {
    //! Safe entry points to the AVX-512 VNNI kernels, reachable only through [`super::kernel`]
    //! with `Isa::Avx512Vnni`, which `detected_isa` returns only after checking the CPU (which
    //! then runs the AVX2 kernels too: the types without a VNNI kernel take those).

    use super::super::activations::Q8Row;
    use super::super::avx512 as simd;
    use super::avx2::sized;
    use super::{Kernel, TILE_ROWS, TILE_TOKENS};
    use crate::device::quant::GgmlType;

    /// Q8_0's block size in bytes.
    const Q8_0_BYTES: usize = 34;

    fn q8_0_tile(
        w: &[u8],
        row_bytes: usize,
        a: &[Q8Row<'_>; TILE_TOKENS],
    ) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
        let blocks = a[0].d.len();
        assert!(
            row_bytes >= blocks * Q8_0_BYTES
                && w.len() >= (TILE_ROWS - 1) * row_bytes + blocks * Q8_0_BYTES
                && a.iter().all(|r| sized(r, blocks))
        );
        // SAFETY: only handed out for Isa::Avx512Vnni, which is detected before use; every row
        // of the tile and every token's blocks are checked just above.
        unsafe { simd::q8_0_tile::<TILE_ROWS, TILE_TOKENS>(w, row_bytes, a) }
    }

    fn q8_0(w: &[u8], a: Q8Row<'_>) -> f32 {
        let blocks = a.d.len();
        assert!(w.len() >= blocks * Q8_0_BYTES && sized(&a, blocks));
        // SAFETY: as above; the kernel reads `a.d.len()` blocks of `w` and `a`.
        unsafe { simd::q8_0(w, a) }
    }

    fn q8_0_x4(w: &[u8], a: &[Q8Row<'_>; 4]) -> [f32; 4] {
        let blocks = a[0].d.len();
        assert!(w.len() >= blocks * Q8_0_BYTES && a.iter().all(|r| sized(r, blocks)));
        // SAFETY: as above, for each of the four rows.
        unsafe { simd::q8_0_x4(w, a) }
    }

    /// VNNI kernels for Q8_0, AVX2's table for the rest. One token over a run of rows takes
    /// AVX2's form (two rows sharing each activation load), which has no VNNI version yet.
    pub fn kernel(dtype: GgmlType) -> Kernel {
        let rows = match super::avx2::kernel(dtype) {
            Kernel::Blocks32(_, _, _, rows) => rows,
            _ => None,
        };
        match dtype {
            GgmlType::Q8_0 => Kernel::Blocks32(q8_0, Some(q8_0_x4), Some(q8_0_tile), rows),
            other => super::avx2::kernel(other),
        }
    }
}
