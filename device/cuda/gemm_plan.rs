//! Which kernel computes a product of few rows: cuBLAS, the skinny kernel
//! (`kernels/gemm_skinny.cu`) with one of its k-splits, or one of cuBLASLt's algorithms
//! (gemm_lt.rs). By default each product shape is timed once on its first call, on its real
//! operands, and the fastest kernel is kept: cuBLAS's heuristics pick tiles shaped for many rows,
//! which leave most SMs idle on a decode step's products, but where cuBLAS is faster on some GPU
//! and shape it still wins the timing, so the choice never makes a product slower than cuBLAS
//! was.

use std::collections::HashMap;

use anyhow::{bail, ensure, Result};
use cudarc::driver::sys::CUstreamCaptureStatus;

use super::gemm_args::GemmArgs;
use super::gemm_lt::LtAlgo;
use super::kernels::{SKINNY_KWARPS, SKINNY_TILES};
use super::{CudaBackend, CudaTensor, DType};
use crate::device::backend::Backend;

/// The most rows the skinny kernel takes: 8 token tiles of 8.
pub const SKINNY_MAX_ROWS: usize = 8 * SKINNY_TILES[SKINNY_TILES.len() - 1] as usize;

/// k is consumed in chunks of this many elements (`SKINNY_CHUNK` in the kernel).
const SKINNY_CHUNK: usize = 32;

/// Timed runs per candidate when tuning (after one untimed run), each with a cold L2 cache.
const TUNE_REPS: usize = 5;

/// The split-k partial sums' buffer, in f32s (8 MiB): 64 rows of a 3072-feature product split
/// ten ways fit.
pub(super) const SKINNY_WS_FLOATS: usize = 2 << 20;

/// Feature tiles a split-k launch may have (one counter each).
pub(super) const SKINNY_MAX_TILES: usize = 16 << 10;

/// A split-k launch aims at this many blocks per SM (the kernel fits two at 64 rows).
const SKINNY_BLOCKS_PER_SM: usize = 2;

/// How products of at most [`SKINNY_MAX_ROWS`] bf16 rows are computed (`--gemm`; tests and the
/// benchmark pin it). Products the skinny kernel cannot take (f32, more rows, k not a multiple
/// of 32) always use cuBLAS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    /// Time cuBLAS, the skinny kernel's k-splits and cuBLASLt's algorithms on a shape's first
    /// call and keep the fastest (the default on a GPU).
    Auto,
    /// cuBLAS for every product (the default on the emulated device, whose timings say nothing
    /// about a GPU's).
    Cublas,
    /// The skinny kernel with this many of a block's warps splitting k (1, 2, 4 or 8) wherever
    /// it applies, k split over blocks as [`CudaBackend`]'s heuristic says.
    Skinny(u32),
    /// cuBLASLt's candidate of this rank for each shape (its heuristic's list, then k-splits of
    /// the first; the last one where there are fewer), cuBLAS where it has none (tests).
    Lt(usize),
}

/// One way to compute a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GemmKernel {
    Cublas,
    /// `gemm_skinny_bf16_t<tiles>_k<kwarps>` on `splits` runs of k (grid.y).
    Skinny {
        tiles: u32,
        kwarps: u32,
        splits: u32,
    },
    /// A cuBLASLt algorithm (cuBLAS where cuBLASLt does not take it for a call's shape).
    Lt(LtAlgo),
}

impl std::fmt::Display for GemmKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GemmKernel::Cublas => write!(f, "cublas"),
            GemmKernel::Skinny {
                tiles,
                kwarps,
                splits,
            } => write!(f, "skinny_t{tiles}_k{kwarps}_s{splits}"),
            GemmKernel::Lt(algo) => algo.fmt(f),
        }
    }
}

/// A product's shape as the plan keys it: (n, k, token tiles).
type ShapeKey = (usize, usize, u32);

/// The path and what tuning picked so far.
pub(super) struct GemmPlan {
    path: GemmPath,
    picked: HashMap<ShapeKey, GemmKernel>,
    tunings: Vec<GemmTuning>,
}

