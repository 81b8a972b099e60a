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

/// Instances of the tensor-core prefill kernel: head_dim 16, 32, ..., 128.
pub const PREFILL_HEAD_DIMS: usize = 8;

/// The decode kernel's instance sets, smallest first: (most head_dim, elements per lane, most q
/// heads per warp). Width 64 runs two key rows per warp (`SUB = 2` in the kernel).
pub const DECODE_SETS: [(usize, usize, usize); 3] = [(64, 4, 4), (128, 4, 8), (256, 8, 4)];

/// The head_dims of the tensor-core decode kernel (`paged_attention_decode_tc_bf16_d<D>`).
pub const DECODE_TC_HEAD_DIMS: [usize; 2] = [64, 128];

/// The skinny GEMM's instances (`gemm_skinny_bf16_t<tiles>_k<kwarps>`): token tiles of 8 rows,
/// and warps splitting k (of a block's 8).
pub const SKINNY_TILES: [u32; 4] = [1, 2, 4, 8];
pub const SKINNY_KWARPS: [u32; 4] = [1, 2, 4, 8];

/// Every kernel the backend launches, loaded into one context, for one storage dtype.
pub struct Kernels {
    pub gather_rows: CudaFunction,
    pub rms_norm: CudaFunction,
    pub add_rms_norm: CudaFunction,
    pub qk_norm: CudaFunction,
    pub qk_norm_rope_write_kv: CudaFunction,
    pub rope: CudaFunction,
    pub rope_write_kv: CudaFunction,
    pub write_kv: CudaFunction,
    pub paged_attention: CudaFunction,
    /// `paged_attention_decode_<dtype>_d<width>_h<hc>`, indexed `[set][log2 hc]` by
    /// [`DECODE_SETS`]; the head_dim-64 and -256 sets have no 8-head variant.
    pub decode: [[Option<CudaFunction>; 4]; 3],
    pub decode_merge: CudaFunction,
    /// `paged_attention_decode_tc_bf16_d<D>` per [`DECODE_TC_HEAD_DIMS`]: the tensor-core
    /// decode kernel, loaded for bf16 storage only.
    pub decode_tc: [Option<CudaFunction>; 2],
    /// `paged_attention_prefill_bf16_d<16 (i + 1)>` (the tensor-core prefill kernel, one instance
    /// per head_dim multiple of 16 up to 128), indexed `[head_dim / 16 - 1]`; loaded for bf16
    /// storage only (f32 runs `paged_attention` for every non-decode step).
    pub prefill: [Option<CudaFunction>; PREFILL_HEAD_DIMS],
    /// `gemm_skinny_bf16_t<tiles>_k<kwarps>`, indexed `[tiles][kwarps]` by [`SKINNY_TILES`] and
    /// [`SKINNY_KWARPS`]; loaded for bf16 storage only.
    pub gemm_skinny: Vec<Vec<CudaFunction>>,
    pub silu_mul: CudaFunction,
    pub add_bias: CudaFunction,
    pub sample_rows: CudaFunction,
    pub constrain_rows: CudaFunction,
    pub carry_tokens: CudaFunction,
}

impl Kernels {
    /// Loads every kernel's entry point for storage dtype `dtype` (`"f32"` or `"bf16"`).
    pub fn load(ctx: &Arc<CudaContext>, dtype: &str) -> Result<Self> {
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
        let typed = |file: &str, base: &str| get(file, &format!("{base}_{dtype}"));
        let mut decode: [[Option<CudaFunction>; 4]; 3] = Default::default();
        for (set, &(width, _, max_hc)) in DECODE_SETS.iter().enumerate() {
            for (h, hc) in [1, 2, 4, 8].into_iter().enumerate() {
                if hc <= max_hc {
                    let name = format!("paged_attention_decode_{dtype}_d{width}_h{hc}");
                    decode[set][h] = Some(get("paged_attention_decode", &name)?);
                }
            }
        }
        let mut prefill: [Option<CudaFunction>; PREFILL_HEAD_DIMS] = Default::default();
        let mut decode_tc: [Option<CudaFunction>; 2] = Default::default();
        let mut gemm_skinny = Vec::new();
        if dtype == "bf16" {
            for tiles in SKINNY_TILES {
                let per_split = SKINNY_KWARPS
                    .iter()
                    .map(|kw| get("gemm_skinny", &format!("gemm_skinny_bf16_t{tiles}_k{kw}")));
                gemm_skinny.push(per_split.collect::<Result<Vec<_>>>()?);
            }
            for (f, d) in decode_tc.iter_mut().zip(DECODE_TC_HEAD_DIMS) {
                let name = format!("paged_attention_decode_tc_bf16_d{d}");
                *f = Some(get("paged_attention_decode_tc", &name)?);
            }
            for (i, f) in prefill.iter_mut().enumerate() {
                let name = format!("paged_attention_prefill_bf16_d{}", 16 * (i + 1));
                *f = Some(get("paged_attention_prefill", &name)?);
            }
        }
        Ok(Kernels {
            gather_rows: typed("gather_rows", "gather_rows")?,
            rms_norm: typed("rms_norm", "rms_norm")?,
            add_rms_norm: typed("rms_norm", "add_rms_norm")?,
            qk_norm: typed("qk_norm", "qk_norm")?,
            qk_norm_rope_write_kv: typed("qk_norm", "qk_norm_rope_write_kv")?,
            rope: typed("rope", "rope")?,
            rope_write_kv: typed("rope", "rope_write_kv")?,
            write_kv: typed("kv_cache", "write_kv")?,
            paged_attention: typed("paged_attention", "paged_attention")?,
            decode,
            decode_merge: typed("paged_attention_decode", "paged_attention_merge")?,
            decode_tc,
            prefill,
            gemm_skinny,
            silu_mul: typed("silu_mul", "silu_mul")?,
            add_bias: typed("bias", "add_bias")?,
            sample_rows: typed("sampling", "sample_rows")?,
            constrain_rows: typed("sampling", "constrain_rows")?,
            carry_tokens: get("carry", "carry_tokens")?,
        })
    }

    /// The skinny GEMM instance for `tiles` token tiles and `kwarps` k-splitting warps.
    pub fn skinny(&self, tiles: u32, kwarps: u32) -> Result<&CudaFunction> {
        let t = SKINNY_TILES.iter().position(|&x| x == tiles);
        let k = SKINNY_KWARPS.iter().position(|&x| x == kwarps);
        match (t, k) {
            (Some(t), Some(k)) if t < self.gemm_skinny.len() => Ok(&self.gemm_skinny[t][k]),
            (Some(_), Some(_)) => bail!("the skinny GEMM kernel is built for bf16 storage only"),
            _ => bail!(
                "no skinny GEMM kernel for {tiles} token tiles and {kwarps} k-warps \
                 (tiles {SKINNY_TILES:?}, k-warps {SKINNY_KWARPS:?})"
            ),
        }
    }
}
