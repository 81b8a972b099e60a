//! Which model to run and on which device: the options every command that loads a model shares
//! (`serve`, `generate`, `bench throughput`, `bench decode`, `calibrate`), and opening what they
//! name — the device first, so a machine without one fails at once, before minutes of loading.

use std::path::PathBuf;

use anyhow::{ensure, Result};

use crate::device::cpu::CpuBackend;
use crate::model::default_model::ensure_default_model;
use crate::model::loader::ModelSource;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// An HF model directory or a .gguf file; the default model (SmolLM2-135M-Instruct) if absent.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to run the model.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// How tensors (weights, activations, KV cache) are stored on the GPU: bf16 (the default
    /// with --device cuda) or f32. The CPU backend computes in f32 only.
    #[arg(long, value_parser = ["bf16", "f32"])]
    pub dtype: Option<String>,
    /// Run every decode step eagerly instead of replaying captured CUDA graphs (CUDA only).
    #[arg(long)]
    pub no_cuda_graphs: bool,
    /// Sample on the host from downloaded logits instead of on the device, one step at a time
    /// (no step launched ahead) (CUDA only; for comparison and debugging).
    #[arg(long)]
    pub host_sampling: bool,
    /// Launch each kernel only once the one before it has finished, instead of as its
    /// programmatic dependent, which the GPU may schedule while the one before is still running
    /// (CUDA on compute capability 9.0+ only; for comparison and debugging).
    #[arg(long)]
    pub no_pdl: bool,
    /// How the products of a decode step's few rows are computed on the GPU: `auto` (each shape
    /// timed once on first use, cuBLAS against tandem's skinny kernel, the faster kept; bf16) or
    /// `cublas` (CUDA only).
    #[arg(long, value_enum)]
    pub gemm: Option<GemmChoice>,
}

/// `--gemm`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmChoice {
    Auto,
    Cublas,
}

/// The backend [`ModelArgs`] names, opened. Made once per process and moved straight into a
/// model, so the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Device {
    Cpu(CpuBackend),
    #[cfg(feature = "cuda")]
    Cuda(crate::device::cuda::CudaBackend),
}

impl ModelArgs {
    /// Opens the device: a clear error for a combination that cannot run (bf16 on the CPU, CUDA
    /// in a build without it, no driver or GPU).
    pub fn open_device(&self) -> Result<Device> {
        self.open_device_with(false)
    }

    /// [`open_device`](Self::open_device), with decode steps' attention pinned to the scalar
    /// decode kernel where `scalar_decode` (`tandem bench decode --decode-attention scalar`; it
    /// changes nothing on the CPU).
    pub fn open_device_with(&self, scalar_decode: bool) -> Result<Device> {
        if self.device != "cuda" {
            ensure!(
                self.dtype.as_deref() != Some("bf16"),
                "--dtype bf16 needs --device cuda; the CPU backend computes in f32"
            );
            return Ok(Device::Cpu(CpuBackend::new()));
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = scalar_decode;
            anyhow::bail!("this build of tandem has no CUDA support; run with --device cpu");
        }
        #[cfg(feature = "cuda")]
        {
            use crate::device::cuda::{CudaBackend, CudaOptions, DecodePath, GemmPath};
            let dtype = self.dtype.as_deref().unwrap_or("bf16").parse()?;
            let options = CudaOptions {
                graphs: !self.no_cuda_graphs,
                device_sampling: !self.host_sampling,
                pdl: !self.no_pdl,
                gemm: self.gemm.map(|g| match g {
                    GemmChoice::Auto => GemmPath::Auto,
                    GemmChoice::Cublas => GemmPath::Cublas,
                }),
                decode_path: if scalar_decode {
                    DecodePath::Scalar
                } else {
                    DecodePath::Auto
                },
                ..CudaOptions::default()
            };
            let backend = CudaBackend::new(0, dtype, options)?;
            tracing::info!(
                device = %backend.device_name()?,
                %dtype,
                cuda_graphs = backend.cuda_graphs(),
                device_sampling = !self.host_sampling,
                pdl = backend.pdl(),
                gemm = ?backend.gemm_path(),
                "running on CUDA"
            );
            Ok(Device::Cuda(backend))
        }
    }

    /// `--model`, or the default model (fetched on first use).
    pub fn model_path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(p) => Ok(p.clone()),
            None => ensure_default_model(),
        }
    }

    /// Opens the model's files (call [`open_device`](Self::open_device) first).
    pub fn open_source(&self) -> Result<ModelSource> {
        let path = self.model_path()?;
        let source = ModelSource::open(&path)?;
        tracing::info!(path = %path.display(), arch = ?source.config.arch, "loading model");
        Ok(source)
    }
}
