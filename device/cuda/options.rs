//! How a [`super::CudaBackend`] runs: the choices fixed when it is made.

use super::{DecodePath, GemmPath};

/// Tuning on a GPU; cuBLAS on the emulated device, whose timings would pick at random.
pub(super) fn default_gemm_path() -> GemmPath {
    #[cfg(feature = "kernel-emu")]
    if super::emulated::active() {
        return GemmPath::Cublas;
    }
    GemmPath::Auto
}

/// How a [`super::CudaBackend`] runs, fixed when it is made. The default is what `tandem serve`
/// runs with; the command-line switches (`--no-cuda-graphs`, `--host-sampling`, `--no-pdl`,
/// `--gemm`) and the tests and benchmarks that compare paths change one field each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaOptions {
    /// Decode steps replay captured CUDA graphs (a failed capture still turns them off).
    pub graphs: bool,
    /// Steps are sampled on the device and launched ahead; off, the engine downloads logits
    /// and samples on the host, one step at a time.
    pub device_sampling: bool,
    /// Kernels are launched as programmatic dependents of the kernel before them, where the GPU
    /// can (compute capability 9.0+; see launch.rs).
    pub pdl: bool,
    /// How products of few rows are computed; `None`: tuning on a GPU, cuBLAS on the emulated
    /// device.
    pub gemm: Option<GemmPath>,
    /// How decode steps compute attention.
    pub decode_path: DecodePath,
    /// Steps that are not pure decode run the general attention kernel even where the
    /// tensor-core prefill kernel applies.
    pub prefill_general: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            graphs: true,
            device_sampling: true,
            pdl: true,
            gemm: None,
            decode_path: DecodePath::Auto,
            prefill_general: false,
        }
    }
}
