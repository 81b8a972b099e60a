//! Paged KV cache bookkeeping: which cache blocks each sequence owns, and which full blocks can be
//! shared between sequences with a common prompt prefix.
//!
//! Pure data — block ids, reference counts and hashes; no tensors, devices or threads. The
//! scheduler calls it on every step, so every operation costs O(blocks touched).
//!
//! A sequence's life with the allocator:
//!
//! ```text
//! match_prefix      reuse cached full blocks equal to the start of the prompt
//! allocate_slots    grow the block table before each step (None = out of blocks: preempt)
//! cache_full_blocks after each step, publish the blocks that became full of computed tokens
//! free              on finish, abort or preemption; hashed blocks stay findable until evicted
//! ```

mod block_allocator;
mod free_list;
mod prefix_hash;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use block_allocator::{BlockAllocator, SeqBlocks};
