//! Bounds-checked parsing of a GGUF header, its metadata and its tensor infos.
//!
//! The input is untrusted: every read is checked against the end of the buffer, and every length
//! or count read from the file is checked against the bytes that remain *before* anything is
//! allocated for it, so a hostile file yields an error rather than a panic or a huge allocation.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, ensure, Context, Result};

use super::{GgufTensorInfo, GgufValue};
use crate::device::quant::GgmlType;

/// Nesting limit for array values (real files use at most one level).
const MAX_ARRAY_DEPTH: usize = 8;
/// Total array elements allowed in one file's metadata. Real vocabularies are a few hundred
/// thousand tokens; the cap bounds memory, since each element becomes a 32-byte `GgufValue`.
const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// Everything in a GGUF file except the tensor data itself.
pub(super) struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    /// Absolute byte offset of the data section; tensor offsets are relative to it.
    pub data_start: u64,
}

/// Parses and validates the header of `bytes`, including that every tensor's data lies inside it.
pub(super) fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut c = Cursor::new(bytes);
    let magic = c.take(4, "magic")?;
    ensure!(
        magic == b"GGUF",
        "not a GGUF file: starts with {magic:02x?}, expected the magic bytes \"GGUF\""
    );
    let version = c.u32("version")?;
    ensure!(
        version == 2 || version == 3,
        "unsupported GGUF version {version} (only versions 2 and 3 are supported)"
    );
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata count")?;
    let metadata = read_metadata(&mut c, kv_count)?;
    let tensors = read_tensor_infos(&mut c, tensor_count)?;
    let alignment = alignment(&metadata)?;
    let data_start = (c.pos as u64)
        .checked_next_multiple_of(alignment)
        .context("data section offset overflows")?;
    for t in &tensors {
        check_tensor_range(t, data_start, bytes.len() as u64)
            .with_context(|| format!("tensor '{}'", t.name))?;
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        data_start,
    })
}

fn read_metadata(c: &mut Cursor, count: u64) -> Result<BTreeMap<String, GgufValue>> {
    let mut map = BTreeMap::new();
    // Each iteration consumes bytes or fails, so the loop is bounded by the file size.
    for i in 0..count {
        let key = c.string(&format!("metadata key #{i}"))?;
        let value = c
            .value_with_type(0)
            .with_context(|| format!("metadata value of '{key}'"))?;
        ensure!(
            !map.contains_key(&key),
            "duplicate metadata key '{key}' (entry #{i})"
        );
        map.insert(key, value);
    }
    Ok(map)
}

fn read_tensor_infos(c: &mut Cursor, count: u64) -> Result<Vec<GgufTensorInfo>> {
    let mut tensors = Vec::new();
    let mut names = HashSet::new();
    for i in 0..count {
        let name = c.string(&format!("name of tensor #{i}"))?;
        let info = read_tensor_info(c, name).with_context(|| format!("tensor info #{i}"))?;
        ensure!(
            names.insert(info.name.clone()),
            "duplicate tensor name '{}' (tensor #{i})",
            info.name
        );
        tensors.push(info);
    }
    Ok(tensors)
}

fn read_tensor_info(c: &mut Cursor, name: String) -> Result<GgufTensorInfo> {
    let what = format!("tensor '{name}'");
    let n_dims = c.u32(&what)?;
    ensure!(
        n_dims <= MAX_DIMS,
        "{what} has {n_dims} dimensions; at most {MAX_DIMS} are allowed"
    );
    let dims = (0..n_dims)
        .map(|_| c.u64(&what))
        .collect::<Result<Vec<_>>>()?;
    let type_id = c.u32(&what)?;
    let dtype =
        GgmlType::from_u32(type_id).with_context(|| format!("{what} has type {type_id}"))?;
    let offset = c.u64(&what)?;
    Ok(GgufTensorInfo {
        name,
        dims,
        dtype,
        offset,
    })
}

/// Reads `general.alignment` (default 32); it must be a power of two, as in ggml.
fn alignment(metadata: &BTreeMap<String, GgufValue>) -> Result<u64> {
    let Some(v) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match v.as_u64() {
        Some(a) if a.is_power_of_two() => Ok(a),
        _ => bail!("general.alignment must be a power of two, got {v:?}"),
    }
}