impl GemmPlan {
    pub(super) fn new(path: GemmPath) -> Self {
        GemmPlan {
            path,
            picked: HashMap::new(),
            tunings: Vec::new(),
        }
    }
}

/// One tuned shape, for reports: the product's n and k, the rows it was timed at, each
/// candidate's median time in microseconds, and the pick.
#[derive(Clone, Debug)]
pub struct GemmTuning {
    pub n: usize,
    pub k: usize,
    pub rows: usize,
    pub times_us: Vec<(String, f64)>,
    /// Candidates whose output disagreed with cuBLAS's or that failed to run (never picked;
    /// empty unless a kernel is wrong on this GPU or a library refused a call).
    pub rejected: Vec<String>,
    pub picked: String,
}

/// The token tiles (of 8 rows) of the smallest skinny instance that holds `rows`.
fn tiles_for(rows: usize) -> u32 {
    SKINNY_TILES
        .into_iter()
        .find(|&t| 8 * t as usize >= rows)
        .unwrap_or(SKINNY_TILES[SKINNY_TILES.len() - 1])
}

/// Whether a candidate's output `got` matches cuBLAS's `reference` up to bf16 rounding: each
/// element within 1/64 of its value plus 1/64 of the output's largest magnitude (cuBLAS rounds
/// the product before adding a bias, the skinny kernel once after; summation orders differ).
/// A wrong fragment layout or a lost partial sum is off by the size of the outputs themselves.
/// Non-finite elements must match exactly.
fn agrees(reference: &[f32], got: &[f32]) -> bool {
    let scale = reference
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    reference.len() == got.len()
        && reference.iter().zip(got).all(|(&r, &g)| {
            if !r.is_finite() {
                return r.to_bits() == g.to_bits() || (r.is_nan() && g.is_nan());
            }
            (g - r).abs() <= (r.abs() + scale) / 64.0
        })
}

/// The feature tiles (grid.x) of a skinny launch: 16 features for each of the 8 / `kwarps`
/// feature warps of a block.
fn skinny_blocks(n: usize, kwarps: u32) -> usize {
    n.div_ceil(16 * (8 / kwarps.clamp(1, 8) as usize))
}

/// How many runs of k the skinny kernel splits an n x k product into: enough blocks to give
/// every one of `sms` SMs [`SKINNY_BLOCKS_PER_SM`], as long as each warp keeps at least two
/// chunks of its run and the partial sums of the tile's most rows (8 `tiles`) fit the
/// workspace. The most rows, not this call's: the pick is kept for every row count of the tile.
fn skinny_splits(n: usize, k: usize, tiles: u32, kwarps: u32, sms: usize) -> u32 {
    let blocks = skinny_blocks(n, kwarps);
    let kwarps = kwarps.clamp(1, 8) as usize;
    if n == 0 || blocks > SKINNY_MAX_TILES {
        return 1;
    }
    let wanted = (SKINNY_BLOCKS_PER_SM * sms).div_ceil(blocks);
    let by_chunks = k / SKINNY_CHUNK / (2 * kwarps);
    let by_workspace = SKINNY_WS_FLOATS / (8 * tiles as usize * n);
    wanted.min(by_chunks).min(by_workspace).clamp(1, 64) as u32
}

impl CudaBackend {
    /// The path products of few rows take.
    pub fn gemm_path(&self) -> GemmPath {
        self.gemm_plan().path
    }

    /// What tuning measured and picked so far, one entry per shape (sorted by n, k, rows).
    pub fn gemm_tunings(&self) -> Vec<GemmTuning> {
        let mut v = self.gemm_plan().tunings.clone();
        v.sort_by_key(|t| (t.n, t.k, t.rows));
        v
    }

    /// How many products picked for a cuBLASLt algorithm went to cuBLAS instead, because
    /// cuBLASLt did not take the algorithm at that call's row count (or an operand was less
    /// aligned than its tuning promised).
    pub fn gemm_lt_fallbacks(&self) -> usize {
        self.lt.as_ref().map_or(0, |lt| lt.fallbacks())
    }

