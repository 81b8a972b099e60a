//! Mooncake / FAST'25-style traces: JSONL, one request per line, read: `timestamp`
//! (milliseconds), `input_length` (the prompt), `output_length` and `hash_ids` (optional: the
//! hash of each 512-token block of the prompt, chained, so two requests whose prompts start with
//! the same blocks list the same leading ids). The hashes become the prompt's tokens (see
//! [`prompt_tokens`](crate::sim::workload::prompt_tokens)), so the prefix cache hits exactly
//! where the trace says prompts share blocks.

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

use super::{replayable, Rows};

/// Prompt tokens per entry of `hash_ids` in the published traces.
pub const HASH_BLOCK_TOKENS: usize = 512;

#[derive(Deserialize)]
struct Line {
    timestamp: f64,
    input_length: usize,
    output_length: usize,
    #[serde(default)]
    hash_ids: Vec<u64>,
}

pub(super) fn parse(text: &str) -> Result<Rows> {
    let mut requests = Vec::new();
    let mut skipped = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(line)
            .with_context(|| format!("line {}: not a Mooncake request", i + 1))?;
        ensure!(
            l.timestamp.is_finite(),
            "line {}: timestamp is not finite",
            i + 1
        );
        match replayable(l.timestamp / 1000.0, l.input_length, l.output_length) {
            Some(mut r) => {
                r.hash_ids = l.hash_ids;
                r.hash_block_len = HASH_BLOCK_TOKENS;
                requests.push(r);
            }
            None => skipped += 1,
        }
    }
    Ok((requests, skipped))
}
