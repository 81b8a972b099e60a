//! The instruction set the kernels use, detected once.

use std::sync::OnceLock;

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