    fn gemm_plan(&self) -> std::sync::MutexGuard<'_, GemmPlan> {
        // A panic while holding the plan leaves a map that is still valid.
        self.gemm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the skinny kernel can compute this product.
    fn skinny_applies(&self, a: &GemmArgs) -> bool {
        self.dtype == DType::Bf16
            && (1..=SKINNY_MAX_ROWS).contains(&a.rows)
            && a.n >= 1
            && a.k >= SKINNY_CHUNK
            && a.k.is_multiple_of(SKINNY_CHUNK)
            && a.x.is_multiple_of(16)
            && a.w.is_multiple_of(16)
            && u32::try_from(a.n).is_ok()
    }

    /// The kernel for this product: per the path, tuning it first if need be (`out` is the
    /// product's output, `a.out`, read back to check each candidate against cuBLAS).
    pub(super) fn pick_gemm(&self, a: &GemmArgs, out: &CudaTensor) -> Result<GemmKernel> {
        if !self.skinny_applies(a) {
            return Ok(GemmKernel::Cublas);
        }
        let tiles = tiles_for(a.rows);
        let key = (a.n, a.k, tiles);
        let path = {
            let plan = self.gemm_plan();
            if let Some(&k) = plan.picked.get(&key) {
                return Ok(k);
            }
            plan.path
        };
        match path {
            GemmPath::Cublas => Ok(GemmKernel::Cublas),
            GemmPath::Skinny(kwarps) => Ok(self.skinny_kernel(a, tiles, kwarps)),
            GemmPath::Lt(rank) => {
                let algos = self.lt_candidates(a)?;
                let picked = algos
                    .get(rank.min(algos.len().saturating_sub(1)))
                    .map_or(GemmKernel::Cublas, |&algo| GemmKernel::Lt(algo));
                self.gemm_plan().picked.insert(key, picked);
                Ok(picked)
            }
            GemmPath::Auto => {
                // Timing synchronizes, which a capture forbids: a shape first met inside one
                // (graphs.rs runs each shape eagerly first, so only by accident) uses cuBLAS
                // this time and is tuned on its next eager call.
                if self.stream.capture_status()?
                    != CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
                {
                    return Ok(GemmKernel::Cublas);
                }
                let (picked, tuning) = self.tune_gemm(a, tiles, out)?;
                let mut plan = self.gemm_plan();
                plan.picked.insert(key, picked);
                plan.tunings.push(tuning);
                Ok(picked)
            }
        }
    }

    /// The skinny kernel with `kwarps` k-splitting warps, k split per [`skinny_splits`].
    fn skinny_kernel(&self, a: &GemmArgs, tiles: u32, kwarps: u32) -> GemmKernel {
        GemmKernel::Skinny {
            tiles,
            kwarps,
            splits: skinny_splits(a.n, a.k, tiles, kwarps, self.sm_count),
        }
    }

