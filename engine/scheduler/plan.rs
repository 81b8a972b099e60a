//! Building one step: hand the token budget to running requests and admissions in the policy's
//! order, growing block tables (preempting when full), and lay the rows out as a [`Batch`].

use std::time::Instant;

use super::aging;
use super::batch::{Batch, SampleSlot, SamplerReset};
use super::policy::BudgetOrder;
use super::Scheduler;
use crate::device::step::slot_of;
use crate::engine::request::RequestId;

/// Which running requests a pass over the running set considers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    All,
    Decodes,
    Prefills,
    /// Prefill chunks, while each decoding request only claims the block for its next token.
    PrefillsClaimingDecodes,
}

pub(super) fn plan(s: &mut Scheduler) -> Batch {
    s.step_no += 1;
    let mut b = s.spare.take().unwrap_or_default();
    b.clear();
    // Sized for a typical step (every running request plus a few admissions) to avoid regrowth.
    let seqs = s.running.len() + 8;
    b.step.input_ids.reserve(seqs);
    b.step.positions.reserve(seqs);
    b.step.slot_mapping.reserve(seqs);
    b.step.query_start_locs.reserve(seqs + 1);
    b.step.context_lens.reserve(seqs);
    b.step.logits_indices.reserve(seqs);
    b.samples.reserve(seqs);
    b.scheduled.reserve(seqs);
    b.step.query_start_locs.push(0);
    let mut budget = s.cfg.max_batch_tokens;
    serve_overdue(s, &mut b, &mut budget);
    match s.policy.budget_order() {
        BudgetOrder::Arrival => {
            plan_running(s, &mut b, &mut budget, Pass::All);
            admit(s, &mut b, &mut budget);
        }
        BudgetOrder::DecodeFirst => {
            plan_running(s, &mut b, &mut budget, Pass::Decodes);
            plan_running(s, &mut b, &mut budget, Pass::Prefills);
            admit(s, &mut b, &mut budget);
        }
        BudgetOrder::PrefillFirst => {
            // Only the budget goes to prefill work first; blocks are claimed in admission order,
            // decoders included. Otherwise the chunks and admissions planned ahead of a decoder
            // take the block it needs and it preempts itself. With overlap that voids the sample
            // still in flight, so a request readmitted and preempted again one step later comes
            // back with no new token, and two such requests can take each other's block turn
            // about forever.
            plan_running(s, &mut b, &mut budget, Pass::PrefillsClaimingDecodes);
            // Resuming a preempted request is recompute, not a new prompt: it waits for the
            // decodes, or it could spend every step's budget on work a later step preempts again
            // while the decoders that would free the cache never run. Fresh requests queue behind
            // preempted ones, so they wait too.
            let resuming = !s.resumed.is_empty();
            if !resuming {
                admit(s, &mut b, &mut budget);
            }
            plan_running(s, &mut b, &mut budget, Pass::Decodes);
            if resuming {
                admit(s, &mut b, &mut budget);
            }
        }
    }
    if !b.is_empty() {
        std::mem::swap(&mut b.sampler_drops, &mut s.pending_drops);
        // A block table row per sequence, padded to the longest.
        b.step.max_blocks_per_seq = b
            .scheduled
            .iter()
            .map(|(id, ..)| s.seqs[id].blocks.len())
            .max()
            .unwrap_or(0);
        for (id, ..) in &b.scheduled {
            let ids = s.seqs[id].blocks.ids();
            b.step.block_tables.extend_from_slice(ids);
            let pad = b.step.max_blocks_per_seq - ids.len();
            b.step.block_tables.extend(std::iter::repeat_n(0, pad));
        }
    }
    b
}

