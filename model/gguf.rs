//! A reader for GGUF (versions 2 and 3), llama.cpp's single-file model format.
//!
//! A GGUF file is a header (typed key/value metadata plus a table of tensor infos) followed by an
//! aligned data section holding every tensor's raw bytes. [`GgufFile`] memory-maps the file,
//! validates the whole header up front (so later tensor access cannot go out of bounds), and hands
//! out tensors as raw bytes or dequantised `f32`.
//!
//! Layout conventions: GGUF lists dimensions innermost-first, so a weight with GGUF dims
//! `[in, out]` is the row-major `[out, in]` matrix of a Hugging Face checkpoint, byte for byte
//! ([`GgufTensorInfo::shape`] gives the row-major shape). The one real difference from HF is that
//! llama.cpp's converter permutes the rows of the Llama Q and K projections; see
//! [`unpermute_qk_rows`].

mod parse;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, ensure, Context, Result};
use memmap2::Mmap;

use crate::device::quant::{dequantize, GgmlType};

/// One metadata value. Integer and float widths are kept as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer type that holds a non-negative value, widened to `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type whose value fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// An `F32`, or an `F64` narrowed to `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            GgufValue::F32(v) => Some(v),
            GgufValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A short description of the type, for error messages (e.g. `u32`, `array of 3`).
    pub fn type_name(&self) -> String {
        let name = match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(a) => return format!("array of {}", a.len()),
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
        };
        name.to_owned()
    }
}

/// Where one tensor's data lives and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions innermost (fastest-varying) first, as stored in the file.
    pub dims: Vec<u64>,
    pub dtype: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Number of elements (the product of the dimensions; 1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, d| n.saturating_mul(*d))
    }

    /// The row-major shape, outermost first: `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|d| *d as usize).collect()
    }
}

/// The bytes behind a [`GgufFile`]: a memory-mapped file, or an in-memory buffer.
enum Backing {
    Mmap(Mmap),
    Bytes(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Bytes(b) => b,
        }
    }
}

/// A parsed, validated GGUF file. Tensor data stays in the backing bytes until asked for.
pub struct GgufFile {
    /// The path (or caller-chosen label) used in every error message.
    label: String,
    backing: Backing,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
    data_start: u64,
}

impl GgufFile {
    /// Memory-maps and parses the GGUF file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let label = path.display().to_string();
        let file = File::open(path).with_context(|| format!("opening GGUF file {label}"))?;
        // SAFETY: the map is read-only; like every mmap-based model loader we assume the file is
        // not truncated or rewritten while it is open (that would be a SIGBUS, not UB we cause).
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("memory-mapping {label}"))?;
        Self::from_backing(Backing::Mmap(map), label)
    }

    /// Parses GGUF data already in memory; `label` stands in for the path in error messages.
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<Self> {
        Self::from_backing(Backing::Bytes(bytes), label.to_owned())
    }

    fn from_backing(backing: Backing, label: String) -> Result<Self> {
        let header = parse::parse_header(backing.bytes())
            .with_context(|| format!("{label}: invalid GGUF file"))?;
        let by_name = (header.tensors.iter().enumerate())
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            label,
            backing,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name,
            data_start: header.data_start,
        })
    }

    /// The path or label this file was opened with.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// [`label`](Self::label) as a path (the file's path when opened with [`open`](Self::open)).
    pub fn path(&self) -> &Path {
        Path::new(&self.label)
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The value of `key` as a non-negative integer (any stored integer width).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    pub fn get_f32(&self, key: &str) -> Option<f32> {
        self.get(key).and_then(GgufValue::as_f32)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(GgufValue::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    pub fn get_array(&self, key: &str) -> Option<&[GgufValue]> {
        self.get(key).and_then(GgufValue::as_array)
    }

    /// Like [`get_u64`](Self::get_u64), but a missing or mistyped key is an error naming it.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.require(key, "a non-negative integer", GgufValue::as_u64)
    }

    pub fn require_f32(&self, key: &str) -> Result<f32> {
        self.require(key, "a float", GgufValue::as_f32)
    }

    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.require(key, "a string", GgufValue::as_str)
    }

    pub fn require_array(&self, key: &str) -> Result<&[GgufValue]> {
        self.require(key, "an array", GgufValue::as_array)
    }

    fn require<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        convert: impl Fn(&'a GgufValue) -> Option<T>,
    ) -> Result<T> {
        let value = self
            .get(key)
            .ok_or_else(|| anyhow!("{}: required metadata key '{key}' is missing", self.label))?;
        convert(value).ok_or_else(|| {
            anyhow!(
                "{}: metadata key '{key}' should be {expected}, but is {} ({})",
                self.label,
                value.type_name(),
                preview(value)
            )
        })
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).and_then(|i| self.tensors.get(*i))
    }

    /// Like [`tensor_info`](Self::tensor_info), but a missing tensor is an error naming it.
    pub fn require_tensor(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor_info(name)
            .ok_or_else(|| anyhow!("{}: tensor '{name}' not found", self.label))
    }

    /// The raw (possibly quantised, possibly unaligned) bytes of tensor `name`.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.require_tensor(name)?;
        self.info_bytes(info)
            .with_context(|| format!("{}: reading tensor '{name}'", self.label))
    }

    fn info_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let n = usize::try_from(info.n_elements())?;
        let len = info.dtype.bytes_for(n)?;
        let start = usize::try_from(self.data_start.saturating_add(info.offset))?;
        let end = start.checked_add(len);
        end.and_then(|end| self.backing.bytes().get(start..end))
            .ok_or_else(|| anyhow!("data lies outside the file"))
    }

    /// Tensor `name` dequantised to `f32`, with its row-major shape (outermost first).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self.require_tensor(name)?;
        let bytes = self.tensor_bytes(name)?;
        let mut out = vec![0f32; usize::try_from(info.n_elements())?];
        dequantize(info.dtype, bytes, &mut out)
            .with_context(|| format!("{}: dequantising tensor '{name}'", self.label))?;
        Ok((out, info.shape()))
    }
}

