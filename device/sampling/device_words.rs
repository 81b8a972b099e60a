//! The device sampler's (kernels/sampling.cu) words: one row's [`DeviceSampling`] packed as the
//! kernel's `SampleParams`, one row's result words read back as a [`Sampled`], and the
//! constrained rows' words `constrain_rows` reads. Shared by the
//! CUDA backend and the emulated-kernel tests, so both exercise the same layout.

use super::params::TokenLogprob;
use super::{DeviceSampling, RowConstraint, Sampled, MAX_DEVICE_TOP_LOGPROBS};

/// u32 words of one row's `SampleParams` (48 bytes: 8-byte aligned, it holds u64s).
pub const PARAM_WORDS: usize = 12;
/// `SampleParams::adjusted` of an unconstrained row.
pub const NOT_ADJUSTED: u32 = u32::MAX;
/// u32 words of one row's result: token, logprob, top ids [20], top logprobs [20].
pub const OUT_WORDS: usize = 2 + 2 * MAX_DEVICE_TOP_LOGPROBS;
const GREEDY: u32 = 1;
const LOGPROBS: u32 = 2;

/// Every entry's `SampleParams`, [`PARAM_WORDS`] each: the i-th constrained entry picks from
/// row i of the constrained rows the sampler is given (`adjusted = i`).
pub fn pack_entries(entries: &[DeviceSampling], out: &mut [u32]) {
    let mut constrained = 0;
    for (p, w) in entries.iter().zip(out.chunks_exact_mut(PARAM_WORDS)) {
        let adjusted = if p.constrained {
            constrained += 1;
            constrained - 1
        } else {
            NOT_ADJUSTED
        };
        pack(p, adjusted, w);
    }
}

/// One row's `SampleParams` as the kernel reads it (little-endian u64 halves, low first).
fn pack(p: &DeviceSampling, adjusted: u32, out: &mut [u32]) {
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
        adjusted,
        0,
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

/// u32 words of one constrained row's `ConstrainInfo`: logits row, first mask word, first bias
/// pair, bias pairs.
pub const INFO_WORDS: usize = 4;
/// `ConstrainInfo::mask` of a row with a bias and no mask.
const NO_MASK: u32 = u32::MAX;

/// Mask words per constrained row for a vocabulary of `vocab`.
pub fn mask_words(vocab: usize) -> usize {
    vocab.div_ceil(32)
}

/// Where [`pack_constraints`] put the masks and the bias pairs, in words from the start of its
/// output (the infos are at 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConstraintLayout {
    pub masks_at: usize,
    pub bias_at: usize,
    pub words: usize,
}

/// Writes into `out` (cleared) what `constrain_rows` reads for `constraints`, the j-th for logits
/// row `rows[j]`: [`INFO_WORDS`] per row, then the masks ([`mask_words`] each, only for rows that
/// have one: words past a mask are zero, words past the vocabulary dropped), then the bias as
/// (token, f32 bits) pairs in each row's order.
pub fn pack_constraints(
    rows: &[u32],
    constraints: &[RowConstraint],
    vocab: usize,
    out: &mut Vec<u32>,
) -> ConstraintLayout {
    let per_mask = mask_words(vocab);
    let masked = constraints.iter().filter(|c| c.mask.is_some()).count();
    let masks_at = INFO_WORDS * constraints.len();
    let bias_at = masks_at + per_mask * masked;
    out.clear();
    out.resize(bias_at, 0);
    let (mut mask_slot, mut pairs) = (0, 0);
    for (j, (&row, c)) in rows.iter().zip(constraints).enumerate() {
        let mask = match c.mask {
            Some(words) => {
                let at = masks_at + mask_slot * per_mask;
                let n = words.len().min(per_mask);
                out[at..at + n].copy_from_slice(&words[..n]);
                mask_slot += 1;
                (at - masks_at) as u32
            }
            None => NO_MASK,
        };
        let info = [row, mask, pairs as u32, c.bias.len() as u32];
        out[j * INFO_WORDS..(j + 1) * INFO_WORDS].copy_from_slice(&info);
        for &(id, b) in c.bias {
            out.extend_from_slice(&[id, b.to_bits()]);
        }
        pairs += c.bias.len();
    }
    ConstraintLayout {
        masks_at,
        bias_at,
        words: out.len(),
    }
}
