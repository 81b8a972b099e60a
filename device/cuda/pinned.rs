//! Page-locked host buffers: what the copy engines read from and write to without a staging copy,
//! and what an asynchronous copy needs (from pageable memory the driver copies synchronously).

use anyhow::Result;
use cudarc::driver::{result, sys, CudaContext};
use std::sync::Arc;

/// `len` words of page-locked host memory, zeroed. Whoever copies into or out of it must wait for
/// that copy (an event) before touching it from the host again.
pub struct PinnedWords {
    ptr: *mut u32,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: a plain host allocation owned by this value; the pointer is not shared elsewhere.
unsafe impl Send for PinnedWords {}

impl PinnedWords {
    pub fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        let len = len.max(1);
        ctx.bind_to_thread()?;
        // SAFETY: a fresh allocation of len words (not write-combined: the host reads the
        // samples back from it); zeroed below before any read.
        let ptr = unsafe { result::malloc_host(len * 4, 0) }?.cast::<u32>();
        // SAFETY: ptr is valid for len u32 writes.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(PinnedWords {
            ptr,
            len,
            ctx: ctx.clone(),
        })
    }

    pub fn as_slice(&self) -> &[u32] {
        // SAFETY: ptr holds len initialised words for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u32] {
        // SAFETY: as above, and &mut self makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Copies the first `words` words to the device address `dst` on `stream`, asynchronously.
    pub fn copy_to_device(&self, dst: u64, words: usize, stream: sys::CUstream) -> Result<()> {
        assert!(words <= self.len);
        // SAFETY: dst holds at least `words` words (the caller's buffer); the source is pinned,
        // so the copy is truly asynchronous, and the caller waits for it before rewriting.
        unsafe { result::memcpy_htod_async(dst, &self.as_slice()[..words], stream) }?;
        Ok(())
    }

    /// Copies `words` words from the device address `src` into the start of this buffer on
    /// `stream`, asynchronously.
    pub fn copy_from_device(
        &mut self,
        src: u64,
        words: usize,
        stream: sys::CUstream,
    ) -> Result<()> {
        assert!(words <= self.len);
        // SAFETY: src holds at least `words` words; the caller waits for the copy before reading.
        unsafe { result::memcpy_dtoh_async(&mut self.as_mut_slice()[..words], src, stream) }?;
        Ok(())
    }
}

impl Drop for PinnedWords {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // A copy still queued from or into this buffer (its owner dropped without waiting: a step's
        // metadata let go right after its ops were launched) would touch freed memory: wait for
        // the device first. Rare, so the full wait costs nothing: these buffers live as long as
        // their metadata slot.
        let _ = self.ctx.synchronize();
        // SAFETY: allocated by malloc_host in `new`; no copy is pending after the wait above.
        let _ = unsafe { result::free_host(self.ptr.cast()) };
    }
}