fn plan_running(s: &mut Scheduler, b: &mut Batch, budget: &mut usize, pass: Pass) {
    // Index-based: preemption removes entries from `s.running` as we go.
    let mut i = 0;
    while i < s.running.len() && *budget > 0 {
        let id = s.running[i];
        let seq = &s.seqs[&id];
        let (wanted, claim) = match pass {
            Pass::All => (true, false),
            Pass::Decodes => (seq.is_decoding(), false),
            Pass::Prefills => (!seq.is_decoding(), false),
            Pass::PrefillsClaimingDecodes => (true, seq.is_decoding()),
        };
        if !wanted || seq.planned_in == s.step_no || seq.at_max_tokens() || seq.remaining() == 0 {
            i += 1;
            continue;
        }
        // A decoder's work is its one next token.
        let n = if claim {
            1
        } else {
            seq.remaining().min(*budget)
        };
        let preemptions = s.preemptions;
        if !grow_or_preempt(s, id, n) {
            continue; // `id` itself was preempted; `running[i]` is now the next request
        }
        if claim {
            s.seqs
                .get_mut(&id)
                .expect("running request exists")
                .claimed_in = s.step_no;
        } else {
            add_rows(s, b, id, n);
            *budget -= n;
        }
        // Victims are never already-planned requests, so only a preemption can shift `id`.
        if s.preemptions != preemptions {
            i = s.running.iter().position(|&r| r == id).unwrap_or(i);
        }
        i += 1;
    }
}

/// Serves the overdue requests (see [`aging`]), oldest first, before the policy plans the rest of
/// the step.
fn serve_overdue(s: &mut Scheduler, b: &mut Batch, budget: &mut usize) {
    // `by_arrival` only changes on `add` and `remove`, never while planning.
    let mut k = 0;
    while k < s.by_arrival.len() && *budget > 0 {
        let id = s.by_arrival[k];
        k += 1;
        if !aging::is_overdue(s, id) {
            return; // nor is anything younger
        }
        let seq = &s.seqs[&id];
        if seq.planned_in == s.step_no {
            continue;
        }
        if s.running.contains(&id) {
            if seq.at_max_tokens() || seq.remaining() == 0 {
                continue;
            }
            let n = seq.remaining().min(*budget);
            if grow_or_preempt(s, id, n) {
                add_rows(s, b, id, n);
                *budget -= n;
            }
        } else {
            // Only the oldest may preempt to get in: it alone is sure to fit once the others give
            // way, and it alone needs to for the guarantee.
            admit_one(s, b, budget, id, k == 1);
        }
    }
}

/// Makes room for `n` more tokens of running request `id`, preempting others (never ones already
/// in this step or holding a claimed block) as the policy and aging choose. False if `id` itself
/// had to go.
fn grow_or_preempt(s: &mut Scheduler, id: RequestId, n: usize) -> bool {
    loop {
        let seq = s.seqs.get_mut(&id).expect("running request exists");
        let need = seq.num_computed + n;
        if s.alloc.allocate_slots(&mut seq.blocks, need).is_some() {
            return true;
        }
        let Some(victim) = aging::choose_victim(s, Some(id)) else {
            return false;
        };
        s.preempt(victim);
        if victim == id {
            return false;
        }
    }
}

/// Admits waiting requests (preempted ones first) while there is budget, a free running slot and
/// room in the cache. Admission never preempts a running request.
fn admit(s: &mut Scheduler, b: &mut Batch, budget: &mut usize) {
    while *budget > 0 && s.running.len() < s.cfg.max_num_seqs {
        let id = match (s.resumed.front(), s.waiting.first()) {
            (Some(&id), _) | (None, Some(&id)) => id,
            (None, None) => return,
        };
        if !admit_one(s, b, budget, id, false) {
            return;
        }
    }
}

