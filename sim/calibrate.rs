//! Timing real forward steps over a grid of batch shapes, to fit the simulator's cost model.
//!
//! Each grid point is one step: some decode sequences (one new token on top of a cached context)
//! plus at most one prefill chunk. The step goes through the model exactly as the executor runs
//! it — `forward_to_host` and a greedy pick per logits row — against a paged KV cache whose
//! blocks are distinct per sequence, so attention reads as much memory as it would in service.
//! The KV contents are zeros: step time does not depend on them.

use anyhow::{ensure, Result};
use std::time::Instant;

use super::cost_model::{Measurement, StepShape};
use crate::device::backend::Backend;
use crate::device::sampling::processors::argmax;
use crate::device::step::{SeqChunk, StepInput};
use crate::runner::Runner;

/// One step shape to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridPoint {
    /// Sequences contributing one decode token each...
    pub decode_seqs: usize,
    /// ...each with this many tokens of context (including the new one).
    pub decode_context: usize,
    /// New tokens of one prefill chunk (0 = none)...
    pub prefill_tokens: usize,
    /// ...on top of this many already-cached tokens of its sequence.
    pub prefill_cached: usize,
}

impl GridPoint {
    pub fn decode(seqs: usize, context: usize) -> Self {
        GridPoint {
            decode_seqs: seqs,
            decode_context: context,
            prefill_tokens: 0,
            prefill_cached: 0,
        }
    }

    pub fn prefill(tokens: usize, cached: usize) -> Self {
        GridPoint {
            decode_seqs: 0,
            decode_context: 0,
            prefill_tokens: tokens,
            prefill_cached: cached,
        }
    }

    pub fn mixed(seqs: usize, context: usize, tokens: usize) -> Self {
        GridPoint {
            prefill_tokens: tokens,
            ..GridPoint::decode(seqs, context)
        }
    }

    fn num_seqs(&self) -> usize {
        self.decode_seqs + usize::from(self.prefill_tokens > 0)
    }

    fn num_tokens(&self) -> usize {
        self.decode_seqs + self.prefill_tokens
    }

    fn blocks(&self, block_size: usize) -> usize {
        self.decode_seqs * self.decode_context.div_ceil(block_size)
            + (self.prefill_cached + self.prefill_tokens).div_ceil(block_size)
    }
}

/// Knots for the token-cost curve: the token counts of the grid's decode-only and prefill-only
/// points, where the curve is measured directly.
pub fn knots_of(grid: &[GridPoint]) -> Vec<usize> {
    let mut k: Vec<usize> = grid
        .iter()
        .filter(|p| p.prefill_tokens == 0 || p.decode_seqs == 0)
        .map(|p| p.num_tokens())
        .collect();
    k.sort_unstable();
    k.dedup();
    k
}

/// A grid that spans decode batch sizes (every power of two: on a CPU one row and two differ
/// most, one taking a matrix-vector path), two context lengths, prefill chunk sizes, a chunk
/// over a cached prefix, and mixes, within the step limits; 23 points at the engine's
/// defaults. Sized so that the CPU default model times it in a minute or two on 2 cores.
pub fn default_grid(max_tokens: usize, max_seqs: usize, max_context: usize) -> Vec<GridPoint> {
    let mut g = Vec::new();
    for seqs in [1, 2, 4, 8, 16, 32, 64] {
        for ctx in [64, 512] {
            g.push(GridPoint::decode(seqs, ctx));
        }
    }
    for tokens in [16, 64, 128, 256, 512] {
        g.push(GridPoint::prefill(tokens, 0));
    }
    g.push(GridPoint::prefill(128, 384));
    g.push(GridPoint::mixed(4, 256, 64));
    g.push(GridPoint::mixed(16, 256, 128));
    g.push(GridPoint::mixed(32, 128, 256));
    g.retain(|p| {
        p.num_tokens() <= max_tokens
            && p.num_seqs() <= max_seqs
            && p.decode_context.max(p.prefill_cached + p.prefill_tokens) <= max_context
    });
    g
}

/// A shape whose warm-up run takes longer than this is timed once more only: long runs average
/// out noise by themselves, and the big prefills would otherwise dominate calibration time.
const LONG_RUN_S: f64 = 1.0;

