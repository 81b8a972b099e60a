//! The block allocator: reference-counted cache blocks, a hash map of cached full blocks, and an
//! LRU free list that keeps freed full blocks findable until their space is needed.

use std::collections::hash_map::Entry;

use super::free_list::FreeList;
use super::prefix_hash::{BlockHashMap, BlockHasher};

/// A sequence's blocks plus the prefix-hash bookkeeping the allocator needs.
///
/// Only the [`BlockAllocator`] that filled it may change it; a clone must not be freed twice.
#[derive(Debug, Default, Clone)]
pub struct SeqBlocks {
    /// Block ids in logical order: block `i` holds token positions `i * block_size..`.
    ids: Vec<u32>,
    /// How many leading blocks have been hashed (and, when possible, published to the cache).
    num_hashed: usize,
    /// Hash of block `num_hashed - 1`, the parent of the next block to hash.
    last_hash: Option<u64>,
}

impl SeqBlocks {
    /// An empty sequence: no blocks.
    pub fn new() -> Self {
        Self::default()
    }

    /// The block table: block ids in logical order.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the sequence holds no blocks.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// How many leading blocks are full and hashed.
    pub fn num_hashed(&self) -> usize {
        self.num_hashed
    }

    /// Forgets every block without touching reference counts (the allocator released them).
    fn clear(&mut self) {
        self.ids.clear();
        self.num_hashed = 0;
        self.last_hash = None;
    }
}

/// Hands out fixed-size KV cache blocks to sequences and shares full blocks by prefix hash.
///
/// A block is *referenced* while some sequence holds it, and *free* otherwise. The free list
/// holds unhashed blocks at the front (reused first) and hashed ones behind them, least recently
/// freed first: those stay findable by [`BlockAllocator::match_prefix`] until evicted.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    block_size: usize,
    prefix_caching: bool,
    /// Per block: how many sequences hold it.
    ref_counts: Vec<u32>,
    /// Per block: its hash, exactly when the cache map points at it.
    hashes: Vec<Option<u64>>,
    /// Block hash → the block holding that prefix.
    cached: BlockHashMap<u32>,
    /// Blocks with no references, in reuse order.
    free: FreeList,
    hasher: BlockHasher,
    query_tokens: u64,
    hit_tokens: u64,
}

impl BlockAllocator {
    /// A pool of `num_blocks` blocks of `block_size` token slots each, all free.
    ///
    /// # Panics
    /// If `block_size` is 0 or `num_blocks` does not fit below `u32::MAX`.
    pub fn new(num_blocks: usize, block_size: usize, enable_prefix_caching: bool) -> Self {
        assert!(block_size > 0, "block_size must be positive");
        assert!(
            num_blocks < u32::MAX as usize,
            "too many blocks: {num_blocks}"
        );
        let mut cached = BlockHashMap::default();
        if enable_prefix_caching {
            cached.reserve(num_blocks);
        }
        BlockAllocator {
            block_size,
            prefix_caching: enable_prefix_caching,
            ref_counts: vec![0; num_blocks],
            hashes: vec![None; num_blocks],
            cached,
            free: FreeList::full(num_blocks),
            hasher: BlockHasher::default(),
            query_tokens: 0,
            hit_tokens: 0,
        }
    }

    /// Token slots per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    /// Blocks that allocate_slots can hand out now: free ones, including cached-but-unreferenced
    /// ones (evictable).
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Fraction of blocks referenced by some sequence (0..=1; 0 for an empty pool).
    pub fn usage(&self) -> f32 {
        match self.num_blocks() {
            0 => 0.0,
            n => (n - self.num_free()) as f32 / n as f32,
        }
    }

    /// Whether prefix caching is on.
    pub fn prefix_caching(&self) -> bool {
        self.prefix_caching
    }

    /// New blocks `seq` needs to cover `num_tokens` token slots.
    pub fn blocks_needed(&self, seq: &SeqBlocks, num_tokens: usize) -> usize {
        num_tokens
            .div_ceil(self.block_size)
            .saturating_sub(seq.len())
    }

