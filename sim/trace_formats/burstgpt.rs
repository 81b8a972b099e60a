//! BurstGPT (Azure OpenAI GPT service logs): CSV with the header `Timestamp,Model,Request
//! tokens,Response tokens,Total tokens,Log Type`. Read: `Timestamp` (seconds from the start of
//! the log), `Request tokens` (the prompt) and `Response tokens` (the output). Rows with zero
//! response tokens are failed requests in the log and are left out (counted). `Model` and `Log
//! Type` are not filtered on: cut the file first to replay one model or one log type.

use anyhow::{ensure, Context, Result};

use super::{columns, count, replayable, Rows};

pub(super) fn parse(input: &[u8]) -> Result<Rows> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let [time, prompt, output] = columns(
        reader.headers().context("reading the header")?,
        ["Timestamp", "Request tokens", "Response tokens"],
    )?;
    let mut requests = Vec::new();
    let mut skipped = 0;
    for (i, record) in reader.records().enumerate() {
        let row = i + 2;
        let record = record.with_context(|| format!("row {row}"))?;
        let cell = &record[time];
        let arrival: f64 = cell
            .parse()
            .with_context(|| format!("row {row}: `Timestamp` is not seconds: {cell:?}"))?;
        ensure!(arrival.is_finite(), "row {row}: `Timestamp` is not finite");
        let prompt_len = count(&record[prompt], row, "Request tokens")?;
        let output_len = count(&record[output], row, "Response tokens")?;
        match replayable(arrival, prompt_len, output_len) {
            Some(r) => requests.push(r),
            None => skipped += 1,
        }
    }
    Ok((requests, skipped))
}
