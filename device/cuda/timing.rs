//! Timing work on the device between CUDA events (the benchmarks' clock).

use anyhow::Result;
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
use cudarc::driver::CudaSlice;

use super::CudaBackend;

impl CudaBackend {
    /// The median time, in microseconds, of what `f` queues on the compute stream: `warmup`
    /// untimed runs, then `reps` runs each between two timed events.
    pub fn time_us(
        &self,
        warmup: usize,
        reps: usize,
        f: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        self.time_runs(warmup, reps, None, f)
    }

    /// A buffer twice the L2 cache's size, for [`Self::time_runs`]; None where the device
    /// has no memory to spare for it (the timing then runs with a warm cache).
    pub(super) fn l2_flush_buffer(&self) -> Option<CudaSlice<u8>> {
        let l2 = self
            .ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
            .unwrap_or(0)
            .max(0) as usize;
        match self
            .stream
            .alloc_zeros::<u8>((2 * l2).clamp(1 << 20, 512 << 20))
        {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!("no memory to flush the L2 cache between timed runs ({e})");
                None
            }
        }
    }

    /// The median time, in microseconds, of what `f` queues: `warmup` untimed runs, then `reps`
    /// runs each between two timed events. With `flush` ([`Self::l2_flush_buffer`]), timed as a
    /// step meets it: the stream clears the buffer before each timed run, so the operands come
    /// from memory (a decode step streams each layer's weights once; timed again and again, a
    /// 10 MB product would run from a 50 MB L2) and the GPU is busy while the run is queued
    /// behind it (in a graph the launches are ready; here the host's launch would be timed).
    pub(super) fn time_runs(
        &self,
        warmup: usize,
        reps: usize,
        mut flush: Option<&mut CudaSlice<u8>>,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        for _ in 0..warmup {
            f()?;
        }
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let mut times = Vec::with_capacity(reps.max(1));
        for _ in 0..reps.max(1) {
            let (start, end) = (self.ctx.new_event(flags)?, self.ctx.new_event(flags)?);
            if let Some(buf) = flush.as_deref_mut() {
                self.stream.memset_zeros(buf)?;
            }
            start.record(&self.stream)?;
            f()?;
            end.record(&self.stream)?;
            times.push(f64::from(start.elapsed_ms(&end)?) * 1e3);
        }
        self.synchronize()?;
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}