    /// For a new (or recomputed) sequence whose `seq` is empty: finds the longest run of cached
    /// full blocks equal to the start of `tokens`, at most `max_blocks` of them, appends them to
    /// `seq` (taking a reference on each; a cached free block leaves the free list), and returns
    /// the number of tokens they cover.
    ///
    /// Returns 0 and changes nothing when prefix caching is off or `seq` is not empty. Each call
    /// with caching on adds `tokens.len()` to the query count and the result to the hit count.
    /// Hits are trusted on hash equality (see the `prefix_hash` module); tokens are not re-compared.
    pub fn match_prefix(
        &mut self,
        seq: &mut SeqBlocks,
        tokens: &[u32],
        max_blocks: usize,
    ) -> usize {
        if !self.prefix_caching || !seq.is_empty() {
            return 0;
        }
        let mut parent = None;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let hash = self.hasher.hash_block(parent, chunk);
            let Some(&id) = self.cached.get(&hash) else {
                break;
            };
            self.take_ref(id);
            seq.ids.push(id);
            parent = Some(hash);
        }
        seq.num_hashed = seq.len();
        seq.last_hash = parent;
        let hit = seq.len() * self.block_size;
        self.query_tokens += tokens.len() as u64;
        self.hit_tokens += hit as u64;
        hit
    }

    /// Grows `seq` so it covers `num_tokens` token slots. If there aren't enough allocatable
    /// blocks, returns None and changes nothing (the scheduler then preempts). Takes unhashed free
    /// blocks first, then evicts least-recently-freed cached blocks (dropping their hash from the
    /// cache map).
    pub fn allocate_slots(&mut self, seq: &mut SeqBlocks, num_tokens: usize) -> Option<()> {
        let needed = self.blocks_needed(seq, num_tokens);
        if needed > self.num_free() {
            return None;
        }
        seq.ids.reserve(needed);
        for _ in 0..needed {
            // Cannot fail: the free list holds at least `needed` blocks.
            let id = self.free.pop_front()?;
            self.uncache(id);
            self.ref_counts[id as usize] = 1;
            seq.ids.push(id);
        }
        Some(())
    }

    /// Records the hashes of `seq`'s blocks that are now full of computed tokens: `tokens` holds
    /// the sequence's known tokens, and the first `num_computed` have their K/V written. Only
    /// blocks not yet hashed are processed (amortised O(new full blocks)). If a block with the
    /// same hash already exists in the cache, the existing entry is kept (this block just stays
    /// unshared). Does nothing when prefix caching is off.
    pub fn cache_full_blocks(&mut self, seq: &mut SeqBlocks, tokens: &[u32], num_computed: usize) {
        if !self.prefix_caching {
            return;
        }
        let full = (num_computed.min(tokens.len()) / self.block_size).min(seq.len());
        while seq.num_hashed < full {
            let i = seq.num_hashed;
            let chunk = &tokens[i * self.block_size..(i + 1) * self.block_size];
            let hash = self.hasher.hash_block(seq.last_hash, chunk);
            self.publish(seq.ids[i], hash);
            seq.last_hash = Some(hash);
            seq.num_hashed += 1;
        }
    }

    /// Drops `seq`'s reference to each of its blocks and empties it. A block reaching zero
    /// references becomes free: a hashed one stays findable by match_prefix until evicted (LRU;
    /// the sequence's blocks are freed tail first, so its tail is evicted first), an unhashed one
    /// is reused first.
    pub fn free(&mut self, seq: &mut SeqBlocks) {
        for &id in seq.ids.iter().rev() {
            self.release(id);
        }
        seq.clear();
    }

    /// Counters: prefix-cache queries and hits, in tokens.
    pub fn prefix_stats(&self) -> (u64, u64) {
        (self.query_tokens, self.hit_tokens)
    }

    /// Every block's reference count is 0 (used by tests after everything finished).
    pub fn all_free(&self) -> bool {
        self.ref_counts.iter().all(|&rc| rc == 0)
    }

    /// Checks internal consistency (free list vs ref counts, free-list order, hash map vs block
    /// hashes). O(all blocks); for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.free.check()?;
        for (id, &rc) in self.ref_counts.iter().enumerate() {
            if (rc == 0) != self.free.contains(id as u32) {
                return Err(format!(
                    "block {id} has {rc} references but free-list flag disagrees"
                ));
            }
        }
        let mut seen_hashed = false;
        for id in self.free.iter() {
            let hashed = self.hashes[id as usize].is_some();
            if seen_hashed && !hashed {
                return Err(format!("unhashed free block {id} sits behind a cached one"));
            }
            seen_hashed |= hashed;
        }
        for (&hash, &id) in &self.cached {
            if self.hashes.get(id as usize) != Some(&Some(hash)) {
                return Err(format!(
                    "cache map entry {hash:#x} -> {id} not mirrored by the block"
                ));
            }
        }
        let hashed = self.hashes.iter().filter(|h| h.is_some()).count();
        if hashed != self.cached.len() {
            return Err(format!(
                "{hashed} hashed blocks but {} map entries",
                self.cached.len()
            ));
        }
        if !self.prefix_caching && hashed > 0 {
            return Err("prefix caching is off but blocks are hashed".into());
        }
        Ok(())
    }

    /// Takes a reference on `id`, pulling it off the free list if it was free.
    fn take_ref(&mut self, id: u32) {
        let rc = &mut self.ref_counts[id as usize];
        if *rc == 0 {
            self.free.remove(id);
        }
        *rc += 1;
    }

    /// Drops a reference on `id`; at zero it joins the free list (hashed: back, unhashed: front).
    fn release(&mut self, id: u32) {
        let Some(rc) = self.ref_counts.get_mut(id as usize).filter(|rc| **rc > 0) else {
            debug_assert!(false, "freeing block {id}, which is not referenced");
            return;
        };
        *rc -= 1;
        if *rc == 0 {
            match self.hashes[id as usize] {
                Some(_) => self.free.push_back(id),
                None => self.free.push_front(id),
            }
        }
    }

    /// Makes block `id` findable under `hash`, unless another block already is.
    fn publish(&mut self, id: u32, hash: u64) {
        if self.hashes.get(id as usize) != Some(&None) {
            return;
        }
        if let Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(id);
            self.hashes[id as usize] = Some(hash);
        }
    }

    /// Forgets block `id`'s hash (it is about to be overwritten).
    fn uncache(&mut self, id: u32) {
        if let Some(hash) = self.hashes[id as usize].take() {
            self.cached.remove(&hash);
        }
    }

    /// Block `id`'s reference count.
    #[cfg(test)]
    pub(super) fn ref_count(&self, id: u32) -> u32 {
        self.ref_counts[id as usize]
    }

    /// The cache map's entries: (hash, block).
    #[cfg(test)]
    pub(super) fn cached_blocks(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.cached.iter().map(|(&h, &id)| (h, id))
    }

    /// The free list, front (reused first) to back.
    #[cfg(test)]
    pub(super) fn free_order(&self) -> Vec<u32> {
        self.free.iter().collect()
    }
}
