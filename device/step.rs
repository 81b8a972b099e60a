//! The metadata of one forward step — the single format every backend reads.
//!
//! A step is one flat batch of tokens drawn from many sequences: some contribute a prefill chunk,
//! others one decode token. For sequences `s0` (3 new tokens, 2 already cached) and `s1`
//! (1 new token, 6 cached):
//!
//! ```text
//! row:               0    1    2  | 3
//! input_ids:        a2   a3   a4  | b6
//! positions:         2    3    4  | 6
//! query_start_locs: 0             3    4
//! context_lens:      5            | 7        (cached + new)
//! slot_mapping:     block_table[pos / bs] * bs + pos % bs, or -1 to skip the write
//! ```
//!
//! Query row `i` of a sequence with `q` new tokens and context length `c` sits at key index
//! `c - q + i` and attends causally to keys `0..=c - q + i`, read through the block table.

use anyhow::{bail, Result};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepInput {
    /// [T] token ids of the step's rows.
    pub input_ids: Vec<u32>,
    /// [T] absolute position of each row (drives RoPE).
    pub positions: Vec<u32>,
    /// [T] cache slot each row's K/V goes to; -1 = do not write (padding).
    pub slot_mapping: Vec<i64>,
    /// [S + 1] row offsets of each sequence in the flat batch.
    pub query_start_locs: Vec<u32>,
    /// [S] tokens in each sequence's cache once this step's are written.
    pub context_lens: Vec<u32>,
    /// [S, max_blocks_per_seq] block ids, row-major; unused entries are 0.
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
    /// Rows whose logits the caller wants, in output order.
    pub logits_indices: Vec<u32>,
}

/// The cache slot of position `pos` of a sequence whose blocks, in logical order, are
/// `block_table` (which must cover `pos`): the one rule every writer of `slot_mapping` follows.
#[inline]
pub fn slot_of(block_table: &[u32], pos: usize, block_size: usize) -> i64 {
    let block = block_table[pos / block_size] as i64;
    block * block_size as i64 + (pos % block_size) as i64
}

/// A sequence's part of a step, used to build a [`StepInput`].
#[derive(Debug, Clone)]
pub struct SeqChunk<'a> {
    /// The new tokens this step computes.
    pub tokens: &'a [u32],
    /// Tokens of this sequence already in the cache.
    pub num_cached: usize,
    /// The sequence's blocks, in logical order.
    pub block_table: &'a [u32],
    /// Whether the last row's logits are wanted.
    pub want_logits: bool,
}

impl StepInput {
    pub fn num_tokens(&self) -> usize {
        self.input_ids.len()
    }

    pub fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    /// Lays out `chunks` as one flat step with cache blocks of `block_size` tokens.
    pub fn build(chunks: &[SeqChunk], block_size: usize) -> Result<Self> {
        let mut step = StepInput {
            max_blocks_per_seq: chunks
                .iter()
                .map(|c| c.block_table.len())
                .max()
                .unwrap_or(0),
            ..Default::default()
        };
        step.query_start_locs.push(0);
        for c in chunks {
            let total = c.num_cached + c.tokens.len();
            if c.tokens.is_empty() {
                bail!("a sequence in the step has no new tokens");
            }
            if total > c.block_table.len() * block_size {
                bail!(
                    "sequence needs {total} cache slots but its block table covers {}",
                    c.block_table.len() * block_size
                );
            }
            for (i, &tok) in c.tokens.iter().enumerate() {
                let pos = c.num_cached + i;
                step.input_ids.push(tok);
                step.positions.push(pos as u32);
                step.slot_mapping
                    .push(slot_of(c.block_table, pos, block_size));
            }
            step.query_start_locs.push(step.input_ids.len() as u32);
            step.context_lens.push(total as u32);
            let mut row = c.block_table.to_vec();
            row.resize(step.max_blocks_per_seq, 0);
            step.block_tables.extend(row);
            if c.want_logits {
                step.logits_indices.push(step.input_ids.len() as u32 - 1);
            }
        }
        Ok(step)
    }

