//! A minimal GGUF (v3) writer, for building test fixtures and fuzz seeds in memory.
//!
//! It writes exactly what [`crate::model::gguf::GgufFile`] reads: metadata in insertion order,
//! then tensor infos, then the data section aligned to `general.alignment`, each tensor's data
//! padded to that alignment as llama.cpp does.

use std::path::Path;

use anyhow::{Context, Result};

use crate::device::quant::{quantize, GgmlType};
use crate::model::gguf::GgufValue;

/// Builds a GGUF file in memory.
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            version: 3,
            alignment: 32,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl GgufWriter {
    /// An empty GGUF v3 file with the default alignment of 32.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the version number written in the header (the layout written is the same).
    pub fn version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Sets the data alignment, recording it as `general.alignment` when it is not 32.
    pub fn alignment(&mut self, alignment: u32) -> &mut Self {
        self.alignment = alignment.max(1).into();
        if alignment != 32 {
            self.metadata("general.alignment", GgufValue::U32(alignment));
        }
        self
    }

    /// Adds a metadata entry (duplicates are written as given, for negative tests).
    pub fn metadata(&mut self, key: &str, value: GgufValue) -> &mut Self {
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Adds a tensor given GGUF `dims` (innermost first) and `values` encoded as `dtype`.
    pub fn tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        dtype: GgmlType,
        values: &[f32],
    ) -> Result<&mut Self> {
        let data = quantize(dtype, values).with_context(|| format!("encoding tensor '{name}'"))?;
        Ok(self.tensor_raw(name, dims, dtype.id(), data))
    }

    /// Adds a tensor with a raw type id and raw data, unchecked (for negative tests).
    pub fn tensor_raw(
        &mut self,
        name: &str,
        dims: &[u64],
        type_id: u32,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            type_id,
            data,
        });
        self
    }

    /// The complete file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        put_u32(&mut out, self.version);
        put_u64(&mut out, self.tensors.len() as u64);
        put_u64(&mut out, self.metadata.len() as u64);
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            put_u32(&mut out, value_type(value));
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            t.dims.iter().for_each(|d| put_u64(&mut out, *d));
            put_u32(&mut out, t.type_id);
            put_u64(&mut out, offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        for t in &self.tensors {
            pad(&mut out, self.alignment);
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_bytes())
            .with_context(|| format!("writing GGUF file {}", path.display()))
    }
}

fn pad(out: &mut Vec<u8>, alignment: u64) {
    let len = (out.len() as u64).next_multiple_of(alignment);
    out.resize(len as usize, 0);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The GGUF value type id of `v`.
pub fn value_type(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

/// Writes the value without its type id. An array's element type is its first element's
/// (an empty array is written as an array of u8).
fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => put_u32(out, *x),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(items) => {
            put_u32(out, items.first().map_or(0, value_type));
            put_u64(out, items.len() as u64);
            items.iter().for_each(|item| put_value(out, item));
        }
        GgufValue::U64(x) => put_u64(out, *x),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