/// Times every point of `grid` on `model` (the median of `reps` runs after one warm-up) and
/// calls `progress` after each.
pub fn measure<B: Backend>(
    model: &mut Runner<B>,
    grid: &[GridPoint],
    reps: usize,
    block_size: usize,
    mut progress: impl FnMut(usize, &GridPoint, &Measurement),
) -> Result<Vec<Measurement>> {
    ensure!(
        reps > 0 && block_size > 0,
        "reps and block size must be positive"
    );
    let num_blocks = grid.iter().map(|p| p.blocks(block_size)).max().unwrap_or(1);
    let mut kv = model.new_kv_cache(num_blocks.max(1), block_size)?;
    let vocab = model.cfg().vocab_size as u32;
    let mut out = Vec::with_capacity(grid.len());
    for (i, p) in grid.iter().enumerate() {
        ensure!(p.num_tokens() > 0, "grid point {i} has no tokens");
        let step = build_step(p, block_size, vocab)?;
        let mut run = || -> Result<f64> {
            let t = Instant::now();
            let rows = model.forward_to_host(&step, &mut kv)?;
            for row in &rows {
                std::hint::black_box(argmax(row));
            }
            Ok(t.elapsed().as_secs_f64())
        };
        let warm_up = run()?;
        let n = if warm_up > LONG_RUN_S { 1 } else { reps };
        let mut times = (0..n).map(|_| run()).collect::<Result<Vec<f64>>>()?;
        times.sort_by(f64::total_cmp);
        let m = Measurement {
            shape: StepShape::of(&step),
            seconds: times[times.len() / 2],
        };
        progress(i, p, &m);
        out.push(m);
    }
    Ok(out)
}

/// Lays out grid point `p` with distinct, consecutive blocks per sequence.
fn build_step(p: &GridPoint, block_size: usize, vocab: u32) -> Result<StepInput> {
    let tok = |i: usize| (i as u32 * 7919 + 13) % vocab;
    let decode_tokens: Vec<[u32; 1]> = (0..p.decode_seqs).map(|i| [tok(i)]).collect();
    let prefill: Vec<u32> = (0..p.prefill_tokens).map(tok).collect();
    let mut next_block = 0u32;
    let mut tables = Vec::new();
    let mut take = |tokens: usize| {
        let n = tokens.div_ceil(block_size) as u32;
        let t: Vec<u32> = (next_block..next_block + n).collect();
        next_block += n;
        t
    };
    for _ in 0..p.decode_seqs {
        tables.push(take(p.decode_context));
    }
    if p.prefill_tokens > 0 {
        tables.push(take(p.prefill_cached + p.prefill_tokens));
    }
    let mut chunks: Vec<SeqChunk> = decode_tokens
        .iter()
        .zip(&tables)
        .map(|(t, table)| SeqChunk {
            tokens: t,
            num_cached: p.decode_context - 1,
            block_table: table,
            want_logits: true,
        })
        .collect();
    if p.prefill_tokens > 0 {
        chunks.push(SeqChunk {
            tokens: &prefill,
            num_cached: p.prefill_cached,
            block_table: &tables[p.decode_seqs],
            want_logits: true,
        });
    }
    StepInput::build(&chunks, block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knots_are_the_pure_points_token_counts() {
        let g = [
            GridPoint::decode(4, 64),
            GridPoint::prefill(16, 0),
            GridPoint::decode(16, 512),
            GridPoint::mixed(4, 64, 16),
        ];
        assert_eq!(knots_of(&g), vec![4, 16]);
    }

    #[test]
    fn grid_respects_limits() {
        let g = default_grid(128, 16, 256);
        assert!(!g.is_empty());
        for p in &g {
            assert!(p.num_tokens() <= 128 && p.num_seqs() <= 16);
            assert!(p.decode_context <= 256 && p.prefill_cached + p.prefill_tokens <= 256);
        }
    }

    #[test]
    fn built_steps_have_the_grid_shape() {
        let p = GridPoint::mixed(3, 40, 10);
        let step = build_step(&p, 16, 512).unwrap();
        let s = StepShape::of(&step);
        assert_eq!(s.decode_tokens, 3.0);
        assert_eq!(s.tokens, 13.0);
        assert_eq!(step.num_seqs(), 4);
        // No two sequences share a block.
        let mut blocks: Vec<u32> = (0..4)
            .flat_map(|i| {
                let t = step.block_table(i);
                let n = if i < 3 { 3 } else { 1 };
                t[..n].to_vec()
            })
            .collect();
        let n = blocks.len();
        blocks.sort();
        blocks.dedup();
        assert_eq!(blocks.len(), n);
    }
}
