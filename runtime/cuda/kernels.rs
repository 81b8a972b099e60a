//! The hand-written kernels (`kernels/*.cu`), compiled to PTX by `build.rs` and embedded here,
//! and the table of functions the backend loads from them.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

/// One `kernels/*.cu` file's PTX, per target architecture.
pub struct KernelFile {
    /// The file stem, e.g. `rms_norm`.
    pub name: &'static str,
    /// PTX for sm_80: loaded on compute capability 8.x (A100, Ada), JIT-compiled by the driver.
    pub sm_80: &'static str,
    /// PTX for sm_90: loaded on compute capability 9.0 and later (H100, H200).
    pub sm_90: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The PTX that suits a device of compute capability `major.minor`.
pub fn ptx_for(file: &KernelFile, major: i32, minor: i32) -> Result<&'static str> {
    match (major, minor) {
        (m, _) if m >= 9 => Ok(file.sm_90),
        (8, _) => Ok(file.sm_80),
        _ => bail!(
            "tandem's CUDA kernels need compute capability 8.0 or later; this GPU has {major}.{minor}"
        ),
    }
}

/// Every kernel the backend launches, loaded into one context.
pub struct Kernels {
    pub gather_rows: CudaFunction,
    pub rms_norm: CudaFunction,
    pub add_rms_norm: CudaFunction,
    pub qk_norm: CudaFunction,
    pub rope: CudaFunction,
    pub write_kv: CudaFunction,
    pub paged_attention: CudaFunction,
    pub silu_mul: CudaFunction,
    pub add_bias: CudaFunction,
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let (major, minor) = ctx.compute_capability()?;
        let mut modules: HashMap<&'static str, Arc<CudaModule>> = HashMap::new();
        for file in KERNEL_FILES {
            let ptx = ptx_for(file, major, minor)?;
            let module = ctx
                .load_module(Ptx::from_src(ptx))
                .with_context(|| format!("loading the PTX of kernels/{}.cu", file.name))?;
            modules.insert(file.name, module);
        }
        let get = |file: &str, func: &str| -> Result<CudaFunction> {
            modules
                .get(file)
                .ok_or_else(|| anyhow!("kernels/{file}.cu was not compiled in"))?
                .load_function(func)
                .with_context(|| format!("kernel {func} in kernels/{file}.cu"))
        };
        Ok(Kernels {
            gather_rows: get("gather_rows", "gather_rows_f32")?,
            rms_norm: get("rms_norm", "rms_norm_f32")?,
            add_rms_norm: get("rms_norm", "add_rms_norm_f32")?,
            qk_norm: get("qk_norm", "qk_norm_f32")?,
            rope: get("rope", "rope_f32")?,
            write_kv: get("kv_cache", "write_kv_f32")?,
            paged_attention: get("paged_attention", "paged_attention_f32")?,
            silu_mul: get("silu_mul", "silu_mul_f32")?,
            add_bias: get("bias", "add_bias_f32")?,
        })
    }
}
