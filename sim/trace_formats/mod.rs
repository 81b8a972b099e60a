//! Public LLM-serving traces read as they are published, so a policy is tried on the workloads
//! papers cite without a conversion script. Each format has its own file saying which columns
//! it reads; every reader returns [`TraceRequest`]s in arrival order, with arrivals in seconds
//! from the trace's first request (tandem's own JSONL: from its start, as written). Rows that cannot be replayed (no prompt or no output tokens:
//! failed requests in the logs) are counted and left out, never silently turned into something
//! else.
//!
//! | format     | file                                                       | prefix sharing |
//! |------------|------------------------------------------------------------|----------------|
//! | `jsonl`    | tandem's own (see [`workload`](super::workload))           | groups         |
//! | `azure`    | Azure LLM inference traces, 2023 and 2024 (CSV)             | none           |
//! | `burstgpt` | BurstGPT (CSV)                                             | none           |
//! | `mooncake` | Mooncake / FAST'25 JSONL, with `hash_ids`                   | block hashes   |

mod azure;
mod burstgpt;
mod mooncake;

use anyhow::{bail, ensure, Context, Result};
use std::io::{BufReader, Read};
use std::path::Path;

use super::workload::{validate, TraceRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormat {
    /// Decide from the first line (a CSV header or a JSON object's keys).
    Auto,
    Jsonl,
    Azure,
    Burstgpt,
    Mooncake,
}

/// Which part of the trace to replay: requests arriving in `start..start + duration` seconds
/// on the trace's clock (above), re-timed so the window begins at 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub start: f64,
    pub duration: Option<f64>,
}

/// A trace as read: the requests to replay, and how many rows were left out as unreplayable.
#[derive(Debug)]
pub struct Trace {
    pub format: TraceFormat,
    pub requests: Vec<TraceRequest>,
    pub skipped: usize,
}

/// A parser's result: the replayable rows (arrivals in seconds, on the format's own clock) and
/// how many rows it left out.
type Rows = (Vec<TraceRequest>, usize);

/// Reads `path` in `format` (sniffed when `Auto`) and cuts `window` out of it.
pub fn read(path: &Path, format: TraceFormat, window: Window) -> Result<Trace> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_from(BufReader::new(file), format, window)
        .with_context(|| format!("trace {}", path.display()))
}

pub fn read_from(mut input: impl Read, format: TraceFormat, window: Window) -> Result<Trace> {
    ensure!(
        window.start.is_finite() && window.start >= 0.0,
        "the window's start must be a time >= 0"
    );
    ensure!(
        window.duration.is_none_or(|d| d.is_finite() && d > 0.0),
        "the window's duration must be positive"
    );
    let mut text = String::new();
    input.read_to_string(&mut text).context("reading")?;
    let format = match format {
        TraceFormat::Auto => sniff(text.lines().find(|l| !l.trim().is_empty()).unwrap_or(""))?,
        f => f,
    };
    let (mut requests, skipped) = match format {
        TraceFormat::Auto => unreachable!("sniffed above"),
        TraceFormat::Jsonl => (jsonl(&text)?, 0),
        TraceFormat::Azure => azure::parse(text.as_bytes())?,
        TraceFormat::Burstgpt => burstgpt::parse(text.as_bytes())?,
        TraceFormat::Mooncake => mooncake::parse(&text)?,
    };
    ensure!(!requests.is_empty(), "no replayable requests");
    requests.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    // tandem's own traces already count from their start; the public ones keep a wall clock or
    // the log's, so they count from their first request.
    let origin = match format {
        TraceFormat::Jsonl => 0.0,
        _ => requests[0].arrival,
    };
    let end = window.duration.map_or(f64::INFINITY, |d| window.start + d);
    requests.retain_mut(|r| {
        r.arrival -= origin;
        let keep = (window.start..end).contains(&r.arrival);
        r.arrival -= window.start;
        keep
    });
    ensure!(
        !requests.is_empty(),
        "no request arrives in the window {}..{end} s",
        window.start
    );
    validate(&requests)?;
    Ok(Trace {
        format,
        requests,
        skipped,
    })
}

/// The format a trace's first line announces.
pub fn sniff(first_line: &str) -> Result<TraceFormat> {
    let line = first_line.trim_start_matches('\u{feff}').trim();
    if line.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(line).context("the first line looks like JSON but is not")?;
        if v.get("arrival").is_some() {
            return Ok(TraceFormat::Jsonl);
        }
        if v.get("timestamp").is_some() && v.get("input_length").is_some() {
            return Ok(TraceFormat::Mooncake);
        }
        bail!("a JSONL trace with neither `arrival` (tandem) nor `timestamp` and `input_length` (Mooncake)");
    }
    let header: Vec<&str> = line.split(',').map(str::trim).collect();
    if header.contains(&"ContextTokens") && header.contains(&"GeneratedTokens") {
        return Ok(TraceFormat::Azure);
    }
    if header.contains(&"Request tokens") && header.contains(&"Response tokens") {
        return Ok(TraceFormat::Burstgpt);
    }
    bail!(
        "unknown trace format (first line {line:?}); name it with --trace-format \
         jsonl|azure|burstgpt|mooncake"
    )
}

fn jsonl(text: &str) -> Result<Vec<TraceRequest>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).with_context(|| format!("line {}: not a trace request", n + 1))
        })
        .collect()
}

/// The index of each named column in a CSV header, or an error naming the missing one.
fn columns<const N: usize>(header: &csv::StringRecord, names: [&str; N]) -> Result<[usize; N]> {
    let mut out = [0; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = header
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| format!("the header has no `{name}` column"))?;
    }
    Ok(out)
}

/// A token count from a CSV cell (some releases write counts as floats, `42.0`).
fn count(cell: &str, row: usize, column: &str) -> Result<usize> {
    let v: f64 = cell
        .trim()
        .parse()
        .with_context(|| format!("row {row}: `{column}` is not a number: {cell:?}"))?;
    ensure!(
        v.is_finite() && v >= 0.0 && v.fract() == 0.0,
        "row {row}: `{column}` is not a token count: {cell:?}"
    );
    Ok(v as usize)
}

/// The rows of a CSV trace with a header: `names` are its arrival, prompt and output columns;
/// `arrival(cell, row)` reads the arrival cell. Rows with no prompt or no output are counted.
fn csv_rows(
    input: &[u8],
    names: [&str; 3],
    arrival: impl Fn(&str, usize) -> Result<f64>,
) -> Result<Rows> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let [time, prompt, output] = columns(reader.headers().context("reading the header")?, names)?;
    let mut requests = Vec::new();
    let mut skipped = 0;
    for (i, record) in reader.records().enumerate() {
        let row = i + 2; // 1-based, after the header
        let record = record.with_context(|| format!("row {row}"))?;
        let at = arrival(&record[time], row)?;
        let prompt_len = count(&record[prompt], row, names[1])?;
        let output_len = count(&record[output], row, names[2])?;
        match replayable(at, prompt_len, output_len) {
            Some(r) => requests.push(r),
            None => skipped += 1,
        }
    }
    Ok((requests, skipped))
}

/// A row's request, or `None` (counted as skipped) when it has no prompt or no output.
fn replayable(arrival: f64, prompt_len: usize, output_len: usize) -> Option<TraceRequest> {
    (prompt_len > 0 && output_len > 0).then(|| TraceRequest {
        arrival,
        prompt_len,
        output_len,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
