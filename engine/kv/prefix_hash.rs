//! Chained block hashes for prefix caching, and a map keyed by them.
//!
//! The hash of block `i` covers `tokens[..(i + 1) * block_size]`: it hashes the parent block's hash
//! together with this block's token ids, so equal hashes mean equal prefixes. The hash is SipHash-1-3
//! (std's `RandomState`) under random keys drawn once per allocator: a strong 64-bit keyed hash whose
//! collisions cannot be precomputed by a client choosing prompts. Matches are not re-verified
//! against the tokens (the allocator keeps no tokens); an accidental false hit needs a 64-bit
//! collision among the cached blocks.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// Hashes full blocks of token ids, chained through the parent block's hash.
#[derive(Debug, Clone, Default)]
pub(super) struct BlockHasher {
    keys: RandomState,
}

impl BlockHasher {
    /// The hash of a block holding `tokens` whose parent block hashed to `parent` (`None` for the
    /// first block of a sequence).
    pub(super) fn hash_block(&self, parent: Option<u64>, tokens: &[u32]) -> u64 {
        let mut h = self.keys.build_hasher();
        match parent {
            None => h.write_u8(0),
            Some(p) => {
                h.write_u8(1);
                h.write_u64(p);
            }
        }
        h.write_usize(tokens.len());
        h.write(bytemuck::cast_slice(tokens));
        h.finish()
    }
}

/// A `Hasher` for keys that already are uniformly distributed 64-bit hashes: passes them through.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u64; fold them in so it stays a valid hasher.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map from block hash to a value, without re-hashing the (already random) keys.
pub(super) type BlockHashMap<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_deterministic_per_hasher() {
        let h = BlockHasher::default();
        assert_eq!(h.hash_block(None, &[1, 2]), h.hash_block(None, &[1, 2]));
        assert_eq!(
            h.hash_block(Some(7), &[1, 2]),
            h.hash_block(Some(7), &[1, 2])
        );
    }

    #[test]
    fn hash_depends_on_tokens_and_parent() {
        let h = BlockHasher::default();
        let root = h.hash_block(None, &[1, 2]);
        assert_ne!(root, h.hash_block(None, &[2, 1]));
        assert_ne!(root, h.hash_block(None, &[1, 2, 0]));
        assert_ne!(
            h.hash_block(Some(root), &[3, 4]),
            h.hash_block(None, &[3, 4])
        );
        assert_ne!(
            h.hash_block(Some(root), &[3, 4]),
            h.hash_block(Some(root ^ 1), &[3, 4])
        );
    }

    #[test]
    fn identity_map_round_trips() {
        let mut m = BlockHashMap::default();
        m.insert(42u64, 1u32);
        m.insert(u64::MAX, 2);
        assert_eq!(m.get(&42), Some(&1));
        assert_eq!(m.get(&u64::MAX), Some(&2));
        assert_eq!(m.get(&0), None);
    }
}
