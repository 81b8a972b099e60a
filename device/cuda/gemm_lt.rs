//! cuBLASLt's algorithms as candidates for the GEMM tuner (gemm_plan.rs). cuBLAS's GemmEx runs
//! the first algorithm its heuristic names, with tiles shaped for many rows: on a decode step's
//! products (a few rows, 8–130 MB of weights) that leaves most SMs idle. cuBLASLt lists several
//! algorithms for a shape and lets k be split over blocks (partial sums in the workspace), which
//! fills the GPU. The tuner times each listed one, and k-splits of the first, on the real
//! operands, after checking its output against cuBLAS's: library code, so no new kernel to trust,
//! and never slower than cuBLAS, which stays a candidate.
//!
//! An algorithm is picked at one row count and kept for the others of its row tile; cuBLASLt
//! may not take it at another (a tile limited to some shapes, a larger workspace), so each
//! (shape, algorithm) is checked once with `cublasLtMatmulAlgoCheck`, and where it fails the
//! product goes to cuBLAS instead.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Result;
use cudarc::cublaslt::sys as lt;

use super::gemm_args::GemmArgs;
use super::DType;

/// Algorithms asked of the heuristic for each shape.
const HEURISTIC_ALGOS: usize = 8;

/// The k-splits tried on the heuristic's first algorithm.
const SPLITS: [u32; 4] = [2, 4, 8, 16];

/// The operand alignment promised to the heuristic, and checked before each call.
const ALIGN: u32 = 16;

/// One cuBLASLt algorithm, with what names it in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LtAlgo {
    algo: lt::cublasLtMatmulAlgo_t,
    /// Its place among the shape's candidates (heuristic order, then the k-splits).
    rank: u32,
    id: i32,
    tile: u32,
    splits: u32,
}

impl std::fmt::Display for LtAlgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let LtAlgo {
            rank,
            id,
            tile,
            splits,
            ..
        } = self;
        write!(f, "lt{rank}_a{id}_t{tile}_s{splits}")
    }
}

/// (n features, k, rows): what the descriptors of a product depend on.
type LtKey = (usize, usize, usize);

/// The descriptors of one product shape: out[rows, n] = x[rows, k] · wᵀ, which read column-major
/// (as cuBLASLt does) is outᵀ[n, rows] = w'ᵀ · xᵀ with w' = w stored k x n.
struct LtShape {
    op: lt::cublasLtMatmulDesc_t,
    /// w: stored k x n (ld k), transposed by the operation.
    a: lt::cublasLtMatrixLayout_t,
    /// x: k x rows (ld k).
    b: lt::cublasLtMatrixLayout_t,
    /// out: n x rows (ld n), both C and D.
    c: lt::cublasLtMatrixLayout_t,
    /// Algorithms checked against this shape: whether cuBLASLt takes them within the workspace.
    checked: Vec<(lt::cublasLtMatmulAlgo_t, bool)>,
}

