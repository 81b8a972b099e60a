//! The CUDA backend: the hand-written kernels of `kernels/*.cu` (PTX embedded by `build.rs`),
//! launched through cudarc, and cuBLAS for the matrix products.
//!
//! Tensors are stored in the backend's [`DType`] (bf16 or f32; the trait's host side stays f32);
//! every kernel computes and every reduction accumulates in f32.
//! Every launch goes on the backend's one stream; no op allocates device memory (the model sizes
//! its workspace up front), so the forward pass can later be captured in a CUDA graph. Each op
//! checks on the host what the CPU reference op checks (sizes, token ids, positions, slots, block
//! ids) before launching, so a bad step is an error rather than an out-of-bounds access.
//!
//! The CUDA libraries are loaded at run time: a `--features cuda` build runs anywhere, and
//! [`CudaBackend::new`] answers "no CUDA driver found" where there is none.

mod attention;
mod constrain;
mod dtype;
#[cfg(feature = "kernel-emu")]
pub mod emulated;
mod gemm;
mod gemm_args;
mod gemm_lt;
mod gemm_plan;
mod graphs;
pub mod kernels;
mod launch;
mod meta;
mod options;
mod pinned;
mod rope_kv;
mod sampling;
mod step_io;
mod timing;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
pub use cudarc;
use cudarc::cublas::{sys as cublas_sys, CudaBlas};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};

pub use self::attention::DecodePath;
pub use self::dtype::{CudaTensor, DType};
use self::gemm_plan::GemmPlan;
pub use self::gemm_plan::{GemmPath, GemmTuning, SKINNY_MAX_ROWS};
use self::kernels::Kernels;
pub use self::meta::CudaMeta;
use self::options::default_gemm_path;
pub use self::options::CudaOptions;
use super::backend::{AttentionParams, Backend, DeviceSampler, QkNorm, QkvLayout, StepGraphs};
use super::panic::panic_message;
use super::sampling::{DeviceSampling, RowConstraint, Sampled};
use super::step::StepInput;

/// cuBLAS's workspace: 32 MiB, what NVIDIA advises for Hopper.
const BLAS_WORKSPACE: usize = 32 << 20;

/// The most `head_dim` the attention kernel handles (`ATTN_MAX_HEAD_DIM` in paged_attention.cu).
pub const MAX_HEAD_DIM: usize = 256;

/// Whether the CUDA driver library can be loaded. cudarc panics on first use when it cannot, so
/// this is asked before anything touches the driver.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda under its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// The GPU: a context, one stream, a cuBLAS handle on that stream, and the loaded kernels.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    /// The compute stream: every kernel and GEMM.
    stream: Arc<CudaStream>,
    /// Step metadata going up (`step_io.rs`).
    copy_stream: Arc<CudaStream>,
    /// Samples coming back (`step_io.rs`).
    return_stream: Arc<CudaStream>,
    /// A timed event recorded on the compute stream at start-up and the host's clock then: the
    /// timeline's steps are placed on the host clock by their device time since it.
    epoch: (cudarc::driver::CudaEvent, Instant),
    blas: CudaBlas,
    /// cuBLAS's workspace, given up front so no GEMM allocates (a captured graph must not);
    /// declared after the handle, so it is freed after it.
    _blas_workspace: CudaSlice<u8>,
    k: Kernels,
    /// How every tensor of this backend is stored.
    dtype: DType,
    /// Streaming multiprocessors: the decode attention sizes its grid from them.
    sm_count: usize,
    /// How decode steps compute attention.
    decode_path: DecodePath,
    /// Resident blocks per SM of each decode kernel used so far (attention.rs), by handle.
    decode_occupancy: Mutex<std::collections::HashMap<usize, usize>>,
    /// Which kernel computes each product of few rows (gemm_plan.rs).
    gemm: Mutex<GemmPlan>,
    /// The skinny GEMM's split-k partial sums and per-tile counters (zero between launches);
    /// bf16 only.
    skinny_scratch: Option<(CudaSlice<f32>, CudaSlice<u32>)>,
    /// cuBLASLt, for the GEMM tuner's candidates (bf16, where the library is installed).
    lt: Option<gemm_lt::GemmLt>,
    /// Steps that are not pure decode run the general attention kernel even where the
    /// tensor-core prefill kernel applies.
    prefill_general: bool,
    /// Whether decode steps replay captured CUDA graphs: as asked, until a capture fails.
    cuda_graphs: AtomicBool,
    /// Decode steps replayed from graphs so far (`graph_replays`).
    replays: Arc<AtomicU64>,
    /// Whether the engine samples on the device and launches steps ahead.
    device_sampling: bool,
    /// Whether kernels are launched as programmatic dependents (launch.rs): as asked where the
    /// GPU can (compute capability 9.0+, sm_90 PTX loaded), until the driver refuses one.
    pdl: AtomicBool,
}