/// Checks the element count is sane, whole blocks per row, and the data lies inside the file.
fn check_tensor_range(t: &GgufTensorInfo, data_start: u64, file_len: u64) -> Result<()> {
    let n = t
        .dims
        .iter()
        .try_fold(1u64, |acc, d| acc.checked_mul(*d))
        .with_context(|| format!("dimensions {:?} overflow the element count", t.dims))?;
    let block = t.dtype.block_size() as u64;
    let row = t.dims.first().copied().unwrap_or(1);
    ensure!(
        row.is_multiple_of(block),
        "row length {row} (dims[0]) is not a multiple of the {:?} block size {block}",
        t.dtype
    );
    let n = usize::try_from(n).context("element count does not fit in memory")?;
    let len = t.dtype.bytes_for(n)? as u64;
    let start = data_start.checked_add(t.offset);
    let end = start.and_then(|s| s.checked_add(len));
    match end {
        Some(end) if end <= file_len => Ok(()),
        _ => bail!(
            "data ({len} bytes at data offset {}, data section starting at {data_start}) lies \
             outside the file ({file_len} bytes): the file is truncated or corrupt",
            t.offset
        ),
    }
}

/// A read position in an untrusted byte buffer.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Array elements still allowed before `MAX_ARRAY_ELEMENTS` is reached.
    array_budget: u64,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor {
            bytes,
            pos: 0,
            array_budget: MAX_ARRAY_ELEMENTS,
        }
    }

    fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    /// The next `n` bytes, or a "truncated" error naming `what` and the offset.
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end));
        let Some(slice) = slice else {
            bail!(
                "file is truncated: {what} needs {n} bytes at offset {}, but the file is {} bytes",
                self.pos,
                self.bytes.len()
            );
        };
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes.
    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        ensure!(
            len <= self.remaining(),
            "file is truncated or corrupt: {what} at offset {at} claims a string of {len} bytes, \
             but only {} bytes remain",
            self.remaining()
        );
        let bytes = self.take(len as usize, what)?;
        let s = std::str::from_utf8(bytes)
            .with_context(|| format!("{what} at offset {at} is not valid UTF-8"))?;
        Ok(s.to_owned())
    }

    /// A u32 value type followed by a value of that type.
    fn value_with_type(&mut self, depth: usize) -> Result<GgufValue> {
        let ty = self.u32("value type")?;
        self.value(ty, depth)
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue> {
        use GgufValue as V;
        Ok(match ty {
            0 => V::U8(u8::from_le_bytes(self.array("u8 value")?)),
            1 => V::I8(i8::from_le_bytes(self.array("i8 value")?)),
            2 => V::U16(u16::from_le_bytes(self.array("u16 value")?)),
            3 => V::I16(i16::from_le_bytes(self.array("i16 value")?)),
            4 => V::U32(self.u32("u32 value")?),
            5 => V::I32(i32::from_le_bytes(self.array("i32 value")?)),
            6 => V::F32(f32::from_le_bytes(self.array("f32 value")?)),
            7 => V::Bool(self.array::<1>("bool value")? != [0]),
            8 => V::String(self.string("string value")?),
            9 => V::Array(self.array_value(depth)?),
            10 => V::U64(self.u64("u64 value")?),
            11 => V::I64(i64::from_le_bytes(self.array("i64 value")?)),
            12 => V::F64(f64::from_le_bytes(self.array("f64 value")?)),
            _ => bail!(
                "unknown metadata value type {ty} at offset {} (known: 0..=12)",
                self.pos.saturating_sub(4)
            ),
        })
    }

    fn array_value(&mut self, depth: usize) -> Result<Vec<GgufValue>> {
        ensure!(
            depth < MAX_ARRAY_DEPTH,
            "arrays nested deeper than {MAX_ARRAY_DEPTH}"
        );
        let at = self.pos;
        let ty = self.u32("array element type")?;
        let count = self.u64("array length")?;
        let min = min_value_size(ty)
            .with_context(|| format!("unknown array element type {ty} at offset {at}"))?;
        ensure!(
            count.saturating_mul(min) <= self.remaining(),
            "file is truncated or corrupt: array at offset {at} claims {count} elements of type \
             {ty}, more than the {} remaining bytes can hold",
            self.remaining()
        );
        ensure!(
            count <= self.array_budget,
            "array at offset {at} has {count} elements; metadata arrays may hold at most \
             {MAX_ARRAY_ELEMENTS} elements in total"
        );
        self.array_budget -= count;
        (0..count)
            .map(|i| {
                self.value(ty, depth + 1)
                    .with_context(|| format!("element {i} of the array at offset {at}"))
            })
            .collect()
    }
}

/// The fewest bytes a value of type `ty` can occupy, or `None` for an unknown type.
fn min_value_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        8 | 10..=12 => Some(8),
        9 => Some(12),
        _ => None,
    }
}
