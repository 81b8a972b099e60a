//! Shared by the CUDA test binaries (cuda_parity, cuda_attention, cuda_model, cuda_engine): the
//! device (or, in a plain `cuda` build without a GPU, a "skipped" line), dtype-sized tolerances,
//! poisoned outputs, metadata on the device.

use rand::rngs::StdRng;
use rand::Rng;

use tandem::device::backend::{Backend, QkvLayout};
use tandem::device::cuda::{CudaBackend, CudaOptions, DType};
use tandem::device::step::StepInput;

pub use super::assert_close;
pub use super::kernel_cases::*;

/// The GPU with f32 storage, or `None` after printing why this test is skipped.
pub fn gpu(name: &str) -> Option<CudaBackend> {
    gpu_as(name, DType::F32)
}

/// The GPU with `dtype` storage. Built with `kernel-emu`, a device is always promised (the
/// emulated one where no CUDA driver is found), so failing to open it fails the test with the
/// reason; only a plain `cuda` build on a machine without a GPU skips, printing `skipped:` (which
/// scripts/test.sh refuses in its CUDA run).
pub fn gpu_as(name: &str, dtype: DType) -> Option<CudaBackend> {
    // Without a GPU, the emulated device (kernel-emu): the same code paths, kernels run on the CPU.
    #[cfg(feature = "kernel-emu")]
    match tandem::device::cuda::emulated::install() {
        Ok(true) => eprintln!("{name}: no CUDA driver here: on the emulated device (kernel-emu)"),
        Ok(false) => {}
        Err(e) => panic!("{name}: no CUDA device, and the emulated one failed to load ({e:#})"),
    }
    match CudaBackend::new(0, dtype, CudaOptions::default()) {
        Ok(b) => Some(b),
        Err(e) if cfg!(feature = "kernel-emu") => {
            panic!("{name}: the CUDA device (or the emulated one) did not open ({e:#})")
        }
        Err(e) => {
            eprintln!("skipped: {name}: no CUDA device ({e:#})");
            None
        }
    }
}

/// The GPU once per storage dtype (f32, then bf16); empty after printing why this test is
/// skipped.
pub fn gpus(name: &str) -> Vec<CudaBackend> {
    let Some(f32_backend) = gpu_as(name, DType::F32) else {
        return vec![];
    };
    let bf16_backend =
        CudaBackend::new(0, DType::Bf16, CudaOptions::default()).expect("bf16 backend");
    vec![f32_backend, bf16_backend]
}

/// Another backend on `b`'s device, storing `b`'s dtype, running as `options` say: tests that
/// compare the paths a backend can be fixed to make one per path.
pub fn with_options(b: &CudaBackend, options: CudaOptions) -> CudaBackend {
    CudaBackend::new(0, b.dtype(), options).expect("a second backend on the device")
}

/// The tolerance `(atol, rtol)` for `b`'s dtype, given the f32 one. Copies stay exact in bf16.
/// Otherwise bf16 gets rtol 1e-2: the inputs are already bf16 values, every kernel computes in
/// f32 and rounds its output once (at most 2^-9 ≈ 0.2% relative), so 1e-2 leaves room for the
/// few ops that round an intermediate (the residual in add_rms_norm, the GEMM output before
/// the bias) without hiding a real error (a wrong element is off by O(1)).
pub fn tol(b: &CudaBackend, atol: f32, rtol: f32) -> (f32, f32) {
    match b.dtype() {
        DType::F32 => (atol, rtol),
        DType::Bf16 if atol == 0.0 && rtol == 0.0 => (0.0, 0.0),
        DType::Bf16 => (atol.max(1e-3), rtol.max(1e-2)),
    }
}

/// `n` random values in [-1, 1), as `b`'s dtype stores them.
pub fn random_as(b: &CudaBackend, rng: &mut StdRng, n: usize) -> Vec<f32> {
    b.dtype().round(&random(rng, n))
}

pub fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// [`assert_close`] at `b`'s dtype: the tolerance from [`tol`], the dtype in the label.
pub fn check(b: &CudaBackend, what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    let (atol, rtol) = tol(b, atol, rtol);
    assert_close(&format!("{} {what}", b.dtype()), got, want, atol, rtol);
}

pub fn poisoned(b: &CudaBackend, len: usize) -> <CudaBackend as Backend>::Tensor {
    let mut t = b.zeros(len).unwrap();
    b.fill_nan(&mut t).unwrap();
    t
}

/// Metadata for `step`, its attention workspace sized for LAYOUTS[0] (ops that do not attend).
pub fn meta_for(b: &CudaBackend, step: &StepInput) -> <CudaBackend as Backend>::Meta {
    meta_with(b, step, LAYOUTS[0])
}

pub fn meta_with(
    b: &CudaBackend,
    step: &StepInput,
    layout: QkvLayout,
) -> <CudaBackend as Backend>::Meta {
    // Logit rows share the per-sequence buffers (the engine asks for at most one per sequence);
    // a test that gathers more rows than it has sequences sizes them for its rows.
    let seqs = step.num_seqs().max(step.logits_indices.len()).max(1);
    let mut meta = b.new_meta(step.num_tokens().max(1), seqs, layout).unwrap();
    b.upload_meta(step, &mut meta).unwrap();
    meta
}

/// A step of `tokens` rows of one sequence each (input ids and positions as given).
pub fn simple_step(ids: &[u32], positions: &[u32]) -> StepInput {
    StepInput {
        input_ids: ids.to_vec(),
        positions: positions.to_vec(),
        slot_mapping: vec![-1; ids.len()],
        query_start_locs: vec![0, ids.len() as u32],
        context_lens: vec![ids.len() as u32],
        block_tables: vec![],
        max_blocks_per_seq: 0,
        logits_indices: vec![],
    }
}

/// Kernels launched on `b`'s stream as programmatic dependents so far, where the emulated
/// driver counts them; `None` on a real GPU.
pub fn dependent_launches(b: &CudaBackend) -> Option<u64> {
    #[cfg(feature = "kernel-emu")]
    {
        tandem::device::cuda::emulated::dependent_launches(b.stream())
    }
    #[cfg(not(feature = "kernel-emu"))]
    {
        let _ = b;
        None
    }
}

/// Whether the device the tests run on is the emulated one (whose libraries' behaviour some
/// tests rely on).
pub fn on_emulated_device() -> bool {
    #[cfg(feature = "kernel-emu")]
    {
        tandem::device::cuda::emulated::active()
    }
    #[cfg(not(feature = "kernel-emu"))]
    {
        false
    }
}