impl CudaBackend {
    /// Opens device `ordinal`, storing tensors as `dtype`, running as `options` say. Fails with
    /// a plain message (never a panic) when there is no driver, no device, no cuBLAS, or a GPU
    /// older than compute capability 8.0.
    pub fn new(ordinal: usize, dtype: DType, options: CudaOptions) -> Result<Self> {
        #[cfg(feature = "kernel-emu")]
        emulated::install_if_asked()?;
        if !driver_present() {
            bail!("no CUDA driver found; run with --device cpu");
        }
        // cudarc panics if a driver symbol is missing (a driver older than CUDA 13.0): report it.
        let opened = std::panic::catch_unwind(|| Self::open(ordinal, dtype, options))
            .map_err(|p| anyhow!("the CUDA driver failed to load: {}", panic_message(&*p)))?;
        opened
    }

    fn open(ordinal: usize, dtype: DType, options: CudaOptions) -> Result<Self> {
        let count = CudaContext::device_count()
            .map_err(|e| anyhow!("no CUDA device found ({e}); run with --device cpu"))?;
        ensure!(
            (ordinal as i32) < count,
            "no CUDA device {ordinal} (this machine has {count}); run with --device cpu"
        );
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| anyhow!("opening CUDA device {ordinal}: {e}; run with --device cpu"))?;
        // Kernels run on one stream; the copy and return streams touch only the metadata and
        // sample buffers, ordered by this backend's own events (step_io.rs). cudarc's per-buffer
        // event tracking would only add overhead: off before any buffer is made.
        // SAFETY: every cross-stream use of a buffer is ordered by the events in step_io.rs.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        // SAFETY: only tries to dlopen libcublas under its usual names.
        if !unsafe { cublas_sys::is_culib_present() } {
            bail!(
                "cuBLAS (libcublas.so.13) not found; add its folder to LD_LIBRARY_PATH \
                 (e.g. a Python environment's nvidia/cu13/lib), or run with --device cpu"
            );
        }
        let blas = CudaBlas::new(stream.clone()).context("creating the cuBLAS handle")?;
        // Plain f32 arithmetic (no TF32), to match the CPU reference.
        // SAFETY: the handle is live; CUBLAS_DEFAULT_MATH is a valid mode.
        let status = unsafe {
            cublas_sys::cublasSetMathMode(
                *blas.handle(),
                cublas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
            )
        };
        ensure!(
            status == cublas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS,
            "cublasSetMathMode: {status:?}"
        );
        let blas_workspace = stream.alloc_zeros::<u8>(BLAS_WORKSPACE)?;
        // SAFETY: the handle is live; the workspace is a device buffer of the given size that
        // lives as long as the backend (and so the handle).
        let status = unsafe {
            cublas_sys::cublasSetWorkspace_v2(
                *blas.handle(),
                blas_workspace.device_ptr(&stream).0 as *mut std::ffi::c_void,
                BLAS_WORKSPACE,
            )
        };
        ensure!(
            status == cublas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS,
            "cublasSetWorkspace: {status:?}"
        );
        let k = Kernels::load(&ctx, dtype.name())?;
        let pdl_supported = ctx.compute_capability()?.0 >= 9;
        let epoch_event =
            ctx.new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?;
        epoch_event.record(&stream)?;
        epoch_event.synchronize()?;
        let epoch = (epoch_event, Instant::now());
        let sms = ctx.attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )?;
        let skinny_scratch = match dtype {
            DType::Bf16 => Some((
                stream.alloc_zeros::<f32>(gemm_plan::SKINNY_WS_FLOATS)?,
                stream.alloc_zeros::<u32>(gemm_plan::SKINNY_MAX_TILES)?,
            )),
            DType::F32 => None,
        };
        // cuBLASLt only for the products the tuner times (bf16; gemm_plan.rs).
        let lt = match dtype {
            DType::Bf16 => {
                gemm_lt::GemmLt::new(dtype, blas_workspace.device_ptr(&stream).0, BLAS_WORKSPACE)
                    .context("creating the cuBLASLt handle")?
            }
            DType::F32 => None,
        };
        Ok(CudaBackend {
            copy_stream: ctx.new_stream()?,
            return_stream: ctx.new_stream()?,
            epoch,
            _blas_workspace: blas_workspace,
            ctx,
            stream,
            blas,
            k,
            dtype,
            sm_count: sms.max(1) as usize,
            decode_path: options.decode_path,
            decode_occupancy: Mutex::default(),
            gemm: Mutex::new(GemmPlan::new(
                options.gemm.unwrap_or_else(default_gemm_path),
            )),
            skinny_scratch,
            lt,
            prefill_general: options.prefill_general,
            cuda_graphs: AtomicBool::new(options.graphs),
            replays: Arc::default(),
            device_sampling: options.device_sampling,
            pdl: AtomicBool::new(options.pdl && pdl_supported),
        })
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }

    /// Whether decode steps replay captured CUDA graphs.
    pub fn cuda_graphs(&self) -> bool {
        self.cuda_graphs.load(Ordering::Relaxed)
    }

    /// The stream every op of this backend is launched on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all work queued so far; surfaces any asynchronous fault.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize()?;
        self.ctx.check_err()?;
        Ok(())
    }

    /// `(free, total)` bytes of device memory.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.ctx.bind_to_thread()?;
        Ok(cudarc::driver::result::mem_get_info()?)
    }

    /// How this backend stores tensors.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Fills `t` with NaN (tests poison outputs so an unwritten element fails).
    pub fn fill_nan(&self, t: &mut CudaTensor) -> Result<()> {
        let n = t.len();
        self.ctx.bind_to_thread()?;
        let p = self.tp(t);
        let stream = self.stream.cu_stream();
        // SAFETY: p points at n elements of t's dtype owned by t (its buffer holds at least
        // n * size bytes).
        unsafe {
            match t.dtype {
                DType::F32 => {
                    cudarc::driver::sys::cuMemsetD32Async(p, 0x7fc0_0000, n, stream).result()?
                }
                DType::Bf16 => {
                    cudarc::driver::sys::cuMemsetD16Async(p, 0x7fc0, n, stream).result()?
                }
            }
        };
        Ok(())
    }

    /// The device address of a tensor's first element.
    fn tp(&self, t: &CudaTensor) -> u64 {
        self.ptr(&t.buf)
    }

    fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        // Event tracking is off, so the guard cudarc returns does nothing.
        s.device_ptr(&self.stream).0
    }
}

fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| anyhow!("{what} = {n} does not fit the kernels' 32-bit sizes"))
}

impl CudaBackend {
    fn meta_ptr(&self, meta: &CudaMeta, word: usize) -> u64 {
        self.ptr(&meta.dev) + 4 * word as u64
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Meta = CudaMeta;
    // cuBLAS reads the HF row-major layout as it is: a weight is an ordinary tensor.
    type Weight = CudaTensor;

    fn upload_weight(&self, data: &[f32], n: usize, k: usize) -> Result<CudaTensor> {
        ensure!(
            data.len() == n * k,
            "weight has {} elements, expected {n}x{k}",
            data.len()
        );
        self.upload(data)
    }

    fn upload(&self, data: &[f32]) -> Result<CudaTensor> {
        if data.is_empty() {
            return self.zeros(0);
        }
        let bytes = self.dtype.encode(data);
        Ok(CudaTensor {
            buf: self.stream.clone_htod(&bytes)?,
            len: data.len(),
            dtype: self.dtype,
        })
    }

    fn zeros(&self, len: usize) -> Result<CudaTensor> {
        // A zero-byte allocation is an error for the driver: hand out one element instead.
        let len = len.max(1);
        Ok(CudaTensor {
            buf: self.stream.alloc_zeros::<u8>(len * self.dtype.size())?,
            len,
            dtype: self.dtype,
        })
    }

    fn download(&self, t: &CudaTensor, len: usize) -> Result<Vec<f32>> {
        ensure!(
            len <= t.len(),
            "download of {len} elements from a tensor of {}",
            t.len()
        );
        let mut bytes = vec![0u8; len * t.dtype.size()];
        if len > 0 {
            self.stream
                .memcpy_dtoh(&t.buf.slice(..bytes.len()), &mut bytes)?;
        }
        self.synchronize()?;
        Ok(t.dtype.decode(&bytes))
    }

    fn new_meta(&self, max_tokens: usize, max_seqs: usize, layout: QkvLayout) -> Result<CudaMeta> {
        self.new_meta_op(max_tokens, max_seqs, layout)
    }

    fn upload_meta(&self, step: &StepInput, meta: &mut CudaMeta) -> Result<()> {
        self.upload_step_op(step, &[], &[], meta)
    }

    fn embed(
        &self,
        table: &CudaTensor,
        meta: &CudaMeta,
        dim: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        let ids = &meta.host.input_ids;
        self.gather_rows(table, ids, self.meta_ptr(meta, meta.ids_off()), dim, out)
    }

    fn rms_norm(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        ensure!(
            x.len() >= rows * dim && out.len() >= rows * dim && w.len() >= dim,
            "rms_norm: buffers too small for {rows}x{dim}"
        );
        let (xp, wp, op, d) = (self.tp(x), self.tp(w), self.tp(out), u32_of(dim, "dim")?);
        self.launch(&self.k.rms_norm, (u32_of(rows, "rows")?, 1, 1), 256, |b| {
            b.arg(&xp).arg(&wp).arg(&eps).arg(&d).arg(&op);
        })
    }

    fn add_rms_norm(
        &self,
        residual: &mut CudaTensor,
        delta: &CudaTensor,
        w: &CudaTensor,
        eps: f32,
        rows: usize,
        dim: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        let n = rows * dim;
        ensure!(
            residual.len() >= n && delta.len() >= n && out.len() >= n && w.len() >= dim,
            "add_rms_norm: buffers too small for {rows}x{dim}"
        );
        let (rp, dp, wp, op) = (self.tp(residual), self.tp(delta), self.tp(w), self.tp(out));
        let d = u32_of(dim, "dim")?;
        self.launch(
            &self.k.add_rms_norm,
            (u32_of(rows, "rows")?, 1, 1),
            256,
            |b| {
                b.arg(&rp).arg(&dp).arg(&wp).arg(&eps).arg(&d).arg(&op);
            },
        )
    }

    fn linear(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
        rows: usize,
        k: usize,
        n: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        self.linear_op(x, w, bias, rows, k, n, out)
    }

    fn qk_norm(
        &self,
        qkv: &mut CudaTensor,
        q_w: &CudaTensor,
        k_w: &CudaTensor,
        eps: f32,
        rows: usize,
        layout: QkvLayout,
    ) -> Result<()> {
        ensure!(
            qkv.len() >= rows * layout.row_width()
                && q_w.len() >= layout.head_dim
                && k_w.len() >= layout.head_dim,
            "qk_norm: buffers too small"
        );
        let heads = u32_of(layout.num_heads + layout.num_kv_heads, "heads")?;
        let (p, qp, kp) = (self.tp(qkv), self.tp(q_w), self.tp(k_w));
        let (nh, nkv, hd) = (
            layout.num_heads as u32,
            layout.num_kv_heads as u32,
            layout.head_dim as u32,
        );
        // 4 warps per block, one head per warp.
        self.launch(
            &self.k.qk_norm,
            (u32_of(rows, "rows")?, heads.div_ceil(4), 1),
            128,
            |b| {
                b.arg(&p)
                    .arg(&qp)
                    .arg(&kp)
                    .arg(&eps)
                    .arg(&nh)
                    .arg(&nkv)
                    .arg(&hd);
            },
        )
    }

    fn rope(
        &self,
        qkv: &mut CudaTensor,
        cos_sin: &CudaTensor,
        meta: &CudaMeta,
        layout: QkvLayout,
    ) -> Result<()> {
        self.rope_op(qkv, cos_sin, meta, layout)
    }

    fn write_kv(
        &self,
        qkv: &CudaTensor,
        k_cache: &mut CudaTensor,
        v_cache: &mut CudaTensor,
        meta: &CudaMeta,
        params: &AttentionParams,
    ) -> Result<()> {
        self.write_kv_op(qkv, k_cache, v_cache, meta, params)
    }

    fn rope_write_kv(
        &self,
        qkv: &mut CudaTensor,
        rows: usize,
        qk_norm: Option<QkNorm<'_, CudaTensor>>,
        cos_sin: &CudaTensor,
        k_cache: &mut CudaTensor,
        v_cache: &mut CudaTensor,
        meta: &CudaMeta,
        params: &AttentionParams,
    ) -> Result<()> {
        self.rope_write_kv_op(qkv, rows, qk_norm, cos_sin, k_cache, v_cache, meta, params)
    }

    fn attention(
        &self,
        qkv: &CudaTensor,
        k_cache: &CudaTensor,
        v_cache: &CudaTensor,
        meta: &CudaMeta,
        p: &AttentionParams,
        out: &mut CudaTensor,
    ) -> Result<()> {
        self.attention_op(qkv, k_cache, v_cache, meta, p, out)
    }

    fn silu_mul(
        &self,
        gate_up: &CudaTensor,
        rows: usize,
        inter: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        ensure!(
            gate_up.len() >= rows * 2 * inter && out.len() >= rows * inter,
            "silu_mul: buffers too small"
        );
        let (gp, op, i32_) = (self.tp(gate_up), self.tp(out), u32_of(inter, "inter")?);
        // One 16-byte vector per thread where rows allow it (see silu_mul.cu).
        let per = self.dtype.vector_elems(i32_);
        self.launch(
            &self.k.silu_mul,
            (u32_of(rows, "rows")?, i32_.div_ceil(256 * per), 1),
            256,
            |b| {
                b.arg(&gp).arg(&i32_).arg(&op);
            },
        )
    }

    fn gather_logit_rows(
        &self,
        x: &CudaTensor,
        meta: &CudaMeta,
        dim: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        let idx = &meta.host.logits_indices;
        self.gather_rows(x, idx, self.meta_ptr(meta, meta.logits_off()), dim, out)
    }

    // Steps sampled on the device and launched ahead: step_io.rs, graphs.rs, sampling.rs.

    fn finish_step(&self, meta: &mut CudaMeta) -> Result<()> {
        self.finish_step_op(meta)
    }

    fn device_sampler(&self) -> Option<&dyn DeviceSampler<Self>> {
        self.device_sampling
            .then_some(self as &dyn DeviceSampler<Self>)
    }

    fn step_graphs(&self) -> Option<&dyn StepGraphs<Self>> {
        self.cuda_graphs().then_some(self as &dyn StepGraphs<Self>)
    }
}

impl DeviceSampler<CudaBackend> for CudaBackend {
    fn upload_step(
        &self,
        step: &StepInput,
        carry: &[(u32, u32)],
        sampling: &[DeviceSampling],
        meta: &mut CudaMeta,
    ) -> Result<()> {
        self.upload_step_op(step, carry, sampling, meta)
    }

