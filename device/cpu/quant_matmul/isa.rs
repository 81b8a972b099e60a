//! The instruction set the kernels use, detected once.

use std::sync::OnceLock;

/// The instruction sets with kernels, in rising order: each one's CPUs run every one below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    /// AVX2 with FMA and F16C (every AVX2 CPU has the latter two).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2's set plus AVX-512 F/BW/VL and VNNI (`vpdpbusd`: u8 × i8 products summed into i32
    /// lanes in one instruction).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

/// Environment variable that caps the instruction set (`portable`, `avx2`, `avx512vnni`), for
/// A/B measurements and for CPUs where a wider set is slower (e.g. AVX-512 downclocking).
pub const ISA_ENV: &str = "TANDEM_CPU_ISA";

/// The best instruction set this CPU runs, lowered to [`ISA_ENV`]'s if that names a lower one;
/// detected on first use.
pub fn detected_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let hardware = hardware_isa();
        let Ok(wanted) = std::env::var(ISA_ENV) else {
            return hardware;
        };
        match parse_isa(&wanted) {
            Some(cap) => cap.min(hardware),
            None => {
                tracing::warn!(
                    "{ISA_ENV}={wanted:?} is not one of portable, avx2, avx512vnni; using {hardware:?}"
                );
                hardware
            }
        }
    })
}

/// The instruction set named `name` (case-insensitive), if it is one this build has.
fn parse_isa(name: &str) -> Option<Isa> {
    match name.trim().to_ascii_lowercase().as_str() {
        "portable" => Some(Isa::Portable),
        #[cfg(target_arch = "x86_64")]
        "avx2" => Some(Isa::Avx2),
        #[cfg(target_arch = "x86_64")]
        "avx512vnni" | "avx512" | "vnni" => Some(Isa::Avx512Vnni),
        _ => None,
    }
}

/// The best instruction set the CPU runs, whatever [`ISA_ENV`] says.
fn hardware_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
        {
            return Isa::Avx512Vnni;
        }
        return Isa::Avx2;
    }
    Isa::Portable
}

/// The instruction sets this CPU can run (for tests comparing them), whatever [`ISA_ENV`] says.
#[cfg(test)]
pub fn available_isas() -> Vec<Isa> {
    let hardware = hardware_isa();
    let mut isas = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    isas.extend([Isa::Avx2, Isa::Avx512Vnni]);
    isas.retain(|&isa| isa <= hardware);
    isas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_names_parse_and_unknown_ones_do_not() {
        assert_eq!(parse_isa("portable"), Some(Isa::Portable));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(parse_isa(" AVX2 "), Some(Isa::Avx2));
            assert_eq!(parse_isa("avx512vnni"), Some(Isa::Avx512Vnni));
        }
        assert_eq!(parse_isa("sse9"), None);
        assert_eq!(parse_isa(""), None);
    }
}
