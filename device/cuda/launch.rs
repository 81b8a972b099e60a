//! Kernel launches, through `cuLaunchKernelEx` so that a launch can carry attributes cudarc's
//! launch builder does not set: on compute capability 9.0 and later, programmatic stream
//! serialization (programmatic dependent launch, PDL). With it a kernel's blocks may be scheduled
//! while the kernel before it in the stream is still running; every kernel of kernels/*.cu waits
//! on its predecessor first thing (`grid_dependency_sync` in kernels/common.cuh), so the results
//! are the same and each launch's latency hides behind the previous kernel's tail. A decode step
//! is about a hundred kernels of a few microseconds each, so that latency is a visible part of it.

use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use anyhow::Result;
use cudarc::driver::sys;
use cudarc::driver::{CudaFunction, DeviceRepr, DriverError};

use super::CudaBackend;

/// A kernel's argument list: the address of each value, in the kernel's parameter order. The
/// values are borrowed until the launch has copied them (it does so before returning).
pub(super) struct KernelArgs<'a> {
    ptrs: Vec<*mut c_void>,
    _values: PhantomData<&'a ()>,
}

impl<'a> KernelArgs<'a> {
    /// Appends one argument, passed by value as the kernel declares it (a device address is a
    /// `u64`).
    pub(super) fn arg<T: DeviceRepr>(&mut self, value: &'a T) -> &mut Self {
        self.ptrs.push(value as *const T as *mut c_void);
        self
    }
}

impl CudaBackend {
    /// Whether kernels are launched as programmatic dependents of the kernel before them
    /// (compute capability 9.0+, unless [`super::CudaOptions::pdl`] is off).
    pub fn pdl(&self) -> bool {
        self.pdl.load(Ordering::Relaxed)
    }

    /// Launches `f` over `grid` blocks of `block` threads on the backend's stream, with the
    /// arguments `push` lists; an empty grid launches nothing.
    pub(super) fn launch<'a>(
        &'a self,
        f: &'a CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        push: impl FnOnce(&mut KernelArgs<'a>),
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let mut args = KernelArgs {
            ptrs: Vec::with_capacity(16),
            _values: PhantomData,
        };
        push(&mut args);
        self.ctx.bind_to_thread()?;
        let pdl = self.pdl();
        let launched = self.launch_ex(f, grid, block, &mut args, pdl);
        let refused = matches!(
            launched,
            Err(DriverError(
                sys::CUresult::CUDA_ERROR_INVALID_VALUE | sys::CUresult::CUDA_ERROR_NOT_SUPPORTED
            ))
        );
        if pdl && refused {
            // A driver that will not take the attribute: plain launches from now on (the first
            // launches are eager warm-up ones, before any capture).
            tracing::warn!(
                "the CUDA driver refused a programmatic dependent launch ({launched:?}); \
                 launching kernels one after another"
            );
            self.pdl.store(false, Ordering::Relaxed);
            return Ok(self.launch_ex(f, grid, block, &mut args, false)?);
        }
        Ok(launched?)
    }

    /// One `cuLaunchKernelEx` on the backend's stream, as a programmatic dependent or not.
    fn launch_ex(
        &self,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        args: &mut KernelArgs<'_>,
        pdl: bool,
    ) -> Result<(), DriverError> {
        // SAFETY: an all-zero attribute is a valid (ignored) one; its value is set below.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let cfg = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: 0,
            hStream: self.stream.cu_stream(),
            attrs: if pdl { &mut attr } else { std::ptr::null_mut() },
            numAttrs: u32::from(pdl),
        };
        // SAFETY: `f` is a loaded kernel of this context, bound to this thread; each caller
        // checks sizes on the host and lists the arguments its kernel declares (see the
        // kernel's header comment), whose values outlive this call, which copies them; `attr`
        // outlives it too.
        unsafe {
            sys::cuLaunchKernelEx(
                &cfg,
                f.cu_function(),
                args.ptrs.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
    }
}