impl LtShape {
    fn new(ty: lt::cudaDataType, (n, k, rows): LtKey) -> Result<LtShape> {
        let mut shape = LtShape {
            op: std::ptr::null_mut(),
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            checked: Vec::new(),
        };
        // Filled one by one, so that Drop frees what was made if a later call fails.
        // SAFETY: each call writes the handle it creates into a live field.
        unsafe {
            lt::cublasLtMatmulDescCreate(
                &mut shape.op,
                lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                lt::cudaDataType::CUDA_R_32F,
            )
            .result()?;
            let transa = cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T as i32;
            lt::cublasLtMatmulDescSetAttribute(
                shape.op,
                lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&transa as *const i32).cast(),
                std::mem::size_of::<i32>(),
            )
            .result()?;
            let (n, k, rows) = (n as u64, k as u64, rows as u64);
            lt::cublasLtMatrixLayoutCreate(&mut shape.a, ty, k, n, k as i64).result()?;
            lt::cublasLtMatrixLayoutCreate(&mut shape.b, ty, k, rows, k as i64).result()?;
            lt::cublasLtMatrixLayoutCreate(&mut shape.c, ty, n, rows, n as i64).result()?;
        }
        Ok(shape)
    }

    /// Whether cuBLASLt runs `algo` on this shape within `workspace` bytes (asked once).
    fn takes(
        &mut self,
        handle: lt::cublasLtHandle_t,
        algo: &lt::cublasLtMatmulAlgo_t,
        workspace: usize,
    ) -> bool {
        if let Some(&(_, ok)) = self.checked.iter().find(|(a, _)| a == algo) {
            return ok;
        }
        let mut result = std::mem::MaybeUninit::<lt::cublasLtMatmulHeuristicResult_t>::zeroed();
        // SAFETY: the handle and descriptors are live; `result` has room for one result.
        let status = unsafe {
            lt::cublasLtMatmulAlgoCheck(
                handle,
                self.op,
                self.a,
                self.b,
                self.c,
                self.c,
                algo,
                result.as_mut_ptr(),
            )
        };
        // SAFETY: zero-initialised plain data, written by the check where it succeeded.
        let result = unsafe { result.assume_init() };
        let ok = status == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS
            && result.state == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS
            && result.workspaceSize <= workspace;
        self.checked.push((*algo, ok));
        ok
    }
}

impl Drop for LtShape {
    fn drop(&mut self) {
        // SAFETY: each descriptor was made by LtShape::new (or is null) and is freed once;
        // failures leave nothing to do.
        unsafe {
            for layout in [self.a, self.b, self.c] {
                if !layout.is_null() {
                    let _ = lt::cublasLtMatrixLayoutDestroy(layout);
                }
            }
            if !self.op.is_null() {
                let _ = lt::cublasLtMatmulDescDestroy(self.op);
            }
        }
    }
}

/// A heuristic search preference, freed on drop.
struct Preference(lt::cublasLtMatmulPreference_t);

impl Preference {
    fn new(workspace: usize) -> Result<Preference> {
        let mut pref = Preference(std::ptr::null_mut());
        // SAFETY: writes the created handle into `pref`, then sets attributes of the types the
        // documentation gives (u64 workspace bytes, u32 alignments).
        unsafe {
            lt::cublasLtMatmulPreferenceCreate(&mut pref.0).result()?;
            let bytes = workspace as u64;
            lt::cublasLtMatmulPreferenceSetAttribute(
                pref.0,
                lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&bytes as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
            .result()?;
            use lt::cublasLtMatmulPreferenceAttributes_t::*;
            for attr in [
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
            ] {
                lt::cublasLtMatmulPreferenceSetAttribute(
                    pref.0,
                    attr,
                    (&ALIGN as *const u32).cast(),
                    std::mem::size_of::<u32>(),
                )
                .result()?;
            }
        }
        Ok(pref)
    }
}

impl Drop for Preference {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: made by Preference::new, freed once.
            let _ = unsafe { lt::cublasLtMatmulPreferenceDestroy(self.0) };
        }
    }
}

/// One u32/i32 configuration attribute of an algorithm (0 where cuBLASLt does not say).
fn config(algo: &lt::cublasLtMatmulAlgo_t, attr: lt::cublasLtMatmulAlgoConfigAttributes_t) -> u32 {
    let mut v = 0u32;
    let mut written = 0usize;
    // SAFETY: `v` has the 4 bytes every attribute asked here (ID, TILE_ID, SPLITK_NUM) takes.
    let status = unsafe {
        lt::cublasLtMatmulAlgoConfigGetAttribute(
            algo,
            attr,
            (&mut v as *mut u32).cast(),
            std::mem::size_of::<u32>(),
            &mut written,
        )
    };
    if status == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        v
    } else {
        0
    }
}

