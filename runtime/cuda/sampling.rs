//! Device-side sampling: the launcher of `kernels/sampling.cu` (`sample_rows_<dtype>`), which
//! runs [`crate::runtime::sampling::sample`] without the penalties on each logits row, so only
//! token ids and requested logprobs come back to the host.
//!
//! UNVERIFIED ON A GPU when written (it builds, and the kernel assembles without spills); the
//! parity tests `sample_rows_*` in tests/cuda_parity.rs check it against the CPU sampler.
//!
//! The per-row parameters go up in one copy and the results come back in one, through buffers
//! sized for `max_seqs` rows when the step metadata is made ([`SampleBuffers`], part of
//! [`super::CudaMeta`]): sampling allocates nothing on the device per step.

use anyhow::{ensure, Result};
use cudarc::driver::{CudaSlice, CudaStream, PushKernelArg};

use super::{u32_of, CudaBackend, CudaMeta, CudaTensor};
use crate::runtime::request::TokenLogprob;
use crate::runtime::sampling::{DeviceSampling, Sampled, MAX_DEVICE_TOP_LOGPROBS};

/// `SAMPLE_THREADS` in sampling.cu.
const THREADS: u32 = 512;
/// u32 words of one row's `SampleParams` (40 bytes).
const PARAM_WORDS: usize = 10;
/// u32 words of one row's result: token, logprob, top ids [20], top logprobs [20].
const OUT_WORDS: usize = 2 + 2 * MAX_DEVICE_TOP_LOGPROBS;
const GREEDY: u32 = 1;
const LOGPROBS: u32 = 2;

/// The parameter and result buffers of [`CudaBackend::sample_rows_op`], for up to `rows` rows.
pub struct SampleBuffers {
    rows: usize,
    params_host: Vec<u32>,
    params_dev: CudaSlice<u32>,
    out_host: Vec<u32>,
    out_dev: CudaSlice<u32>,
}

impl SampleBuffers {
    pub(super) fn new(stream: &std::sync::Arc<CudaStream>, rows: usize) -> Result<Self> {
        let rows = rows.max(1);
        Ok(SampleBuffers {
            rows,
            params_host: vec![0; rows * PARAM_WORDS],
            params_dev: stream.alloc_zeros::<u32>(rows * PARAM_WORDS)?,
            out_host: vec![0; rows * OUT_WORDS],
            out_dev: stream.alloc_zeros::<u32>(rows * OUT_WORDS)?,
        })
    }
}

/// One row's `SampleParams` as the kernel reads it (little-endian u64 halves, low first).
fn pack(p: &DeviceSampling, out: &mut [u32]) {
    let flags = if p.greedy { GREEDY } else { 0 } | if p.logprobs.is_some() { LOGPROBS } else { 0 };
    out.copy_from_slice(&[
        p.inv_temperature.to_bits(),
        p.top_p.to_bits(),
        p.min_p.to_bits(),
        p.top_k,
        p.seed as u32,
        (p.seed >> 32) as u32,
        p.position as u32,
        (p.position >> 32) as u32,
        flags,
        p.logprobs.unwrap_or(0),
    ]);
}

impl CudaBackend {
    /// [`crate::runtime::backend::Backend::sample_rows`] on this device.
    pub(super) fn sample_rows_op(
        &self,
        logits: &CudaTensor,
        vocab: usize,
        params: &[DeviceSampling],
        meta: &mut CudaMeta,
        out: &mut Vec<Sampled>,
    ) -> Result<bool> {
        let rows = params.len();
        if rows == 0 {
            return Ok(true);
        }
        let buf = &mut meta.sampling;
        ensure!(
            rows <= buf.rows,
            "sampling {rows} rows exceeds the sampling buffers ({} rows)",
            buf.rows
        );
        ensure!(vocab > 0, "sampling rows of width 0");
        ensure!(
            logits.len() >= rows * vocab,
            "sampling {rows} rows of {vocab} from a tensor of {}",
            logits.len()
        );
        if let Some(n) = params
            .iter()
            .filter_map(|p| p.logprobs)
            .find(|&n| n as usize > MAX_DEVICE_TOP_LOGPROBS)
        {
            anyhow::bail!("{n} top logprobs requested; the device sampler returns at most 20");
        }
        let v32 = u32_of(vocab, "vocab")?;
        for (p, words) in params
            .iter()
            .zip(buf.params_host.chunks_exact_mut(PARAM_WORDS))
        {
            pack(p, words);
        }
        let n_params = rows * PARAM_WORDS;
        self.stream.memcpy_htod(
            &buf.params_host[..n_params],
            &mut buf.params_dev.slice_mut(..n_params),
        )?;
        let (lp, pp, op) = (
            self.tp(logits),
            self.ptr(&buf.params_dev),
            self.ptr(&buf.out_dev),
        );
        self.launch(&self.k.sample_rows, (rows as u32, 1, 1), THREADS, |b| {
            b.arg(&lp).arg(&v32).arg(&pp).arg(&op);
        })?;
        let n_out = rows * OUT_WORDS;
        self.stream
            .memcpy_dtoh(&buf.out_dev.slice(..n_out), &mut buf.out_host[..n_out])?;
        self.synchronize()?;
        for (p, r) in params.iter().zip(buf.out_host.chunks_exact(OUT_WORDS)) {
            let token = r[0];
            let logprob = p.logprobs.map(|n| {
                let n = (n as usize).min(vocab);
                TokenLogprob {
                    token,
                    logprob: f32::from_bits(r[1]),
                    top: (0..n)
                        .map(|a| (r[2 + a], f32::from_bits(r[2 + MAX_DEVICE_TOP_LOGPROBS + a])))
                        .collect(),
                }
            });
            out.push(Sampled { token, logprob });
        }
        Ok(true)
    }
}
