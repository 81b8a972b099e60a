//! Weights of an HF model directory: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`, memory-mapped and converted to f32 one tensor at a time.

use anyhow::{bail, ensure, Context, Result};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use safetensors::SafeTensors;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use super::weights::{HostTensor, WeightSource};

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset of the data section (after the 8-byte length and the JSON header).
    data_start: usize,
    metadata: Metadata,
}

pub struct SafetensorsDir {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    index: HashMap<String, usize>,
}

impl SafetensorsDir {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            shard_files(&index_path)?
        } else {
            bail!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            );
        };
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for path in files {
            let shard = open_shard(&path)?;
            for name in shard.metadata.tensors().keys() {
                if index.insert(name.clone(), shards.len()).is_some() {
                    bail!(
                        "{}: tensor '{name}' appears in more than one shard",
                        path.display()
                    );
                }
            }
            shards.push(shard);
        }
        Ok(SafetensorsDir {
            dir: dir.to_path_buf(),
            shards,
            index,
        })
    }
}

fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index_path)
        .with_context(|| format!("reading {}", index_path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index_path.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{}: no 'weight_map' object", index_path.display()))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut names = BTreeSet::new();
    for file in map.values() {
        let file = file.as_str().with_context(|| {
            format!(
                "{}: weight_map values must be file names",
                index_path.display()
            )
        })?;
        ensure!(
            !file.contains('/') && !file.contains('\\') && file != "..",
            "{}: shard name '{file}' must be a plain file name",
            index_path.display()
        );
        names.insert(file.to_string());
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the file is only read; tandem does not write model files while serving them.
    let mmap =
        unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
    let (data_start, metadata) = parse_header(&mmap, &path.display().to_string())?;
    Ok(Shard {
        path: path.to_path_buf(),
        mmap,
        data_start,
        metadata,
    })
}

/// Checks an (untrusted) safetensors file's header: (where its data section starts, metadata).
/// Afterwards every tensor's data range lies inside `bytes`.
fn parse_header(bytes: &[u8], label: &str) -> Result<(usize, Metadata)> {
    let (header_len, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| {
        anyhow::anyhow!("{label}: invalid safetensors file (truncated or corrupt?): {e}")
    })?;
    let data_start = 8usize
        .checked_add(header_len)
        .with_context(|| format!("{label}: header length overflows"))?;
    let data_len = bytes.len().saturating_sub(data_start);
    for (name, info) in metadata.tensors() {
        let (start, end) = info.data_offsets;
        ensure!(
            start <= end && end <= data_len,
            "{label}: tensor '{name}' lies at bytes {start}..{end} of a data section of {data_len} bytes (truncated file?)"
        );
    }
    Ok((data_start, metadata))
}

/// Tensor `name` of a file whose header [`parse_header`] checked.
fn tensor(bytes: &[u8], data_start: usize, metadata: &Metadata, name: &str) -> Result<HostTensor> {
    let info = metadata
        .info(name)
        .with_context(|| format!("no tensor '{name}'"))?;
    let (start, end) = info.data_offsets;
    let bytes = bytes
        .get(data_start + start..data_start + end)
        .with_context(|| format!("tensor '{name}' lies outside the file"))?;
    let data = to_f32(info.dtype, bytes).with_context(|| format!("tensor '{name}'"))?;
    let n = info.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    ensure!(
        n == Some(data.len()),
        "tensor '{name}' holds {} values but its shape {:?} needs {}",
        data.len(),
        info.shape,
        n.map_or("more than fit in memory".to_string(), |n| n.to_string())
    );
    Ok(HostTensor {
        data,
        shape: info.shape.clone(),
    })
}

/// Every tensor of a safetensors file held in memory, through the same checks as a file on disk
/// (for fuzzing the reader with truncated and corrupted files).
#[doc(hidden)]
pub fn tensors_from_bytes(bytes: &[u8]) -> Result<Vec<(String, HostTensor)>> {
    let (data_start, metadata) = parse_header(bytes, "<memory>")?;
    let mut names: Vec<String> = metadata.tensors().into_keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let t = tensor(bytes, data_start, &metadata, &name)?;
            Ok((name, t))
        })
        .collect()
}

impl WeightSource for SafetensorsDir {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn load(&self, name: &str) -> Result<HostTensor> {
        let shard = &self.shards[*self
            .index
            .get(name)
            .with_context(|| format!("no tensor '{name}'"))?];
        tensor(&shard.mmap, shard.data_start, &shard.metadata, name)
            .with_context(|| shard.path.display().to_string())
    }
}

/// Converts little-endian F32/F16/BF16 bytes (possibly unaligned) to f32.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => bail!("dtype {other:?} is not supported (F32, F16, BF16)"),
    })
}