/// `algo` with k split `splits` ways, partial sums reduced in f32 in the workspace.
fn with_splits(algo: &lt::cublasLtMatmulAlgo_t, splits: u32) -> Result<lt::cublasLtMatmulAlgo_t> {
    let mut split = *algo;
    let scheme = lt::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE as u32;
    // SAFETY: `split` is a copy of an algorithm cuBLASLt made; both attributes are u32.
    unsafe {
        lt::cublasLtMatmulAlgoConfigSetAttribute(
            &mut split,
            lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
            (&splits as *const u32).cast(),
            std::mem::size_of::<u32>(),
        )
        .result()?;
        lt::cublasLtMatmulAlgoConfigSetAttribute(
            &mut split,
            lt::cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
            (&scheme as *const u32).cast(),
            std::mem::size_of::<u32>(),
        )
        .result()?;
    }
    Ok(split)
}

/// The cuBLASLt handle, the workspace it may use, and the descriptors made so far.
pub(super) struct GemmLt {
    handle: lt::cublasLtHandle_t,
    ty: lt::cudaDataType,
    workspace: u64,
    workspace_bytes: usize,
    shapes: Mutex<HashMap<LtKey, LtShape>>,
    /// Calls handed back to cuBLAS (an algorithm not taken at a call's shape, an operand less
    /// aligned than promised).
    fallbacks: AtomicUsize,
}

// SAFETY: cuBLASLt's handle may be used from any thread; the descriptors are only touched with
// the `shapes` lock held, and the workspace is device memory used in stream order.
unsafe impl Send for GemmLt {}
unsafe impl Sync for GemmLt {}

impl GemmLt {
    /// A handle for products of `dtype` using `workspace_bytes` of device memory at `workspace`
    /// (shared with cuBLAS: both run on the backend's one stream), or None where cuBLASLt is
    /// not installed.
    pub(super) fn new(
        dtype: DType,
        workspace: u64,
        workspace_bytes: usize,
    ) -> Result<Option<Self>> {
        // SAFETY: only tries to dlopen libcublasLt under its usual names.
        if !unsafe { lt::is_culib_present() } {
            tracing::warn!("cuBLASLt not found: GEMM tuning times cuBLAS and tandem's kernel only");
            return Ok(None);
        }
        let mut handle = std::ptr::null_mut();
        // SAFETY: writes the created handle.
        unsafe { lt::cublasLtCreate(&mut handle) }.result()?;
        let ty = match dtype {
            DType::Bf16 => lt::cudaDataType::CUDA_R_16BF,
            DType::F32 => lt::cudaDataType::CUDA_R_32F,
        };
        Ok(Some(GemmLt {
            handle,
            ty,
            workspace,
            workspace_bytes,
            shapes: Mutex::new(HashMap::new()),
            fallbacks: AtomicUsize::new(0),
        }))
    }

