//! Timing work on the device between CUDA events (the benchmarks' clock).

use anyhow::Result;
use cudarc::driver::sys::CUevent_flags;

use super::CudaBackend;

impl CudaBackend {
    /// The median time, in microseconds, of what `f` queues on the compute stream: `warmup`
    /// untimed runs, then `reps` runs each between two timed events.
    pub fn time_us(
        &self,
        warmup: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<f64> {
        for _ in 0..warmup {
            f()?;
        }
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let mut times = Vec::with_capacity(reps.max(1));
        for _ in 0..reps.max(1) {
            let (start, end) = (self.ctx.new_event(flags)?, self.ctx.new_event(flags)?);
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
