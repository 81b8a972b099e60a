//! Property test: random interleavings of scheduler-like operations over several sequences keep
//! the allocator consistent, and every prefix hit returns blocks holding exactly that prefix.

use std::collections::HashMap;

use proptest::collection::vec;
use proptest::prelude::*;

use super::{BlockAllocator, SeqBlocks};

/// Sequence slots the operations address.
const SLOTS: usize = 5;
/// Shared "system prompts" new sequences may start with, so prefixes collide often.
const PROMPTS: [&[u32]; 3] = [&[], &[0, 1, 2, 0, 1, 2], &[2, 2, 2, 2, 1]];

#[derive(Debug, Clone)]
enum Op {
    /// Admits into `slot`: new tokens when empty, the same tokens again when preempted.
    Admit {
        slot: usize,
        tokens: Vec<u32>,
        max_blocks: usize,
    },
    /// Computes up to `chunk` more tokens; first appends `next` if all known tokens are computed.
    Step {
        slot: usize,
        chunk: usize,
        next: u32,
    },
    /// Finishes or aborts the sequence.
    Finish { slot: usize },
    /// Frees the sequence but remembers its tokens for re-admission.
    Preempt { slot: usize },
}

struct Seq {
    blocks: SeqBlocks,
    tokens: Vec<u32>,
    computed: usize,
}

enum Slot {
    Empty,
    Running(Seq),
    Preempted(Vec<u32>),
}

/// The allocator under test plus a model of what the cache blocks physically hold.
struct Harness {
    alloc: BlockAllocator,
    slots: Vec<Slot>,
    /// Per block: the token prefix whose K/V it holds in full, once its last slot is written.
    content: Vec<Option<Vec<u32>>>,
    /// Every hash ever published → its prefix, and back: hashes must be a function of prefixes.
    hash_to_prefix: HashMap<u64, Vec<u32>>,
    prefix_to_hash: HashMap<Vec<u32>, u64>,
}

impl Harness {
    fn new(num_blocks: usize, block_size: usize, caching: bool) -> Self {
        Harness {
            alloc: BlockAllocator::new(num_blocks, block_size, caching),
            slots: (0..SLOTS).map(|_| Slot::Empty).collect(),
            content: vec![None; num_blocks],
            hash_to_prefix: HashMap::new(),
            prefix_to_hash: HashMap::new(),
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Admit {
                slot,
                tokens,
                max_blocks,
            } => match std::mem::replace(&mut self.slots[slot], Slot::Empty) {
                Slot::Empty => self.admit(slot, tokens, max_blocks)?,
                Slot::Preempted(tokens) => self.admit(slot, tokens, max_blocks)?,
                running => self.slots[slot] = running,
            },
            Op::Step { slot, chunk, next } => {
                if let Slot::Running(seq) = &mut self.slots[slot] {
                    let mut seq = std::mem::replace(seq, Seq::empty());
                    self.step(&mut seq, chunk, next)?;
                    self.slots[slot] = Slot::Running(seq);
                }
            }
            Op::Finish { slot } | Op::Preempt { slot } => {
                if let Slot::Running(mut seq) =
                    std::mem::replace(&mut self.slots[slot], Slot::Empty)
                {
                    self.alloc.free(&mut seq.blocks);
                    prop_assert!(seq.blocks.is_empty());
                    if matches!(op, Op::Preempt { .. }) {
                        self.slots[slot] = Slot::Preempted(seq.tokens);
                    }
                }
            }
        }
        self.check()
    }

    /// Matches the cached prefix of `tokens` (leaving at least one token to compute).
    fn admit(
        &mut self,
        slot: usize,
        tokens: Vec<u32>,
        max_blocks: usize,
    ) -> Result<(), TestCaseError> {
        let bs = self.alloc.block_size();
        let max_blocks = max_blocks.min((tokens.len() - 1) / bs);
        let mut blocks = SeqBlocks::new();
        let n = self.alloc.match_prefix(&mut blocks, &tokens, max_blocks);
        prop_assert_eq!(n, blocks.len() * bs);
        prop_assert!(blocks.len() <= max_blocks);
        prop_assert_eq!(blocks.num_hashed(), blocks.len());
        for (j, &id) in blocks.ids().iter().enumerate() {
            let want = &tokens[..(j + 1) * bs];
            prop_assert_eq!(
                self.content[id as usize].as_deref(),
                Some(want),
                "false hit"
            );
        }
        // Longest: the next full block's prefix is not cached anywhere.
        let next_end = (blocks.len() + 1) * bs;
        if blocks.len() < max_blocks && next_end <= tokens.len() {
            let next = &tokens[..next_end];
            for (_, id) in self.alloc.cached_blocks() {
                prop_assert_ne!(
                    self.content[id as usize].as_deref(),
                    Some(next),
                    "missed hit"
                );
            }
        }
        self.slots[slot] = Slot::Running(Seq {
            blocks,
            tokens,
            computed: n,
        });
        Ok(())
    }

