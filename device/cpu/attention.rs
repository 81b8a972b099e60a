//! Paged attention on the CPU: K/V written through the slot mapping, read through block tables.
//!
//! Cache layout per layer: `[num_blocks, block_size, num_kv_heads, head_dim]`; slot
//! `b * block_size + o` is offset `o` of block `b`. Query head `h` reads kv head
//! `h / (num_heads / num_kv_heads)` (grouped-query attention).

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::ops::dot;
use crate::device::backend::AttentionParams;
use crate::device::step::StepInput;

/// Copies each row's k and v heads to its cache slot; slot -1 rows are skipped.
pub fn write_kv(
    qkv: &[f32],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    slot_mapping: &[i64],
    p: &AttentionParams,
) -> Result<()> {
    let kv = p.layout.kv_width();
    let k_off = p.layout.q_width();
    let slots = p.cache.num_blocks * p.cache.block_size;
    for (row, &slot) in qkv.chunks_exact(p.layout.row_width()).zip(slot_mapping) {
        if slot < 0 {
            continue;
        }
        let slot = slot as usize;
        ensure!(
            slot < slots,
            "slot {slot} is outside the cache of {slots} slots"
        );
        k_cache[slot * kv..(slot + 1) * kv].copy_from_slice(&row[k_off..k_off + kv]);
        v_cache[slot * kv..(slot + 1) * kv].copy_from_slice(&row[k_off + kv..k_off + 2 * kv]);
    }
    Ok(())
}

/// One query head's attention: softmax(q·Kᵀ · scale) · V over keys `first..=last`.
struct HeadJob<'a> {
    q: &'a [f32],
    block_table: &'a [u32],
    kv_head: usize,
    first: usize,
    last: usize,
}

/// Causal attention for every row and head of the step; `out` is `[rows, num_heads * head_dim]`.
pub fn attention(
    qkv: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    meta: &StepInput,
    p: &AttentionParams,
    out: &mut [f32],
) -> Result<()> {
    let l = p.layout;
    let hd = l.head_dim;
    let rows = meta.num_tokens();
    let group = l.num_heads / l.num_kv_heads;
    ensure!(
        out.len() >= rows * l.q_width(),
        "attention: output too small"
    );
    for s in 0..meta.num_seqs() {
        let (start, end) = meta.seq_rows(s);
        let blocks = (meta.context_lens[s] as usize).div_ceil(p.cache.block_size);
        ensure!(
            (meta.context_lens[s] as usize) >= end - start,
            "sequence {s}: context length below its new tokens"
        );
        ensure!(
            blocks <= meta.max_blocks_per_seq,
            "sequence {s}: block table too short"
        );
        for &b in &meta.block_table(s)[..blocks] {
            ensure!(
                (b as usize) < p.cache.num_blocks,
                "sequence {s}: block {b} outside the cache"
            );
        }
    }

    out[..rows * l.q_width()]
        .par_chunks_mut(hd)
        .enumerate()
        .for_each(|(i, o)| {
            let (row, head) = (i / l.num_heads, i % l.num_heads);
            let (s, key_pos) = row_key_position(meta, row);
            let first = p
                .sliding_window
                .map_or(0, |w| (key_pos + 1).saturating_sub(w));
            let q0 = row * l.row_width() + head * hd;
            let job = HeadJob {
                q: &qkv[q0..q0 + hd],
                block_table: meta.block_table(s),
                kv_head: head / group,
                first,
                last: key_pos,
            };
            attend_one_head(&job, k_cache, v_cache, p, o);
        });
    Ok(())
}

/// The sequence a row belongs to and the key index the row's token occupies.
fn row_key_position(meta: &StepInput, row: usize) -> (usize, usize) {
    // query_start_locs is sorted: the row's sequence is the last start at or before it.
    let s = meta
        .query_start_locs
        .partition_point(|&start| start as usize <= row)
        - 1;
    let (start, end) = meta.seq_rows(s);
    (
        s,
        meta.context_lens[s] as usize - (end - start) + (row - start),
    )
}

fn attend_one_head(
    job: &HeadJob,
    k_cache: &[f32],
    v_cache: &[f32],
    p: &AttentionParams,
    out: &mut [f32],
) {
    let hd = p.layout.head_dim;
    let bs = p.cache.block_size;
    let kv_width = p.layout.kv_width();
    let key_at = |j: usize| -> std::ops::Range<usize> {
        let slot = job.block_table[j / bs] as usize * bs + j % bs;
        let at = slot * kv_width + job.kv_head * hd;
        at..at + hd
    };
    // One pass with an online softmax (running max, rescaled sum and accumulator), so each
    // score is computed once.
    let (mut max, mut total) = (f32::NEG_INFINITY, 0.0f32);
    out.fill(0.0);
    for j in job.first..=job.last {
        let score = dot(job.q, &k_cache[key_at(j)]) * p.scale;
        if score > max {
            // exp(-inf) = 0 on the first key: the empty accumulator is scaled by 0.
            let rescale = (max - score).exp();
            total *= rescale;
            for o in out.iter_mut() {
                *o *= rescale;
            }
            max = score;
        }
        let weight = (score - max).exp();
        total += weight;
        let v = &v_cache[key_at(j)];
        for (o, vv) in out.iter_mut().zip(v) {
            *o += weight * vv;
        }
    }
    for o in out.iter_mut() {
        *o /= total;
    }
}
