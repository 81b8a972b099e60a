//! Unit tests of the block allocator on tiny pools.

use super::{BlockAllocator, SeqBlocks};

/// A sequence that allocated and computed all of `tokens`, with its full blocks cached.
fn computed(a: &mut BlockAllocator, tokens: &[u32]) -> SeqBlocks {
    let mut s = SeqBlocks::new();
    a.allocate_slots(&mut s, tokens.len())
        .expect("pool too small");
    a.cache_full_blocks(&mut s, tokens, tokens.len());
    a.check_invariants().unwrap();
    s
}

#[test]
fn allocate_and_free_tiny_pool() {
    let mut a = BlockAllocator::new(4, 2, false);
    assert_eq!((a.num_blocks(), a.block_size(), a.num_free()), (4, 2, 4));
    let mut s = SeqBlocks::new();
    assert!(s.is_empty());
    a.allocate_slots(&mut s, 3).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(a.num_free(), 2);
    assert_eq!(a.usage(), 0.5);
    // Covering slots already owned needs nothing new.
    a.allocate_slots(&mut s, 4).unwrap();
    assert_eq!(s.len(), 2);
    a.allocate_slots(&mut s, 5).unwrap();
    assert_eq!((s.len(), a.num_free()), (3, 1));
    assert_eq!(a.blocks_needed(&s, 8), 1);
    a.check_invariants().unwrap();
    a.free(&mut s);
    assert!(s.is_empty());
    assert!(a.all_free());
    assert_eq!((a.num_free(), a.usage()), (4, 0.0));
    a.check_invariants().unwrap();
}

#[test]
fn allocate_fails_without_side_effects_when_full() {
    let mut a = BlockAllocator::new(4, 2, true);
    let mut s1 = computed(&mut a, &[1, 2, 3, 4, 5, 6]);
    let mut s2 = SeqBlocks::new();
    let before = s2.clone();
    assert_eq!(a.allocate_slots(&mut s2, 3), None);
    assert_eq!(s2.ids(), before.ids());
    assert_eq!(a.allocate_slots(&mut s1, 9), None);
    assert_eq!(s1.len(), 3);
    assert_eq!(a.num_free(), 1);
    a.check_invariants().unwrap();
    a.allocate_slots(&mut s2, 2).unwrap();
    assert_eq!(a.num_free(), 0);
    assert_eq!(a.allocate_slots(&mut s2, 3), None);
    a.free(&mut s1);
    a.free(&mut s2);
    assert!(a.all_free());
}

#[test]
fn common_prefix_shares_full_blocks() {
    let mut a = BlockAllocator::new(8, 2, true);
    let mut s1 = computed(&mut a, &[1, 2, 3, 4, 5, 6, 7]);
    // Same first two blocks, third block differs, fourth would match s1's but must not.
    let t2 = [1, 2, 3, 4, 9, 6, 7];
    let mut s2 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s2, &t2, 10), 4);
    assert_eq!(s2.ids(), &s1.ids()[..2]);
    assert_eq!(s2.num_hashed(), 2);
    for &id in s2.ids() {
        assert_eq!(a.ref_count(id), 2);
    }
    assert_eq!(a.ref_count(s1.ids()[2]), 1);
    a.allocate_slots(&mut s2, t2.len()).unwrap();
    assert_eq!(s2.len(), 4);
    a.cache_full_blocks(&mut s2, &t2, t2.len());
    assert_eq!(s2.num_hashed(), 3);
    a.check_invariants().unwrap();
    a.free(&mut s1);
    // Shared blocks still held by s2.
    assert_eq!(a.ref_count(s2.ids()[0]), 1);
    a.free(&mut s2);
    assert!(a.all_free());
    assert_eq!(a.prefix_stats(), (7, 4));
}

#[test]
fn never_matches_a_partial_block() {
    let mut a = BlockAllocator::new(8, 2, true);
    // s1 computed 5 tokens: blocks 0 and 1 full, block 2 half full.
    let mut s1 = computed(&mut a, &[1, 2, 3, 4, 5]);
    assert_eq!(s1.num_hashed(), 2);
    let mut s2 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s2, &[1, 2, 3, 4, 5, 6], 10), 4);
    let mut s3 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s3, &[1, 2, 3], 10), 2);
    // Computed-but-partial: 3 tokens known, 3 computed, so only block 0 is full.
    let mut s4 = SeqBlocks::new();
    a.allocate_slots(&mut s4, 4).unwrap();
    a.cache_full_blocks(&mut s4, &[7, 8, 9, 10], 3);
    assert_eq!(s4.num_hashed(), 1);
    let mut s5 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s5, &[7, 8, 9, 10], 10), 2);
    for s in [&mut s1, &mut s2, &mut s3, &mut s4, &mut s5] {
        a.free(s);
    }
    a.check_invariants().unwrap();
    assert!(a.all_free());
}