    fn carry_tokens(&self, meta: &mut CudaMeta, prev: &CudaMeta) -> Result<()> {
        self.carry_tokens_op(meta, prev)
    }

    fn sample_launch(
        &self,
        logits: &CudaTensor,
        vocab: usize,
        rows: usize,
        constraints: &[RowConstraint],
        meta: &mut CudaMeta,
    ) -> Result<()> {
        self.sample_launch_op(logits, vocab, rows, constraints, meta)
    }

    fn step_ready(&self, meta: &CudaMeta) -> bool {
        self.step_ready_op(meta)
    }

    fn collect_samples(
        &self,
        meta: &mut CudaMeta,
        sampling: &[DeviceSampling],
        out: &mut Vec<Sampled>,
    ) -> Result<Option<(Instant, Instant)>> {
        self.collect_op(meta, sampling, out)
    }
}

impl StepGraphs<CudaBackend> for CudaBackend {
    fn graph_shape(&self, step: &StepInput, max_rows: usize) -> Option<(usize, usize)> {
        self.graph_shape_op(step, max_rows)
    }

    fn begin_ops(&self, meta: &mut CudaMeta, graph: bool) -> Result<bool> {
        self.begin_ops_op(meta, graph)
    }

    fn end_ops(&self, meta: &mut CudaMeta, ok: bool) -> Result<()> {
        self.end_ops_op(meta, ok)
    }
}

impl CudaBackend {
    /// `out[i] = table[index[i]]`; `index` is the host copy of the device words at `index_ptr`.
    fn gather_rows(
        &self,
        table: &CudaTensor,
        index: &[u32],
        index_ptr: u64,
        dim: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        ensure!(dim > 0, "gather of rows of width 0");
        let table_rows = table.len() / dim;
        ensure!(out.len() >= index.len() * dim, "gather: output too small");
        if let Some(&id) = index.iter().find(|&&id| id as usize >= table_rows) {
            bail!("token id {id} is outside the table of {table_rows} rows");
        }
        let (tp, op) = (self.tp(table), self.tp(out));
        let (tr, d) = (u32_of(table_rows, "table rows")?, u32_of(dim, "dim")?);
        self.launch(&self.k.gather_rows, (index.len() as u32, 1, 1), 256, |b| {
            b.arg(&tp).arg(&index_ptr).arg(&tr).arg(&d).arg(&op);
        })
    }
}