    /// The rows and context length of sequence `s`.
    pub fn seq_rows(&self, s: usize) -> (usize, usize) {
        (
            self.query_start_locs[s] as usize,
            self.query_start_locs[s + 1] as usize,
        )
    }

    /// Sequence `s`'s block table row.
    pub fn block_table(&self, s: usize) -> &[u32] {
        &self.block_tables[s * self.max_blocks_per_seq..(s + 1) * self.max_blocks_per_seq]
    }

    /// The step's query rows cut into tiles of at most `tile_rows` consecutive rows of one
    /// sequence, as `(sequence, tile index within the sequence)`, sequences in order: the blocks
    /// of a kernel that takes a tile of rows each (the tensor-core prefill attention), so its grid
    /// holds only tiles with rows in them. At most `num_tokens / tile_rows + num_seqs` (rounded up).
    pub fn row_tiles(&self, tile_rows: usize) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..self.num_seqs()).flat_map(move |s| {
            let (start, end) = self.seq_rows(s);
            (0..(end - start).div_ceil(tile_rows) as u32).map(move |t| (s as u32, t))
        })
    }

    /// Whether every sequence has exactly one new token and wants its logits, in row order: the
    /// steady-state decode step, the one shape a captured CUDA graph replays.
    pub fn is_plain_decode(&self) -> bool {
        let n = self.num_seqs();
        n > 0
            && self.num_tokens() == n
            && self.logits_indices.len() == n
            && self
                .logits_indices
                .iter()
                .enumerate()
                .all(|(i, &r)| r as usize == i)
    }

    /// This plain decode step (see [`is_plain_decode`](Self::is_plain_decode)) grown to `rows`
    /// sequences and block tables `width` wide, into `out` (its buffers reused), so that steps of
    /// different sizes share one graph. Each padding sequence is one token 0 at position 0 with
    /// a context of 1 (key 0 of block 0, read and ignored) and slot -1, so it writes nothing to the
    /// cache; its logits row is computed and ignored.
    pub fn pad_decode(&self, rows: usize, width: usize, out: &mut StepInput) -> Result<()> {
        let n = self.num_seqs();
        if !self.is_plain_decode() || rows < n || width < self.max_blocks_per_seq || width == 0 {
            bail!(
                "cannot pad a step of {} tokens / {n} sequences (block tables {} wide) to {rows} \
                 decode rows of width {width}",
                self.num_tokens(),
                self.max_blocks_per_seq
            );
        }
        let pad = rows - n;
        out.input_ids.clone_from(&self.input_ids);
        out.input_ids.resize(rows, 0);
        out.positions.clone_from(&self.positions);
        out.positions.resize(rows, 0);
        out.slot_mapping.clone_from(&self.slot_mapping);
        out.slot_mapping.resize(rows, -1);
        out.query_start_locs.clear();
        out.query_start_locs.extend(0..=rows as u32);
        out.context_lens.clone_from(&self.context_lens);
        out.context_lens.resize(rows, 1);
        out.logits_indices.clear();
        out.logits_indices.extend(0..rows as u32);
        out.block_tables.clear();
        out.block_tables.reserve(rows * width);
        for s in 0..n {
            out.block_tables.extend_from_slice(self.block_table(s));
            out.block_tables.resize((s + 1) * width, 0);
        }
        out.block_tables
            .resize(out.block_tables.len() + pad * width, 0);
        out.max_blocks_per_seq = width;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lays_out_mixed_prefill_and_decode() {
        let a = [10, 11, 12];
        let b = [20];
        let step = StepInput::build(
            &[
                SeqChunk {
                    tokens: &a,
                    num_cached: 2,
                    block_table: &[7, 3],
                    want_logits: true,
                },
                SeqChunk {
                    tokens: &b,
                    num_cached: 6,
                    block_table: &[5, 1],
                    want_logits: true,
                },
            ],
            4,
        )
        .unwrap();
        assert_eq!(step.positions, vec![2, 3, 4, 6]);
        // pos 2,3 -> block 7 (slots 30, 31); pos 4 -> block 3 (slot 12); pos 6 -> block 1 (slot 6).
        assert_eq!(step.slot_mapping, vec![30, 31, 12, 6]);
        assert_eq!(step.query_start_locs, vec![0, 3, 4]);
        assert_eq!(step.context_lens, vec![5, 7]);
        assert_eq!(step.logits_indices, vec![2, 3]);
        assert_eq!(step.block_table(1), &[5, 1]);
    }

    #[test]
    fn cuts_rows_into_tiles_within_each_sequence() {
        let step = StepInput {
            query_start_locs: vec![0, 1, 65, 130, 260],
            context_lens: vec![9, 64, 65, 130],
            ..StepInput::default()
        };
        let tiles: Vec<(u32, u32)> = step.row_tiles(64).collect();
        // 1 row: one tile; 64: one; 65: two; 130: three.
        let want = [(0, 0), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)];
        assert_eq!(tiles, want);
        assert!(tiles.len() <= 260usize.div_ceil(64) + 4);
    }

    fn decode_of_two() -> StepInput {
        let (a, b) = ([10], [20]);
        let chunk = |tokens, num_cached, block_table| SeqChunk {
            tokens,
            num_cached,
            block_table,
            want_logits: true,
        };
        StepInput::build(&[chunk(&a, 5, &[7, 3]), chunk(&b, 2, &[5])], 4).unwrap()
    }

    #[test]
    fn pads_a_decode_step_with_rows_that_write_nothing() {
        let step = decode_of_two();
        assert!(step.is_plain_decode());
        let mut out = StepInput::default();
        step.pad_decode(4, 4, &mut out).unwrap();
        assert_eq!(out.input_ids, vec![10, 20, 0, 0]);
        assert_eq!(out.positions, vec![5, 2, 0, 0]);
        assert_eq!(out.slot_mapping, vec![13, 22, -1, -1]);
        assert_eq!(out.query_start_locs, vec![0, 1, 2, 3, 4]);
        assert_eq!(out.context_lens, vec![6, 3, 1, 1]);
        assert_eq!(out.logits_indices, vec![0, 1, 2, 3]);
        assert_eq!(out.max_blocks_per_seq, 4);
        assert_eq!(out.block_table(0), &[7, 3, 0, 0]);
        assert_eq!(out.block_table(1), &[5, 0, 0, 0]);
        assert_eq!(out.block_table(3), &[0, 0, 0, 0]);
        // Reusing the buffers for a smaller step leaves nothing of the larger one behind.
        step.pad_decode(2, 2, &mut out).unwrap();
        assert_eq!(out.block_tables, vec![7, 3, 5, 0]);
        assert_eq!(out.context_lens, vec![6, 3]);
    }

    #[test]
    fn refuses_to_pad_what_is_not_a_plain_decode() {
        let step = decode_of_two();
        let mut out = StepInput::default();
        assert!(step.pad_decode(1, 4, &mut out).is_err(), "fewer rows");
        assert!(step.pad_decode(4, 1, &mut out).is_err(), "narrower tables");
        let a = [1, 2];
        let prefill = StepInput::build(
            &[SeqChunk {
                tokens: &a,
                num_cached: 0,
                block_table: &[0],
                want_logits: true,
            }],
            4,
        )
        .unwrap();
        assert!(!prefill.is_plain_decode());
        assert!(prefill.pad_decode(4, 4, &mut out).is_err());
    }

    #[test]
    fn rejects_a_block_table_too_short() {
        let a = [1, 2, 3, 4, 5];
        let e = StepInput::build(
            &[SeqChunk {
                tokens: &a,
                num_cached: 0,
                block_table: &[0],
                want_logits: true,
            }],
            4,
        );
        assert!(e.is_err());
    }
}
