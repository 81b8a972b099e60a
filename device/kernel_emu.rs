//! The CUDA kernels on the CPU (feature `kernel-emu`): `launch` runs a kernel from kernels/*.cu,
//! compiled by the host C++ compiler against the emulator in kernels/emu, over host memory. It
//! checks a kernel's logic (indexing, barriers, warp collectives, rounding, fences between blocks)
//! against the reference ops on machines without a GPU; what it cannot tell (speed, the ordering
//! of plain stores) is for tests/cuda_*.rs on a GPU.

use std::ffi::{c_char, c_void, CString};

use anyhow::{bail, Result};

extern "C" {
    fn tandem_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        args: *const *mut c_void,
        sizes: *const usize,
        nargs: usize,
        dependent: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn tandem_emu_set_seed(set: i32, seed: u64);
}

/// Sets the seed of the calling thread's launches (`None`: back to `TANDEM_EMU_SEED`, else 1):
/// it picks the order the blocks and the warps run in, and where the blocks interleave.
pub fn set_thread_seed(seed: Option<u64>) {
    // SAFETY: sets two thread-locals of the emulator.
    unsafe { tandem_emu_set_seed(i32::from(seed.is_some()), seed.unwrap_or(0)) }
}

/// One kernel argument, by value, as the kernel declares it. Device pointers are host addresses
/// here: [`Arg::ptr`] / [`Arg::ptr_mut`].
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    U32(u32),
    I32(i32),
    F32(f32),
    U64(u64),
}

impl Arg {
    /// A `const T*` argument.
    pub fn ptr<T>(s: &[T]) -> Arg {
        Arg::U64(s.as_ptr() as u64)
    }
    /// A `T*` argument the kernel may write through.
    pub fn ptr_mut<T>(s: &mut [T]) -> Arg {
        Arg::U64(s.as_mut_ptr() as u64)
    }
}

impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::U32(v)
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::I32(v)
    }
}
impl From<f32> for Arg {
    fn from(v: f32) -> Self {
        Arg::F32(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Arg::U64(v)
    }
}

/// Runs `kernel` over `grid` blocks of `block` threads. The argument count and each argument's
/// size are checked against the kernel's declaration; a deadlock (a barrier some threads never
/// reach) or a `__trap` is an error. Every launch is a programmatic dependent one, as the CUDA
/// backend makes them on compute capability 9.0+: a thread that never calls
/// `grid_dependency_sync()` (kernels/common.cuh) is an error too.
///
/// # Safety
/// Every pointer argument must point at memory the kernel may read (and write, where it
/// writes) for the whole launch, as on the device.
pub unsafe fn launch(kernel: &str, grid: (u32, u32, u32), block: u32, args: &[Arg]) -> Result<()> {
    if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
        return Ok(());
    }
    let mut slots: Vec<u64> = vec![0; args.len()];
    let mut sizes = Vec::with_capacity(args.len());
    for (slot, a) in slots.iter_mut().zip(args) {
        let (bits, size) = match *a {
            Arg::U32(v) => (u64::from(v), 4),
            Arg::I32(v) => (u64::from(v as u32), 4),
            Arg::F32(v) => (u64::from(v.to_bits()), 4),
            Arg::U64(v) => (v, 8),
        };
        // The value's bytes at the slot's start (little-endian host, as the device).
        *slot = bits;
        sizes.push(size);
    }
    let ptrs: Vec<*mut c_void> = slots
        .iter_mut()
        .map(|s| s as *mut u64 as *mut c_void)
        .collect();
    let name = CString::new(kernel)?;
    let grid = [grid.0, grid.1, grid.2];
    let block = [block, 1, 1];
    let mut err = vec![0 as c_char; 512];
    // SAFETY: the table entry checks the argument count and sizes; the pointers inside the
    // arguments are the caller's promise.
    let rc = unsafe {
        tandem_emu_launch(
            name.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            ptrs.as_ptr(),
            sizes.as_ptr(),
            args.len(),
            1,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        let msg = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        bail!("emulated launch failed: {}", msg.to_string_lossy());
    }
    Ok(())
}
