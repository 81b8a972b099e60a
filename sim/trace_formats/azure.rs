//! The Azure LLM inference traces (the 2023 and 2024 releases, code and conversation): CSV with
//! a header, one request per row. Read: `TIMESTAMP` (a wall-clock time such as
//! `2023-11-16 18:15:46.6805900` or `2024-05-10 00:00:00.009930+00:00`), `ContextTokens` (the
//! prompt) and `GeneratedTokens` (the output). Other columns are ignored.

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDateTime};

use super::{csv_rows, Rows};

pub(super) fn parse(input: &[u8]) -> Result<Rows> {
    csv_rows(
        input,
        ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
        |cell, row| seconds(cell).with_context(|| format!("row {row}: TIMESTAMP")),
    )
}

/// Seconds since the Unix epoch of a timestamp with or without a UTC offset. Only differences
/// matter, and a file uses one form throughout.
fn seconds(s: &str) -> Result<f64> {
    let s = s.trim();
    let t = match DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        Ok(t) => t.naive_utc(),
        Err(_) => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
            .with_context(|| format!("not a time: {s:?}"))?,
    };
    let utc = t.and_utc();
    Ok(utc.timestamp() as f64 + utc.timestamp_subsec_nanos() as f64 * 1e-9)
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn both_releases_timestamp_forms_parse_to_the_same_clock() {
        let a = seconds("2023-11-16 18:15:46.6805900").unwrap();
        let b = seconds("2023-11-16 18:15:47.1805900").unwrap();
        assert!((b - a - 0.5).abs() < 1e-6, "{}", b - a);
        let c = seconds("2024-05-10 00:00:00.009930+00:00").unwrap();
        let d = seconds("2024-05-10 01:00:00.009930+01:00").unwrap();
        assert!((c - d).abs() < 1e-6, "an offset is applied");
        assert!(seconds("2024-05-10 00:00:00").is_ok(), "fraction optional");
        assert!(seconds("yesterday").is_err());
    }
}
