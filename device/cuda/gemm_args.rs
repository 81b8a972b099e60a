//! The operands of one matrix product, shared by the kernel choice (gemm_plan.rs), cuBLAS
//! (gemm.rs) and cuBLASLt (gemm_lt.rs).

/// The operands of one product, as `linear_op` checked them: device addresses of `x[rows, k]`,
/// `w[n, k]`, the optional bias and `out[rows, n]`.
pub(super) struct GemmArgs {
    pub x: u64,
    pub w: u64,
    pub bias: Option<u64>,
    pub out: u64,
    pub rows: usize,
    pub k: usize,
    pub n: usize,
}
