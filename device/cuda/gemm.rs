//! The matrix products: checked here, then computed by cuBLAS GemmEx on the compute stream (bf16
//! on the tensor cores with f32 accumulation, f32 in plain f32) plus the bias kernel, or, for the
//! few rows of a decode step, by the skinny kernel where gemm_plan.rs picks it.

use anyhow::{ensure, Result};
use cudarc::cublas::sys as cublas_sys;

use super::gemm_args::GemmArgs;
use super::{u32_of, CudaBackend, CudaTensor};

impl CudaBackend {
    /// [`crate::device::backend::Backend::linear`] on this device.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_op(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        bias: Option<&CudaTensor>,
        rows: usize,
        k: usize,
        n: usize,
        out: &mut CudaTensor,
    ) -> Result<()> {
        ensure!(
            x.len() >= rows * k,
            "linear: x has {} elements, needs {rows}x{k}",
            x.len()
        );
        ensure!(
            w.len() == n * k,
            "linear: w has {} elements, needs {n}x{k}",
            w.len()
        );
        ensure!(
            out.len() >= rows * n,
            "linear: out has {} elements, needs {rows}x{n}",
            out.len()
        );
        if let Some(b) = bias {
            ensure!(
                b.len() == n,
                "linear: bias has {} elements, needs {n}",
                b.len()
            );
        }
        if rows == 0 {
            return Ok(());
        }
        let a = GemmArgs {
            x: self.tp(x),
            w: self.tp(w),
            bias: bias.map(|b| self.tp(b)),
            out: self.tp(out),
            rows,
            k,
            n,
        };
        let kernel = self.pick_gemm(&a, out)?;
        self.run_gemm(kernel, &a)
    }

    /// The product on cuBLAS, then the bias kernel.
    pub(super) fn cublas_gemm(&self, a: &GemmArgs) -> Result<()> {
        let GemmArgs { rows, k, n, .. } = *a;
        // Row-major out[rows, n] = x[rows, k] · wᵀ is, read column-major, outᵀ[n, rows] =
        // w'[k, n]ᵀ · xᵀ[k, rows], where w' (w read column-major, ld k) is wᵀ: so A = w with
        // transa = T (lda = k), B = x with transb = N (ldb = k), C = out (ldc = n).
        // GemmEx with the storage type for A, B and C and f32 compute: bf16 runs on the tensor
        // cores with f32 accumulation; f32 stays plain f32 (the handle's math mode forbids TF32).
        let (m_, n_, k_) = (
            u32_of(n, "n")? as i32,
            u32_of(rows, "rows")? as i32,
            u32_of(k, "k")? as i32,
        );
        let (alpha, beta) = (1.0f32, 0.0f32);
        let ty = self.dtype.cuda_type();
        let (wp, xp, op) = (a.w, a.x, a.out);
        self.ctx.bind_to_thread()?;
        // SAFETY: the sizes linear_op checked bound every element the GEMM reads and writes; all
        // three tensors have this backend's dtype `ty`; alpha and beta are f32, as
        // CUBLAS_COMPUTE_32F requires, and live across the call.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                cublas_sys::cublasOperation_t::CUBLAS_OP_T,
                cublas_sys::cublasOperation_t::CUBLAS_OP_N,
                m_,
                n_,
                k_,
                (&alpha as *const f32).cast(),
                wp as *const std::ffi::c_void,
                ty,
                k_,
                xp as *const std::ffi::c_void,
                ty,
                k_,
                (&beta as *const f32).cast(),
                op as *mut std::ffi::c_void,
                ty,
                m_, // ldc: a column of outᵀ is one output row of n features
                cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }?;
        self.add_bias(a)
    }

    /// Adds the product's bias, if it has one, to its output rows.
    pub(super) fn add_bias(&self, a: &GemmArgs) -> Result<()> {
        let GemmArgs {
            rows, n, out: op, ..
        } = *a;
        if let Some(bp) = a.bias {
            let n32 = n as u32;
            self.launch(
                &self.k.add_bias,
                (u32_of(rows, "rows")?, n32.div_ceil(256), 1),
                256,
                |b| {
                    b.arg(&op).arg(&bp).arg(&n32);
                },
            )?;
        }
        Ok(())
    }
}
