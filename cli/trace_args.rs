//! The trace options shared by `tandem sim` and `tandem bench throughput`.

use anyhow::Result;
use std::path::PathBuf;

use crate::sim::trace_formats::{read, TraceFormat, Window};
use crate::sim::workload::TraceRequest;

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// A trace to replay instead of a synthetic workload: tandem's JSONL, an Azure LLM
    /// inference trace (CSV), BurstGPT (CSV) or a Mooncake trace (JSONL with hash_ids).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// The trace's format; `auto` reads it from the first line.
    #[arg(long, value_enum, default_value = "auto", requires = "trace")]
    pub trace_format: TraceFormat,
    /// Replay only requests arriving this many seconds or later after the trace's first one.
    #[arg(long, default_value_t = 0.0, requires = "trace")]
    pub start: f64,
    /// Replay only requests arriving within this many seconds of --start.
    #[arg(long, requires = "trace")]
    pub duration: Option<f64>,
}

impl TraceArgs {
    /// The trace's requests (`None` without --trace); says on stderr how many rows were left
    /// out as unreplayable.
    pub fn load(&self) -> Result<Option<Vec<TraceRequest>>> {
        let Some(path) = &self.trace else {
            return Ok(None);
        };
        let window = Window {
            start: self.start,
            duration: self.duration,
        };
        let trace = read(path, self.trace_format, window)?;
        if trace.skipped > 0 {
            eprintln!(
                "{}: left out {} rows with no prompt or no output tokens",
                path.display(),
                trace.skipped
            );
        }
        Ok(Some(trace.requests))
    }
}
