//! BurstGPT (Azure OpenAI GPT service logs): CSV with the header `Timestamp,Model,Request
//! tokens,Response tokens,Total tokens,Log Type`. Read: `Timestamp` (seconds from the start of
//! the log), `Request tokens` (the prompt) and `Response tokens` (the output). Rows with zero
//! response tokens are failed requests in the log and are left out (counted). `Model` and `Log
//! Type` are not filtered on: cut the file first to replay one model or one log type.

use anyhow::{ensure, Context, Result};

use super::{csv_rows, Rows};

pub(super) fn parse(input: &[u8]) -> Result<Rows> {
    csv_rows(
        input,
        ["Timestamp", "Request tokens", "Response tokens"],
        |cell, row| {
            let at: f64 = cell
                .parse()
                .with_context(|| format!("row {row}: `Timestamp` is not seconds: {cell:?}"))?;
            ensure!(at.is_finite(), "row {row}: `Timestamp` is not finite");
            Ok(at)
        },
    )
}
