//! Which model to run and on which device: the options every command that loads a model shares
//! (`serve`, `generate`, `bench throughput`, `bench decode`, `calibrate`), and opening what they
//! name — the device first, so a machine without one fails at once, before minutes of loading.

use std::path::PathBuf;

use anyhow::{ensure, Result};

use crate::device::cpu::CpuBackend;
use crate::model::default_model::ensure_default_model;
use crate::model::loader::ModelSource;
use crate::model::weight_format::WeightFormat;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// An HF model directory or a .gguf file; the default model (SmolLM2-135M-Instruct) if absent.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to run the model.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// On the CPU: `auto` (the default) keeps a quantised file's weights in their blocks (memory
    /// about the file's size), `f32` expands every weight to f32; the CPU computes in f32 either
    /// way. With --device cuda: how tensors (weights, activations, KV cache) are stored on the
    /// GPU, `bf16` (the default) or `f32`; a quantised file is dequantised at load there.
    #[arg(long, value_parser = ["auto", "bf16", "f32"])]
    pub dtype: Option<String>,
    /// Quantise a float model's weight matrices at load (CPU only): `q8_0` takes about a quarter
    /// of the memory of f32. Already-quantised weights are kept as they are.
    #[arg(long, value_parser = ["q8_0"])]
    pub quantize: Option<String>,
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
        self.weight_format()?;
        if self.device != "cuda" {
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

    /// How the weights are loaded, from `--device`, `--dtype` and `--quantize`; an error for a
    /// combination that means nothing.
    pub fn weight_format(&self) -> Result<WeightFormat> {
        let dtype = self.dtype.as_deref();
        if self.device == "cuda" {
            ensure!(
                dtype != Some("auto"),
                "--dtype auto is for the CPU; on cuda use --dtype bf16 or f32 (quantised weights \
                 are dequantised at load on the GPU)"
            );
            ensure!(
                self.quantize.is_none(),
                "--quantize is for the CPU; the CUDA backend computes on bf16 or f32 weights"
            );
            // The GPU dequantises whatever it is given; f32 is the plain path to it.
            return Ok(WeightFormat::F32);
        }
        ensure!(
            dtype != Some("bf16"),
            "--dtype bf16 needs --device cuda; the CPU backend computes in f32"
        );
        match (dtype, self.quantize.as_deref()) {
            (Some("f32"), Some(q)) => anyhow::bail!(
                "--quantize {q} and --dtype f32 contradict each other: f32 expands every weight"
            ),
            (Some("f32"), None) => Ok(WeightFormat::F32),
            (_, Some(q)) => q.parse(),
            (_, None) => Ok(WeightFormat::Auto),
        }
    }

    /// Opens the model's files (call [`open_device`](Self::open_device) first).
    pub fn open_source(&self) -> Result<ModelSource> {
        let format = self.weight_format()?;
        let path = self.model_path()?;
        let source = ModelSource::open(&path)?.with_weight_format(format);
        tracing::info!(
            path = %path.display(),
            arch = ?source.config.arch,
            weights = %format,
            "loading model"
        );
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    fn format(args: &[&str]) -> Result<WeightFormat> {
        let cli = Cli::try_parse_from([&["tandem"], args].concat())?;
        cli.model.weight_format()
    }

    #[test]
    fn cpu_weights_keep_the_files_form_unless_told_otherwise() {
        assert_eq!(format(&[]).unwrap(), WeightFormat::Auto);
        assert_eq!(format(&["--dtype", "auto"]).unwrap(), WeightFormat::Auto);
        assert_eq!(format(&["--dtype", "f32"]).unwrap(), WeightFormat::F32);
        assert_eq!(format(&["--quantize", "q8_0"]).unwrap(), WeightFormat::Q8_0);
        let both = ["--dtype", "auto", "--quantize", "q8_0"];
        assert_eq!(format(&both).unwrap(), WeightFormat::Q8_0);
        assert_eq!(
            format(&["--device", "cuda", "--dtype", "bf16"]).unwrap(),
            WeightFormat::F32
        );
    }

    #[test]
    fn meaningless_combinations_are_errors() {
        for (args, says) in [
            (&["--dtype", "bf16"][..], "--dtype bf16 needs --device cuda"),
            (&["--dtype", "f32", "--quantize", "q8_0"], "contradict"),
            (
                &["--device", "cuda", "--dtype", "auto"],
                "--dtype auto is for the CPU",
            ),
            (
                &["--device", "cuda", "--quantize", "q8_0"],
                "--quantize is for the CPU",
            ),
            (&["--quantize", "q4_0"], "q4_0"),
        ] {
            let e = format!("{:#}", format(args).unwrap_err());
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