/// Moves waiting request `id` (fresh or preempted) to the running set with its first chunk in
/// this step, if a running slot and the cache have room for it; with `preempt`, running requests
/// the aging rules allow are preempted to make that room. False if it stays waiting.
fn admit_one(
    s: &mut Scheduler,
    b: &mut Batch,
    budget: &mut usize,
    id: RequestId,
    preempt: bool,
) -> bool {
    if *budget == 0 {
        return false;
    }
    while s.running.len() >= s.cfg.max_num_seqs {
        match aging::choose_victim(s, None).filter(|_| preempt) {
            Some(victim) => s.preempt(victim),
            None => return false,
        }
    }
    let bs = s.cfg.block_size;
    let seq = s.seqs.get_mut(&id).expect("waiting request exists");
    // Leave at least one token to compute so the request gets logits to sample from.
    let max_cached_blocks = (seq.tokens.len() - 1) / bs;
    let cached = s
        .alloc
        .match_prefix(&mut seq.blocks, &seq.tokens, max_cached_blocks);
    let n = (seq.tokens.len() - cached).min(*budget);
    loop {
        let seq = s.seqs.get_mut(&id).expect("waiting request exists");
        if s.alloc
            .allocate_slots(&mut seq.blocks, cached + n)
            .is_some()
        {
            break;
        }
        match aging::choose_victim(s, None).filter(|_| preempt) {
            Some(victim) => s.preempt(victim),
            None => {
                let seq = s.seqs.get_mut(&id).expect("waiting request exists");
                s.alloc.free(&mut seq.blocks);
                return false;
            }
        }
    }
    let seq = s.seqs.get_mut(&id).expect("waiting request exists");
    seq.num_computed = cached;
    seq.num_done = cached;
    seq.num_cached_prompt = cached.min(seq.num_prompt);
    seq.admitted_order = s.next_admission;
    s.next_admission += 1;
    if seq.first_scheduled.is_none() {
        seq.first_scheduled = Some(Instant::now());
        s.first_admissions += 1;
    }
    // Usually the queue's head; aging may admit from anywhere in it.
    if let Some(at) = s.resumed.iter().position(|&r| r == id) {
        s.resumed.remove(at);
    } else if let Some(at) = s.waiting.iter().position(|&r| r == id) {
        s.waiting.remove(at);
    }
    s.running.push(id);
    add_rows(s, b, id, n);
    *budget -= n;
    true
}

/// Appends `n` rows of request `id` (from its first uncomputed token) to the step.
fn add_rows(s: &mut Scheduler, b: &mut Batch, id: RequestId, n: usize) {
    let bs = s.cfg.block_size;
    let seq = s.seqs.get_mut(&id).expect("scheduled request exists");
    seq.planned_in = s.step_no;
    let start = seq.num_computed;
    let known = seq.tokens.len();
    for pos in start..start + n {
        let row = b.step.input_ids.len() as u32;
        if pos < known {
            b.step.input_ids.push(seq.tokens[pos]);
        } else {
            // The sample this request's previous step is still producing.
            let from = s
                .last_samples
                .get(&id)
                .copied()
                .expect("placeholder has a source sample");
            b.carry.push((row, from));
            b.step.input_ids.push(0);
        }
        b.step.positions.push(pos as u32);
        b.step.slot_mapping.push(slot_of(seq.blocks.ids(), pos, bs));
    }
    seq.num_computed += n;
    let prompt = seq.num_prompt.saturating_sub(start).min(n);
    s.policy.on_planned(seq, prompt, n - prompt);
    b.step.query_start_locs.push(b.step.input_ids.len() as u32);
    b.step.context_lens.push(seq.num_computed as u32);
    b.scheduled.push((id, seq.epoch, seq.num_computed));
    if seq.num_computed == known + seq.pending {
        b.step
            .logits_indices
            .push(b.step.input_ids.len() as u32 - 1);
        b.samples.push(SampleSlot {
            id,
            epoch: seq.epoch,
        });
        seq.pending += 1;
        if seq.needs_sampler_reset {
            seq.needs_sampler_reset = false;
            let needs_prompt = seq.params.repetition_penalty != 1.0;
            b.sampler_resets.push(SamplerReset {
                id,
                params: seq.params.clone(),
                seed: seq.seed,
                prompt: if needs_prompt {
                    seq.tokens[..seq.num_prompt].to_vec()
                } else {
                    Vec::new()
                },
                generated: seq.output().to_vec(),
            });
        }
    }
}
