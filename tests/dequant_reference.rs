//! tandem's dequantisers against the gguf Python package's (an independent implementation of the
//! same block formats), on random blocks written by scripts/dequant_reference.py.
//!
//! The directory comes from `TANDEM_DEQUANT_REFERENCE` (scripts/dequant-check.sh makes a fresh
//! one with a random seed); without it, the small committed fixture tests/fixtures/dequant/.
//! Equality is exact: both sides compute the same products in f32 (every `d * scale * q` fits in
//! f32's 24-bit significand, and the minimum is subtracted last on both sides), so any difference
//! is a layout or formula mistake, not rounding.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use tandem::device::quant::{dequantize, GgmlType};

/// Every supported type the Python package can decode (it has no Q8_1 or Q8_K decoder: those are
/// ggml's dot-product intermediates, checked by hand-built blocks in the unit tests).
fn checked_types() -> Vec<GgmlType> {
    GgmlType::ALL
        .into_iter()
        .filter(|t| !matches!(t, GgmlType::Q8_1 | GgmlType::Q8_K))
        .collect()
}

fn reference_dir() -> PathBuf {
    match std::env::var_os("TANDEM_DEQUANT_REFERENCE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dequant"),
    }
}

/// One index line: the type, its block count, and the block shape the file claims.
struct Entry {
    dtype: GgmlType,
    n_blocks: usize,
}

fn read_index(dir: &Path) -> Result<Vec<Entry>> {
    let path = dir.join("index.txt");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path:?}"))?;
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, n_blocks, block_size, block_bytes] = f[..] else {
            bail!("index line {line:?} should have 4 fields");
        };
        let Some(dtype) = GgmlType::ALL.into_iter().find(|t| format!("{t:?}") == name) else {
            bail!("index names {name:?}, which tandem does not know");
        };
        let (bs, bb): (usize, usize) = (block_size.parse()?, block_bytes.parse()?);
        ensure!(
            (bs, bb) == (dtype.block_size(), dtype.block_bytes()),
            "{name}: the reference's blocks are {bs} elements in {bb} bytes, tandem's {} in {}",
            dtype.block_size(),
            dtype.block_bytes()
        );
        entries.push(Entry {
            dtype,
            n_blocks: n_blocks.parse()?,
        });
    }
    Ok(entries)
}

/// Decodes one type's blocks and returns the elements that differ from the reference, as
/// (index, tandem, reference).
fn compare(dir: &Path, e: &Entry) -> Result<Vec<(usize, f32, f32)>> {
    let name = format!("{:?}", e.dtype);
    let blocks = std::fs::read(dir.join(format!("{name}.blocks")))?;
    let want: Vec<f32> = std::fs::read(dir.join(format!("{name}.f32")))?
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n = e.n_blocks * e.dtype.block_size();
    ensure!(n > 0, "{name}: no blocks");
    ensure!(
        want.len() == n,
        "{name}: {} reference values for {n} elements",
        want.len()
    );
    let mut got = vec![0.0; n];
    dequantize(e.dtype, &blocks, &mut got)?;
    Ok(got
        .iter()
        .zip(&want)
        .enumerate()
        .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| (i, *g, *w))
        .collect())
}

#[test]
fn every_type_matches_the_gguf_package() -> Result<()> {
    let dir = reference_dir();
    let entries = read_index(&dir)?;
    for t in checked_types() {
        ensure!(
            entries.iter().any(|e| e.dtype == t),
            "{dir:?} has no {t:?} blocks: the reference check must cover every type"
        );
    }
    let mut failures = Vec::new();
    for e in &entries {
        let diffs = compare(&dir, e)?;
        eprintln!(
            "{:?}: {} elements, {} differ",
            e.dtype,
            e.n_blocks * e.dtype.block_size(),
            diffs.len()
        );
        if let Some((i, g, w)) = diffs.first() {
            failures.push(format!(
                "{:?}: {} of {} elements differ; first at {i} (block {}): tandem {g}, gguf {w}",
                e.dtype,
                diffs.len(),
                e.n_blocks * e.dtype.block_size(),
                i / e.dtype.block_size()
            ));
        }
    }
    ensure!(
        failures.is_empty(),
        "dequantisation differs from the reference:\n{}",
        failures.join("\n")
    );
    Ok(())
}
