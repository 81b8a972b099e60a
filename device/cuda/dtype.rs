//! Storage dtypes of the CUDA backend and its tensor type.
//!
//! The Backend trait speaks f32 on the host. On the device a tensor is stored in the backend's
//! dtype: f32, or bf16 (half the bytes to move; every kernel widens to f32 to compute and rounds
//! once on store). `upload` rounds f32 to bf16 on the host (round to nearest even, as the kernels
//! do) and `download` widens back, so callers never see the storage type.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use cudarc::cublas::sys as cublas_sys;
use cudarc::driver::CudaSlice;
use half::bf16;

/// How the CUDA backend stores tensors (weights, activations and the KV cache alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }

    /// Elements per thread of the element-wise kernels that move one 16-byte vector per load
    /// (`Vec16` in dtype.cuh): 16 bytes' worth when `width` is a multiple of it, else 1.
    pub fn vector_elems(self, width: u32) -> u32 {
        let per = (16 / self.size()) as u32;
        if width.is_multiple_of(per) {
            per
        } else {
            1
        }
    }

    /// The suffix of the kernels' entry points for this dtype (`rms_norm_bf16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
        }
    }

    /// `v` as this dtype stores it, widened back to f32 (tests build their references from the
    /// values the device actually holds).
    pub fn round(self, v: &[f32]) -> Vec<f32> {
        match self {
            DType::F32 => v.to_vec(),
            DType::Bf16 => v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
        }
    }

    /// Host f32 values as this dtype's little-endian bytes.
    pub(super) fn encode(self, v: &[f32]) -> Vec<u8> {
        match self {
            DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            DType::Bf16 => v
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
                .collect(),
        }
    }

    /// This dtype's little-endian bytes as host f32 values.
    pub(super) fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DType::Bf16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
        }
    }

    /// cuBLAS's name for the type.
    pub(super) fn cuda_type(self) -> cublas_sys::cudaDataType {
        match self {
            DType::F32 => cublas_sys::cudaDataType::CUDA_R_32F,
            DType::Bf16 => cublas_sys::cudaDataType::CUDA_R_16BF,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            _ => bail!("unknown dtype {s:?} (expected bf16 or f32)"),
        }
    }
}

/// A device buffer of `len` elements stored as `dtype`.
pub struct CudaTensor {
    pub(super) buf: CudaSlice<u8>,
    pub(super) len: usize,
    pub(super) dtype: DType,
}

impl CudaTensor {
    /// Elements (not bytes).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The raw device bytes (`len * dtype.size()` of them in use).
    pub fn bytes(&self) -> &CudaSlice<u8> {
        &self.buf
    }

    pub fn bytes_mut(&mut self) -> &mut CudaSlice<u8> {
        &mut self.buf
    }
}
