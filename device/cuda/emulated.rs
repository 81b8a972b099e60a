//! The emulated CUDA device (features `cuda` + `kernel-emu`): on a machine without a CUDA driver,
//! [`install`] loads the driver, cuBLAS and cuBLASLt that build.rs made from kernels/emu (fake_cuda.cc,
//! fake_cublas.cc: the kernels run in the emulator, memory is host memory), so that cudarc, which
//! asks the dynamic loader for `libcuda.so`, `libcublas.so` and `libcublasLt.so`, finds them. Then this backend's
//! whole device path (launch code, metadata staging, device sampling, launch-ahead, CUDA graphs)
//! runs in CI: tests/cuda_*.rs use it when no GPU is present, and `TANDEM_EMULATED_CUDA=1` makes
//! `CudaBackend::new` use it too (tests/cuda_cli.rs runs the GPU benchmark commands that way, so
//! their bugs show without a GPU). For tests only: it is slow.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};

/// [`install`] when `TANDEM_EMULATED_CUDA` is set (for the binary's commands, run by tests).
pub fn install_if_asked() -> Result<()> {
    if std::env::var_os("TANDEM_EMULATED_CUDA").is_some() {
        install()?;
    }
    Ok(())
}

/// Whether [`install`] ran and loaded the emulated driver.
static LOADED: OnceLock<Result<bool, String>> = OnceLock::new();

/// The emulated driver, once loaded (for [`dependent_launches`]).
static DRIVER: OnceLock<libloading::os::unix::Library> = OnceLock::new();

/// Whether the emulated driver is the one in use.
pub fn active() -> bool {
    matches!(LOADED.get(), Some(Ok(true)))
}

/// Loads the emulated driver unless a real one is present; returns whether the device is the
/// emulated one. Idempotent.
pub fn install() -> Result<bool> {
    LOADED
        .get_or_init(|| {
            if super::driver_present() {
                return Ok(false);
            }
            let dir = Path::new(env!("TANDEM_FAKE_CUDA_DIR"));
            // The driver first: the BLAS libraries link against it.
            for name in ["libcuda.so", "libcublas.so", "libcublasLt.so"] {
                let path = dir.join(name);
                // SAFETY: our own libraries (kernels/emu), whose initialisers only set up C++
                // statics. Loaded by path under the sonames cudarc asks for, they are what the
                // loader returns to cudarc's own dlopen by name.
                let lib = unsafe {
                    libloading::os::unix::Library::open(Some(&path), libloading::os::unix::RTLD_NOW)
                }
                .map_err(|e| format!("loading {}: {e}", path.display()))?;
                // Loaded for the rest of the process, as a real driver would be.
                if name == "libcuda.so" {
                    let _ = DRIVER.set(lib);
                } else {
                    std::mem::forget(lib);
                }
            }
            Ok(true)
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// How many kernels have been launched on `stream` as programmatic dependents (eagerly or into a
/// capture), as the emulated driver counts them; `None` off the emulated device.
pub fn dependent_launches(stream: &cudarc::driver::CudaStream) -> Option<u64> {
    let driver = DRIVER.get().filter(|_| active())?;
    // SAFETY: fake_cuda.cc defines the symbol with this signature; the stream is live.
    unsafe {
        let count = driver
            .get::<unsafe extern "C" fn(*mut std::ffi::c_void) -> u64>(
                b"tandem_fake_cuda_dependent_launches",
            )
            .ok()?;
        Some(count(stream.cu_stream() as *mut std::ffi::c_void))
    }
}