/// A value rendered for an error message, cut short so huge arrays stay readable.
fn preview(v: &GgufValue) -> String {
    let s = format!("{v:?}");
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Undoes llama.cpp's row permutation of the Llama Q/K projection weights.
///
/// `convert_hf_to_gguf.py` reorders each head's rows from the HF "rotate half" RoPE layout to
/// the interleaved-pairs layout llama.cpp's kernels use:
/// `w.reshape(n_heads, 2, head_dim / 2, cols).swapaxes(1, 2).reshape(rows, cols)`. This restores
/// the HF order, so a model written for HF weights (rotate-half RoPE) can use GGUF weights:
/// HF row `h*hd + j*(hd/2) + i` is GGUF row `h*hd + 2*i + j`.
///
/// `data` holds `n_rows` rows of `row_len` elements; any element type works, so rows of raw
/// quantised bytes can be reordered too. For K, `n_heads` is the number of KV heads. Also
/// reorders a bias vector (`row_len` 1).
pub fn unpermute_qk_rows<T: Copy>(
    data: &[T],
    n_rows: usize,
    row_len: usize,
    n_heads: usize,
) -> Result<Vec<T>> {
    let gguf_row = |_half: usize, i: usize, j: usize| 2 * i + j;
    let hf_row = |half: usize, i: usize, j: usize| j * half + i;
    reorder_rows(data, n_rows, row_len, n_heads, gguf_row, hf_row)
}

/// The permutation llama.cpp applies (the inverse of [`unpermute_qk_rows`]); for tests and
/// for writing GGUF files from HF weights.
pub fn permute_qk_rows<T: Copy>(
    data: &[T],
    n_rows: usize,
    row_len: usize,
    n_heads: usize,
) -> Result<Vec<T>> {
    let gguf_row = |_half: usize, i: usize, j: usize| 2 * i + j;
    let hf_row = |half: usize, i: usize, j: usize| j * half + i;
    reorder_rows(data, n_rows, row_len, n_heads, hf_row, gguf_row)
}

/// Within each head, output row `dst(half, i, j)` is input row `src(half, i, j)`.
fn reorder_rows<T: Copy>(
    data: &[T],
    n_rows: usize,
    row_len: usize,
    n_heads: usize,
    src: impl Fn(usize, usize, usize) -> usize,
    dst: impl Fn(usize, usize, usize) -> usize,
) -> Result<Vec<T>> {
    ensure!(
        n_rows.checked_mul(row_len) == Some(data.len()),
        "Q/K permutation: {} elements is not {n_rows} rows of {row_len}",
        data.len()
    );
    ensure!(
        n_heads > 0
            && n_heads
                .checked_mul(2)
                .is_some_and(|d| n_rows.is_multiple_of(d)),
        "Q/K permutation: {n_rows} rows do not split into {n_heads} heads of even size"
    );
    let head_dim = n_rows / n_heads;
    let half = head_dim / 2;
    let mut order = vec![0usize; n_rows];
    for h in 0..n_heads {
        for (i, j) in (0..half).flat_map(|i| [(i, 0), (i, 1)]) {
            order[h * head_dim + dst(half, i, j)] = h * head_dim + src(half, i, j);
        }
    }
    let mut out = Vec::with_capacity(data.len());
    for r in order {
        out.extend_from_slice(data.get(r * row_len..(r + 1) * row_len).unwrap_or_default());
    }
    Ok(out)
}