    /// Runs `f` on the descriptors of shape `key`, made on first use.
    fn with_shape<R>(&self, key: LtKey, f: impl FnOnce(&mut LtShape) -> Result<R>) -> Result<R> {
        // A panic while holding the lock leaves valid descriptors.
        let mut shapes = self.shapes.lock().unwrap_or_else(|p| p.into_inner());
        let shape = match shapes.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(LtShape::new(self.ty, key)?),
        };
        f(shape)
    }

    /// The algorithms to time for this product: the heuristic's (up to [`HEURISTIC_ALGOS`]) and
    /// its first one's k-splits ([`SPLITS`]), each one cuBLASLt takes within the workspace.
    pub(super) fn candidates(&self, a: &GemmArgs) -> Result<Vec<LtAlgo>> {
        let (handle, workspace) = (self.handle, self.workspace_bytes);
        self.with_shape((a.n, a.k, a.rows), |shape| {
            let pref = Preference::new(workspace)?;
            let mut results: Vec<lt::cublasLtMatmulHeuristicResult_t> =
                // SAFETY: plain data, zero is a valid bit pattern; overwritten by the query.
                vec![unsafe { std::mem::zeroed() }; HEURISTIC_ALGOS];
            let mut returned = 0i32;
            // SAFETY: handle, descriptors and preference are live; `results` has room for the
            // count asked.
            let status = unsafe {
                lt::cublasLtMatmulAlgoGetHeuristic(
                    handle,
                    shape.op,
                    shape.a,
                    shape.b,
                    shape.c,
                    shape.c,
                    pref.0,
                    HEURISTIC_ALGOS as i32,
                    results.as_mut_ptr(),
                    &mut returned,
                )
            };
            // "Not supported" is an empty list, not a failure.
            if status == lt::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED {
                return Ok(Vec::new());
            }
            status.result()?;
            results.truncate(returned.clamp(0, HEURISTIC_ALGOS as i32) as usize);
            let mut algos: Vec<lt::cublasLtMatmulAlgo_t> = results
                .iter()
                .filter(|r| {
                    r.state == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                        && r.workspaceSize <= workspace
                })
                .map(|r| r.algo)
                .collect();
            if let Some(first) = algos.first().copied() {
                for splits in SPLITS {
                    // An algorithm that cannot be split says so here or in the check.
                    if let Ok(split) = with_splits(&first, splits) {
                        if shape.takes(handle, &split, workspace) {
                            algos.push(split);
                        }
                    }
                }
            }
            let mut seen = Vec::new();
            for algo in algos {
                if !seen.contains(&algo) {
                    if !shape.checked.iter().any(|(c, _)| *c == algo) {
                        shape.checked.push((algo, true));
                    }
                    seen.push(algo);
                }
            }
            use lt::cublasLtMatmulAlgoConfigAttributes_t::*;
            Ok(seen
                .into_iter()
                .enumerate()
                .map(|(rank, algo)| LtAlgo {
                    algo,
                    rank: rank as u32,
                    id: config(&algo, CUBLASLT_ALGO_CONFIG_ID) as i32,
                    tile: config(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                    splits: config(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM).max(1),
                })
                .collect())
        })
    }

    /// Queues out = x · wᵀ (no bias) with `algo` on `stream`; false, with nothing queued, where
    /// cuBLASLt does not take `algo` for this shape or an operand is less aligned than promised.
    pub(super) fn matmul(&self, algo: &LtAlgo, a: &GemmArgs, stream: *mut c_void) -> Result<bool> {
        let fall_back = || {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("gemm {}x{}x{}: {algo} not taken; cuBLAS", a.rows, a.n, a.k);
            Ok(false)
        };
        if [a.x, a.w, a.out]
            .iter()
            .any(|p| !p.is_multiple_of(u64::from(ALIGN)))
        {
            return fall_back();
        }
        let (handle, workspace) = (self.handle, self.workspace_bytes);
        self.with_shape((a.n, a.k, a.rows), |shape| {
            if !shape.takes(handle, &algo.algo, workspace) {
                return fall_back();
            }
            let (alpha, beta) = (1.0f32, 0.0f32);
            // SAFETY: linear_op checked that x, w and out hold the shape's elements, all in
            // this handle's dtype; the algorithm was checked against the shape and fits the
            // workspace, which lives as long as the backend; alpha and beta are f32 as
            // CUBLAS_COMPUTE_32F wants and are read during the call.
            unsafe {
                lt::cublasLtMatmul(
                    handle,
                    shape.op,
                    (&alpha as *const f32).cast(),
                    a.w as *const c_void,
                    shape.a,
                    a.x as *const c_void,
                    shape.b,
                    (&beta as *const f32).cast(),
                    a.out as *const c_void,
                    shape.c,
                    a.out as *mut c_void,
                    shape.c,
                    &algo.algo,
                    self.workspace as *mut c_void,
                    self.workspace_bytes,
                    stream as lt::cudaStream_t,
                )
            }
            .result()?;
            Ok(true)
        })
    }
}

impl GemmLt {
    /// How many calls [`GemmLt::matmul`] handed back to cuBLAS so far.
    pub(super) fn fallbacks(&self) -> usize {
        self.fallbacks.load(Ordering::Relaxed)
    }
}

impl Drop for GemmLt {
    fn drop(&mut self) {
        // The descriptors first, then the handle.
        self.shapes
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // SAFETY: made by GemmLt::new, destroyed once.
        let _ = unsafe { lt::cublasLtDestroy(self.handle) };
    }
}