    /// Times cuBLAS, the skinny kernel at every k-warp count, each on one run of k and split
    /// as [`Self::skinny_kernel`] says, and cuBLASLt's candidates, on this product's operands
    /// (each writes the same `out`), and returns the fastest, with the timings. Each is timed
    /// as a decode step meets it: weights out of the L2 cache, launches queued ahead
    /// ([`Self::time_runs`] with a flush). A candidate whose output disagrees with
    /// cuBLAS's ([`agrees`]) is never picked: a kernel bug on some GPU costs speed, not answers.
    fn tune_gemm(
        &self,
        a: &GemmArgs,
        tiles: u32,
        out: &CudaTensor,
    ) -> Result<(GemmKernel, GemmTuning)> {
        let mut candidates = vec![GemmKernel::Cublas];
        for kwarps in SKINNY_KWARPS {
            let unsplit = GemmKernel::Skinny {
                tiles,
                kwarps,
                splits: 1,
            };
            candidates.push(unsplit);
            let split = self.skinny_kernel(a, tiles, kwarps);
            if split != unsplit {
                candidates.push(split);
            }
        }
        // cuBLASLt is optional here: where asking it fails, tuning goes on without it.
        match self.lt_candidates(a) {
            Ok(algos) => candidates.extend(algos.into_iter().map(GemmKernel::Lt)),
            Err(e) => tracing::warn!(
                "gemm {}x{}x{}: no cuBLASLt candidates ({e:#})",
                a.rows,
                a.n,
                a.k
            ),
        }
        let len = a.rows * a.n;
        self.run_gemm(GemmKernel::Cublas, a)?;
        let reference = self.download(out, len)?;
        let (mut times, mut rejected) = (Vec::new(), Vec::new());
        let mut flush = self.l2_flush_buffer();
        for c in candidates {
            if c != GemmKernel::Cublas {
                // A candidate that fails to run (a library status, not a fault: those would
                // fail cuBLAS's run too) is dropped like one that disagrees.
                let verdict = self
                    .run_gemm(c, a)
                    .and_then(|()| self.download(out, len))
                    .map(|got| agrees(&reference, &got));
                let why = match verdict {
                    Ok(true) => None,
                    Ok(false) => Some("disagrees with cuBLAS".to_string()),
                    Err(e) => Some(format!("failed: {e:#}")),
                };
                if let Some(why) = why {
                    tracing::warn!("gemm {}x{}x{}: {c} {why}; not used", a.rows, a.n, a.k);
                    rejected.push(c.to_string());
                    continue;
                }
            }
            let timed = self.time_runs(1, TUNE_REPS, flush.as_mut(), || self.run_gemm(c, a));
            match timed {
                Ok(us) => times.push((c, us)),
                // cuBLAS must run; another candidate that fails while timed is dropped.
                Err(e) if c != GemmKernel::Cublas => {
                    tracing::warn!(
                        "gemm {}x{}x{}: {c} failed: {e:#}; not used",
                        a.rows,
                        a.n,
                        a.k
                    );
                    rejected.push(c.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        let (best, _) = times
            .iter()
            .copied()
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .expect("cuBLAS is always a candidate");
        tracing::debug!(
            "gemm {}x{}x{}: {} -> {best}",
            a.rows,
            a.n,
            a.k,
            times
                .iter()
                .map(|(c, us)| format!("{c} {us:.1} us"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let tuning = GemmTuning {
            n: a.n,
            k: a.k,
            rows: a.rows,
            times_us: times.iter().map(|(c, us)| (c.to_string(), *us)).collect(),
            rejected,
            picked: best.to_string(),
        };
        Ok((best, tuning))
    }

    /// Queues the product on the compute stream with kernel `kernel` (bias included).
    pub(super) fn run_gemm(&self, kernel: GemmKernel, a: &GemmArgs) -> Result<()> {
        match kernel {
            GemmKernel::Cublas => self.cublas_gemm(a),
            GemmKernel::Skinny {
                tiles,
                kwarps,
                splits,
            } => self.skinny_gemm(a, tiles, kwarps, splits),
            GemmKernel::Lt(algo) => {
                let taken = match &self.lt {
                    Some(lt) => {
                        self.ctx.bind_to_thread()?;
                        lt.matmul(&algo, a, self.stream.cu_stream().cast())?
                    }
                    None => false,
                };
                if !taken {
                    return self.cublas_gemm(a);
                }
                self.add_bias(a)
            }
        }
    }

    /// cuBLASLt's candidates for this product (none where cuBLASLt is not loaded).
    fn lt_candidates(&self, a: &GemmArgs) -> Result<Vec<LtAlgo>> {
        match &self.lt {
            Some(lt) => {
                self.ctx.bind_to_thread()?;
                lt.candidates(a)
            }
            None => Ok(Vec::new()),
        }
    }

    fn skinny_gemm(&self, a: &GemmArgs, tiles: u32, kwarps: u32, splits: u32) -> Result<()> {
        let f = self.k.skinny(tiles, kwarps)?;
        let blocks = skinny_blocks(a.n, kwarps);
        let (ws, counters) = match &self.skinny_scratch {
            Some((ws, counters)) => (self.ptr(ws), self.ptr(counters)),
            None => bail!("the skinny GEMM kernel is built for bf16 storage only"),
        };
        if splits > 1 {
            ensure!(
                blocks <= SKINNY_MAX_TILES && splits as usize * a.rows * a.n <= SKINNY_WS_FLOATS,
                "skinny GEMM: {splits} splits of {}x{} do not fit its workspace",
                a.rows,
                a.n
            );
        }
        let (rows, n, k) = (a.rows as u32, a.n as u32, a.k as u32);
        // A null bias pointer: the kernel adds none.
        let bias = a.bias.unwrap_or(0);
        self.launch(f, (blocks as u32, splits, 1), 256, |b| {
            b.arg(&a.x)
                .arg(&a.w)
                .arg(&bias)
                .arg(&rows)
                .arg(&n)
                .arg(&k)
                .arg(&a.out)
                .arg(&ws)
                .arg(&counters);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_rows_with_the_smallest_instance() {
        assert_eq!(tiles_for(1), 1);
        assert_eq!(tiles_for(8), 1);
        assert_eq!(tiles_for(9), 2);
        assert_eq!(tiles_for(17), 4);
        assert_eq!(tiles_for(33), 8);
        assert_eq!(tiles_for(SKINNY_MAX_ROWS), 8);
    }

    #[test]
    fn candidates_must_agree_with_cublas_up_to_rounding() {
        let reference = [1.0, -2.0, 0.0, 100.0, f32::INFINITY];
        // bf16 rounding apart (one step at 100 is 0.5): agrees.
        assert!(agrees(
            &reference,
            &[1.0078125, -2.0, 0.25, 100.5, f32::INFINITY]
        ));
        // A wrong element, a NaN, a lost infinity or a missing element: does not.
        assert!(!agrees(&reference, &[1.0, -2.0, 3.0, 100.0, f32::INFINITY]));
        assert!(!agrees(
            &reference,
            &[1.0, f32::NAN, 0.0, 100.0, f32::INFINITY]
        ));
        assert!(!agrees(&reference, &[1.0, -2.0, 0.0, 100.0, 5.0]));
        assert!(!agrees(&reference, &reference[..4]));
        // Swapped rows (a layout bug): does not.
        assert!(!agrees(&[1.0, 2.0, 90.0, 91.0], &[90.0, 91.0, 1.0, 2.0]));
    }

    #[test]
    fn splits_fill_the_gpu_within_the_workspace() {
        // Llama-3.2-1B's products on 132 SMs.
        for (n, k) in [
            (3072, 2048),
            (2048, 2048),
            (16384, 2048),
            (2048, 8192),
            (128256, 2048),
        ] {
            for tiles in SKINNY_TILES {
                for kwarps in SKINNY_KWARPS {
                    let s = skinny_splits(n, k, tiles, kwarps, 132) as usize;
                    let blocks = skinny_blocks(n, kwarps);
                    let what = format!("{n}x{k} tiles {tiles} k-warps {kwarps}: {s} splits");
                    // Valid for every row count of the tile.
                    assert!(
                        s * 8 * tiles as usize * n <= SKINNY_WS_FLOATS || s == 1,
                        "{what}"
                    );
                    assert!(s == 1 || blocks <= SKINNY_MAX_TILES, "{what}");
                    // Splits only where the grid is short of two blocks an SM, and no more
                    // than make it up.
                    assert!(s == 1 || blocks < 2 * 132, "{what}");
                    assert!(s * blocks < 2 * 132 + blocks, "{what}");
                }
            }
        }
        // The o product at 64 rows, all 8 warps on features: 16 tiles; 17 splits wanted, 32
        // allowed by the chunks (2048 / 32 / 2), 16 by the workspace (2^21 / (64 * 2048)).
        assert_eq!(skinny_splits(2048, 2048, 8, 1, 132), 16);
        // Two chunks a warp at least: k = 64 with 8 k-warps cannot split.
        assert_eq!(skinny_splits(64, 64, 1, 8, 132), 1);
    }
}