#[test]
fn match_honours_max_blocks_and_empty_seq() {
    let mut a = BlockAllocator::new(8, 2, true);
    let t = [1, 2, 3, 4, 5, 6];
    let mut s1 = computed(&mut a, &t);
    let mut s2 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s2, &t, 2), 4);
    assert_eq!(s2.len(), 2);
    // A non-empty sequence never matches.
    assert_eq!(a.match_prefix(&mut s2, &t, 3), 0);
    assert_eq!(s2.len(), 2);
    let mut s3 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s3, &t, 0), 0);
    assert!(s3.is_empty());
    a.free(&mut s1);
    a.free(&mut s2);
    assert!(a.all_free());
    a.check_invariants().unwrap();
}

#[test]
fn freed_cached_block_is_reused_by_match() {
    let mut a = BlockAllocator::new(4, 2, true);
    let t = [1, 2, 3, 4, 5];
    let mut s1 = computed(&mut a, &t);
    let old = s1.ids().to_vec();
    a.free(&mut s1);
    assert_eq!(a.num_free(), 4);
    let mut s2 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s2, &t, 10), 4);
    assert_eq!(s2.ids(), &old[..2]);
    assert_eq!(a.num_free(), 2);
    assert_eq!(a.usage(), 0.5);
    a.check_invariants().unwrap();
    // The rest of the pool is still allocatable (the unhashed partial block first).
    a.allocate_slots(&mut s2, 8).unwrap();
    assert_eq!(s2.ids()[2], old[2]);
    assert_eq!(a.num_free(), 0);
    a.free(&mut s2);
    assert!(a.all_free());
}

#[test]
fn eviction_is_lru_and_unhashed_blocks_go_first() {
    let mut a = BlockAllocator::new(6, 1, true);
    let mut old = computed(&mut a, &[1, 2]); // blocks 0, 1 (hashed)
    let mut new = computed(&mut a, &[3, 4]); // blocks 2, 3 (hashed)
    let mut raw = SeqBlocks::new();
    a.allocate_slots(&mut raw, 1).unwrap(); // block 4, never hashed
    a.free(&mut old);
    a.free(&mut new);
    a.free(&mut raw);
    // Unhashed first, then never-used block 5, then old's tail, old's head, new's tail, new's head.
    assert_eq!(a.free_order(), [4, 5, 1, 0, 3, 2]);
    let mut s = SeqBlocks::new();
    a.allocate_slots(&mut s, 3).unwrap();
    assert_eq!(s.ids(), [4, 5, 1]);
    a.check_invariants().unwrap();
    // old's second block is gone, its first survives; new is intact.
    let mut m = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut m, &[1, 2], 10), 1);
    assert_eq!(m.ids(), [0]);
    let mut n = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut n, &[3, 4], 10), 2);
    assert_eq!(n.ids(), [2, 3]);
    // A re-matched then re-freed block becomes most recently used.
    a.free(&mut m);
    assert_eq!(a.free_order(), [0]);
    for s in [&mut s, &mut n] {
        a.free(s);
    }
    // s's blocks lost their hashes, so they went to the front.
    assert_eq!(a.free_order(), [4, 5, 1, 0, 3, 2]);
    a.check_invariants().unwrap();
}

#[test]
fn duplicate_block_keeps_existing_entry() {
    let mut a = BlockAllocator::new(4, 2, true);
    let t = [1, 2, 3];
    let mut s1 = computed(&mut a, &t);
    let mut s2 = computed(&mut a, &t); // computed independently: same hash, own block
    assert_ne!(s1.ids()[0], s2.ids()[0]);
    a.free(&mut s1);
    let mut s3 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s3, &t, 10), 2);
    assert_ne!(s3.ids()[0], s2.ids()[0]);
    a.free(&mut s2);
    a.free(&mut s3);
    a.check_invariants().unwrap();
    assert!(a.all_free());
}

#[test]
fn disabled_caching_never_matches() {
    let mut a = BlockAllocator::new(4, 2, false);
    let t = [1, 2, 3, 4];
    let mut s1 = computed(&mut a, &t);
    assert_eq!(s1.num_hashed(), 0);
    let mut s2 = SeqBlocks::new();
    assert_eq!(a.match_prefix(&mut s2, &t, 10), 0);
    assert!(s2.is_empty());
    a.free(&mut s1);
    assert_eq!(a.match_prefix(&mut s2, &t, 10), 0);
    assert_eq!(a.prefix_stats(), (0, 0));
    a.check_invariants().unwrap();
}

#[test]
fn empty_pool_is_harmless() {
    let mut a = BlockAllocator::new(0, 4, true);
    let mut s = SeqBlocks::new();
    assert_eq!(a.usage(), 0.0);
    assert_eq!(a.allocate_slots(&mut s, 1), None);
    a.allocate_slots(&mut s, 0).unwrap();
    assert_eq!(a.match_prefix(&mut s, &[1, 2, 3, 4], 1), 0);
    a.free(&mut s);
    assert!(a.all_free());
    a.check_invariants().unwrap();
}
