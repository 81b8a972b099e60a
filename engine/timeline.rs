//! When each step ran on the executor, for `tandem bench throughput --timeline`: the proof (or
//! not) that the executor never waits for the scheduler. A step's interval is from the moment the
//! executor takes its batch to the moment its samples are ready; the gap before the next step's
//! start is time the device sat idle although work was queued (while requests run, the engine
//! always has a next step to plan).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};

/// One step, in seconds since recording started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTiming {
    pub start: f64,
    pub end: f64,
    /// Token rows in the step (decode tokens + prefill chunk tokens).
    pub tokens: usize,
    /// Sequences in the step.
    pub seqs: usize,
}

/// Recorded steps, off until [`start`](Self::start); while off, the engine's per-step cost is
/// one relaxed atomic load.
#[derive(Default)]
pub struct Timeline {
    on: AtomicBool,
    inner: Mutex<Option<(Instant, Vec<StepTiming>)>>,
}

impl Timeline {
    /// Starts recording (dropping anything recorded before).
    pub fn start(&self) {
        if let Ok(mut t) = self.inner.lock() {
            *t = Some((Instant::now(), Vec::new()));
            self.on.store(true, Ordering::Relaxed);
        }
    }

    /// Stops recording and returns the steps.
    pub fn take(&self) -> Vec<StepTiming> {
        self.on.store(false, Ordering::Relaxed);
        self.inner
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .map(|(_, steps)| steps)
            .unwrap_or_default()
    }

    pub(crate) fn record(&self, started: Instant, finished: Instant, tokens: usize, seqs: usize) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut t) = self.inner.lock() {
            if let Some((zero, steps)) = t.as_mut() {
                let at = |i: Instant| i.saturating_duration_since(*zero).as_secs_f64();
                steps.push(StepTiming {
                    start: at(started),
                    end: at(finished),
                    tokens,
                    seqs,
                });
            }
        }
    }
}

/// Idle time between consecutive steps over the span from the first start to the last end.
pub fn idle_fraction(steps: &[StepTiming]) -> f64 {
    let (Some(first), Some(last)) = (steps.first(), steps.last()) else {
        return 0.0;
    };
    let span = last.end - first.start;
    if span <= 0.0 {
        return 0.0;
    }
    let idle: f64 = steps
        .windows(2)
        .map(|w| (w[1].start - w[0].end).max(0.0))
        .sum();
    idle / span
}

/// Writes the steps as CSV (`step,start_s,end_s,tokens,seqs`).
pub fn write_csv(path: &Path, steps: &[StepTiming]) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(f, "step,start_s,end_s,tokens,seqs")?;
    for (i, s) in steps.iter().enumerate() {
        writeln!(f, "{i},{:.6},{:.6},{},{}", s.start, s.end, s.tokens, s.seqs)?;
    }
    f.flush()
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(start: f64, end: f64) -> StepTiming {
        StepTiming {
            start,
            end,
            tokens: 1,
            seqs: 1,
        }
    }

    #[test]
    fn idle_is_the_gaps_over_the_span() {
        // Busy 0-1, idle 1-1.5, busy 1.5-2, back to back 2-3: 0.5 idle of 3.
        let steps = [step(0.0, 1.0), step(1.5, 2.0), step(2.0, 3.0)];
        assert!((idle_fraction(&steps) - 0.5 / 3.0).abs() < 1e-12);
        // Back to back, or overlapping intervals: nothing idle.
        assert_eq!(idle_fraction(&[step(0.0, 1.0), step(1.0, 2.0)]), 0.0);
        assert_eq!(idle_fraction(&[step(0.0, 1.0), step(0.9, 2.0)]), 0.0);
        assert_eq!(idle_fraction(&[]), 0.0);
        assert_eq!(idle_fraction(&[step(1.0, 1.0)]), 0.0);
    }

    #[test]
    fn records_only_between_start_and_take() {
        let t = Timeline::default();
        let now = Instant::now();
        t.record(now, now, 3, 1);
        assert!(t.take().is_empty(), "recorded before start");
        t.start();
        t.record(Instant::now(), Instant::now(), 5, 2);
        let steps = t.take();
        assert_eq!(steps.len(), 1);
        assert_eq!((steps[0].tokens, steps[0].seqs), (5, 2));
        assert!(steps[0].start <= steps[0].end);
        t.record(Instant::now(), Instant::now(), 5, 2);
        assert!(t.take().is_empty(), "recorded after take");
    }

    #[test]
    fn csv_has_a_header_and_one_line_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        write_csv(&path, &[step(0.0, 0.25), step(0.5, 1.0)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "step,start_s,end_s,tokens,seqs");
        assert_eq!(lines[2], "1,0.500000,1.000000,1,1");
        assert!(write_csv(&dir.path().join("no/such/dir.csv"), &[]).is_err());
    }
}