    /// One scheduler step for `seq`: grow, "write" K/V, publish full blocks.
    fn step(&mut self, seq: &mut Seq, chunk: usize, next: u32) -> Result<(), TestCaseError> {
        let bs = self.alloc.block_size();
        if seq.computed == seq.tokens.len() {
            seq.tokens.push(next);
        }
        let target = seq.computed + chunk.min(seq.tokens.len() - seq.computed);
        let before = seq.blocks.ids().to_vec();
        let free_before = self.alloc.num_free();
        if self.alloc.allocate_slots(&mut seq.blocks, target).is_none() {
            prop_assert_eq!(seq.blocks.ids(), &before[..]);
            prop_assert_eq!(self.alloc.num_free(), free_before);
            prop_assert!(self.alloc.blocks_needed(&seq.blocks, target) > free_before);
            return Ok(());
        }
        prop_assert_eq!(seq.blocks.len(), before.len().max(target.div_ceil(bs)));
        for &id in &seq.blocks.ids()[before.len()..] {
            prop_assert_eq!(self.alloc.ref_count(id), 1);
            self.content[id as usize] = None; // about to be overwritten
        }
        seq.computed = target;
        for j in 0..target / bs {
            let prefix = &seq.tokens[..(j + 1) * bs];
            let held = &mut self.content[seq.blocks.ids()[j] as usize];
            match held {
                None => *held = Some(prefix.to_vec()),
                Some(p) => prop_assert_eq!(&p[..], prefix),
            }
        }
        self.alloc
            .cache_full_blocks(&mut seq.blocks, &seq.tokens, seq.computed);
        let hashed = if self.alloc.prefix_caching() {
            target / bs
        } else {
            0
        };
        prop_assert_eq!(seq.blocks.num_hashed(), hashed);
        Ok(())
    }

    /// Invariants, reference counts against the sequences, and hash ↔ prefix consistency.
    fn check(&mut self) -> Result<(), TestCaseError> {
        self.alloc.check_invariants().map_err(TestCaseError::fail)?;
        let mut refs = vec![0u32; self.alloc.num_blocks()];
        for slot in &self.slots {
            if let Slot::Running(seq) = slot {
                for &id in seq.blocks.ids() {
                    refs[id as usize] += 1;
                }
            }
        }
        for (id, &r) in refs.iter().enumerate() {
            prop_assert_eq!(self.alloc.ref_count(id as u32), r, "block {}", id);
        }
        prop_assert_eq!(
            self.alloc.num_free(),
            refs.iter().filter(|&&r| r == 0).count()
        );
        for (hash, id) in self.alloc.cached_blocks() {
            let Some(prefix) = self.content[id as usize].clone() else {
                return Err(TestCaseError::fail(format!(
                    "cached block {id} holds no full prefix"
                )));
            };
            let p = self.hash_to_prefix.entry(hash).or_insert(prefix.clone());
            prop_assert_eq!(&p[..], &prefix[..], "hash collision");
            prop_assert_eq!(*self.prefix_to_hash.entry(prefix).or_insert(hash), hash);
        }
        let (queries, hits) = self.alloc.prefix_stats();
        prop_assert!(hits <= queries);
        Ok(())
    }

    /// Frees every running sequence; the pool must then be entirely free.
    fn finish_all(&mut self) -> Result<(), TestCaseError> {
        for slot in &mut self.slots {
            if let Slot::Running(seq) = slot {
                self.alloc.free(&mut seq.blocks);
            }
            *slot = Slot::Empty;
        }
        self.alloc.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert!(self.alloc.all_free());
        prop_assert_eq!(self.alloc.num_free(), self.alloc.num_blocks());
        prop_assert_eq!(self.alloc.usage(), 0.0);
        Ok(())
    }
}

impl Seq {
    fn empty() -> Self {
        Seq {
            blocks: SeqBlocks::new(),
            tokens: Vec::new(),
            computed: 0,
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..SLOTS, 0..PROMPTS.len(), vec(0u32..3, 1..10), 0usize..8).prop_map(
            |(slot, prompt, suffix, max_blocks)| Op::Admit {
                slot,
                tokens: [PROMPTS[prompt], &suffix].concat(),
                max_blocks,
            }
        ),
        6 => (0..SLOTS, 1usize..7, 0u32..3).prop_map(|(slot, chunk, next)| Op::Step {
            slot,
            chunk,
            next
        }),
        1 => (0..SLOTS).prop_map(|slot| Op::Finish { slot }),
        1 => (0..SLOTS).prop_map(|slot| Op::Preempt { slot }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_schedules_keep_allocator_consistent(
        block_size in 1usize..4,
        num_blocks in 3usize..16,
        caching in prop::bool::weighted(0.8),
        ops in vec(op(), 1..100),
    ) {
        let mut h = Harness::new(num_blocks, block_size, caching);
        for op in ops {
            h.apply(op)?;
        }
        h.finish_all()?;
    }
}
