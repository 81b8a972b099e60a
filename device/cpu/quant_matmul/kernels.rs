//! Which dot-product kernel multiplies a weight type, for the instruction set this CPU has
//! (detected once).

use std::sync::OnceLock;

use super::activations::{Q8KRow, Q8Row};
use super::portable;
use crate::device::quant::GgmlType;

/// One weight row's raw blocks against one quantised activation row.
pub type Dot32 = fn(&[u8], Q8Row<'_>) -> f32;
pub type DotK = fn(&[u8], Q8KRow<'_>) -> f32;

/// How rows of one weight type are multiplied.
#[derive(Clone, Copy)]
pub enum Kernel {
    /// Against 32-element int8 activation blocks.
    Blocks32(Dot32),
    /// Against 256-element int8 activation blocks with per-16 sums (the K-quants).
    BlocksK(DotK),
    /// No block kernel: rows are dequantised to f32 (the float types, types not done yet).
    Float,
}

/// The instruction sets with kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Portable,
    /// AVX2 with FMA and F16C (every AVX2 CPU has the latter two).
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

/// The best instruction set this CPU runs, detected on first use.
pub fn detected_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
        Isa::Portable
    })
}

/// The instruction sets this CPU can run (for tests comparing them).
#[cfg(test)]
pub fn available_isas() -> Vec<Isa> {
    let mut isas = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    if detected_isa() == Isa::Avx2 {
        isas.push(Isa::Avx2);
    }
    isas
}

/// The kernel for `dtype` on `isa`. `isa` must be one this CPU runs ([`detected_isa`] or
/// [`Isa::Portable`]): the AVX2 kernels are only safe to call where it was detected.
pub fn kernel(isa: Isa, dtype: GgmlType) -> Kernel {
    match isa {
        Isa::Portable => portable_kernel(dtype),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::kernel(dtype),
    }
}

fn portable_kernel(dtype: GgmlType) -> Kernel {
    match dtype {
        GgmlType::Q8_0 => Kernel::Blocks32(portable::q8_0),
        GgmlType::Q4_0 => Kernel::Blocks32(portable::q4_0),
        GgmlType::Q4_1 => Kernel::Blocks32(portable::q4_1),
        _ => Kernel::Float,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Safe entry points to the AVX2 kernels, reachable only through [`super::kernel`] with
    //! [`super::Isa::Avx2`], which [`super::detected_isa`] returns only after checking the CPU.

    use super::super::activations::{Q8Row, QK32};
    use super::super::avx2 as simd;
    use super::Kernel;
    use crate::device::quant::GgmlType;

    macro_rules! safe {
        ($name:ident, $block_bytes:expr) => {
            fn $name(w: &[u8], a: Q8Row<'_>) -> f32 {
                let blocks = a.d.len();
                assert!(w.len() >= blocks * $block_bytes && a.qs.len() >= blocks * QK32);
                // SAFETY: only handed out for Isa::Avx2, which is detected before use; the
                // kernel reads `a.d.len()` blocks of `w` and `a.qs`, both checked just above.
                unsafe { simd::$name(w, a) }
            }
        };
    }
    safe!(q8_0, 34);
    safe!(q4_0, 18);
    safe!(q4_1, 20);

    pub fn kernel(dtype: GgmlType) -> Kernel {
        match dtype {
            GgmlType::Q8_0 => Kernel::Blocks32(q8_0),
            GgmlType::Q4_0 => Kernel::Blocks32(q4_0),
            GgmlType::Q4_1 => Kernel::Blocks32(q4_1),
            _ => Kernel::Float,
        }
    }
}
