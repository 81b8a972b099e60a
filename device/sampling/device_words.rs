//! The device sampler's (kernels/sampling.cu) words: one row's [`DeviceSampling`] packed as the
//! kernel's `SampleParams`, and one row's result words read back as a [`Sampled`]. Shared by the
//! CUDA backend and the emulated-kernel tests, so both exercise the same layout.

use super::params::TokenLogprob;
use super::{DeviceSampling, Sampled, MAX_DEVICE_TOP_LOGPROBS};

/// u32 words of one row's `SampleParams` (40 bytes).
pub const PARAM_WORDS: usize = 10;
/// u32 words of one row's result: token, logprob, top ids [20], top logprobs [20].
pub const OUT_WORDS: usize = 2 + 2 * MAX_DEVICE_TOP_LOGPROBS;
const GREEDY: u32 = 1;
const LOGPROBS: u32 = 2;

/// One row's `SampleParams` as the kernel reads it (little-endian u64 halves, low first).
pub fn pack(p: &DeviceSampling, out: &mut [u32]) {
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

/// The sample of one row from its [`OUT_WORDS`] result words; `vocab` bounds the top logprobs.
pub fn unpack(p: &DeviceSampling, words: &[u32], vocab: usize) -> Sampled {
    let token = words[0];
    let logprob = p.logprobs.map(|n| {
        let n = (n as usize).min(vocab);
        TokenLogprob {
            token,
            logprob: f32::from_bits(words[1]),
            top: (0..n)
                .map(|a| {
                    let lp = words[2 + MAX_DEVICE_TOP_LOGPROBS + a];
                    (words[2 + a], f32::from_bits(lp))
                })
                .collect(),
        }
    });
    Sampled { token, logprob }
}
