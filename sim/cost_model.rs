//! The step-time model: how long the executor takes for one step, from the step's shape alone.
//!
//! ```text
//! time = g(tokens) + per_sample · samples + per_kv_token_read · kv_tokens_read
//! ```
//! `g` is piecewise linear through `(token_knots[i], token_cost_s[i])` (extended along its last
//! segment): the matmuls' cost per step, which on a CPU is nearly flat while the step streams
//! the weights (a few rows) and grows linearly once it is compute-bound (many rows) — a
//! single `a + b·tokens` misses that bend by 30–40% on small decode batches. `samples` (logits
//! rows) carry the LM head, the logits copy and sampling; `kv_tokens_read` the attention.
//! Every term is linear in the parameters, so `tandem calibrate` fits them by least squares,
//! and a step costs a few multiply-adds to evaluate.

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::device::step::StepInput;

/// The features of one step that drive its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StepShape {
    /// Token rows in the step (decode tokens plus prefill chunks).
    pub tokens: f64,
    /// Of which rows of sequences computing a single token (decodes).
    pub decode_tokens: f64,
    /// Rows whose logits are computed and sampled.
    pub samples: f64,
    /// Keys read by attention, summed over rows: a row at key index `k` attends to `k + 1` keys.
    /// Per row, not per sequence, because attention reads a sequence's keys for every query row.
    pub kv_tokens_read: f64,
}

impl StepShape {
    /// The shape of a laid-out step.
    pub fn of(step: &StepInput) -> Self {
        let mut s = StepShape {
            tokens: step.num_tokens() as f64,
            samples: step.logits_indices.len() as f64,
            ..Default::default()
        };
        for (w, &ctx) in step.query_start_locs.windows(2).zip(&step.context_lens) {
            let q = (w[1] - w[0]) as f64;
            let c = ctx as f64;
            if q == 1.0 {
                s.decode_tokens += 1.0;
            }
            // Rows attend to c-q+1, c-q+2, ..., c keys.
            s.kv_tokens_read += q * (c - q) + q * (q + 1.0) / 2.0;
        }
        s
    }
}

/// How well a model fits the measurements it was fitted to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FitStats {
    pub samples: usize,
    /// Coefficient of determination.
    pub r2: f64,
    /// Mean and worst |predicted − measured| / measured.
    pub mean_rel_error: f64,
    pub max_rel_error: f64,
}

/// One timed step, kept in the cost-model file so a fit can be checked or redone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub shape: StepShape,
    pub seconds: f64,
}

/// Seconds per step from its [`StepShape`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// What was measured where (model, device, machine), for people reading the file.
    #[serde(default)]
    pub description: String,
    /// Token counts, increasing, at which the matmul cost `g` is given.
    pub token_knots: Vec<usize>,
    /// `g` at each knot, seconds.
    pub token_cost_s: Vec<f64>,
    pub per_sample_s: f64,
    pub per_kv_token_read_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<FitStats>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
}

/// The shipped model: SmolLM2-135M-Instruct (the default model) on the CPU backend, fitted by
/// `tandem calibrate` on the 2-core CI-class machine.
const DEFAULT_JSON: &str = include_str!("default_cost_model.json");

impl CostModel {
    /// The regression features of `shape` for a model with these knots: the hat functions of
    /// piecewise-linear interpolation (the last one extended linearly beyond the last knot),
    /// then samples, then KV tokens read. `coefficients()` is in the same order.
    pub fn features(knots: &[usize], shape: &StepShape) -> Vec<f64> {
        let k = knots.len();
        let mut f = vec![0.0; k + 2];
        let t = shape.tokens;
        let x: Vec<f64> = knots.iter().map(|&v| v as f64).collect();
        if k == 1 {
            f[0] = t / x[0];
        } else if t <= x[0] {
            f[0] = 1.0;
        } else {
            // The segment holding t, or the last one when t is beyond the last knot.
            let i = x.partition_point(|&v| v < t).clamp(1, k - 1);
            let r = (t - x[i - 1]) / (x[i] - x[i - 1]);
            f[i - 1] = 1.0 - r;
            f[i] = r;
        }
        f[k] = shape.samples;
        f[k + 1] = shape.kv_tokens_read;
        f
    }

    pub fn from_coefficients(knots: Vec<usize>, c: &[f64]) -> Self {
        let k = knots.len();
        CostModel {
            description: String::new(),
            token_knots: knots,
            token_cost_s: c[..k].to_vec(),
            per_sample_s: c[k],
            per_kv_token_read_s: c[k + 1],
            fit: None,
            measurements: Vec::new(),
        }
    }

    pub fn coefficients(&self) -> Vec<f64> {
        let mut c = self.token_cost_s.clone();
        c.push(self.per_sample_s);
        c.push(self.per_kv_token_read_s);
        c
    }

    /// The shipped model for the CPU default model.
    pub fn default_cpu() -> Self {
        serde_json::from_str(DEFAULT_JSON).expect("the shipped cost model parses")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let m: CostModel = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a cost model", path.display()))?;
        m.validate()
            .with_context(|| format!("cost model {}", path.display()))?;
        Ok(m)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Knots increasing and positive, one cost per knot, costs finite and not negative (or
    /// steps could take no or negative time).
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.token_knots.is_empty(), "no token knots");
        ensure!(
            self.token_knots[0] > 0 && self.token_knots.windows(2).all(|w| w[0] < w[1]),
            "token knots must be positive and increasing"
        );
        ensure!(
            self.token_cost_s.len() == self.token_knots.len(),
            "one token cost per knot"
        );
        let c = self.coefficients();
        ensure!(
            c.iter().all(|x| x.is_finite() && *x >= 0.0),
            "costs must be finite and non-negative: {c:?}"
        );
        ensure!(c.iter().any(|&x| x > 0.0), "some cost must be positive");
        Ok(())
    }

    pub fn predict(&self, shape: &StepShape) -> f64 {
        let f = Self::features(&self.token_knots, shape);
        let c = self.coefficients();
        // A last segment that slopes down could go negative far beyond the knots.
        c.iter().zip(f).map(|(c, x)| c * x).sum::<f64>().max(0.0)
    }

    /// Seconds for a laid-out step.
    pub fn step_time(&self, step: &StepInput) -> f64 {
        self.predict(&StepShape::of(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::step::SeqChunk;

    #[test]
    fn shape_counts_rows_samples_and_attention_reads() {
        let prompt = [1u32, 2, 3, 4];
        let one = [5u32];
        let step = StepInput::build(
            &[
                SeqChunk {
                    tokens: &prompt,
                    num_cached: 2,
                    block_table: &[0, 1],
                    want_logits: false,
                },
                SeqChunk {
                    tokens: &one,
                    num_cached: 9,
                    block_table: &[2, 3, 4],
                    want_logits: true,
                },
            ],
            4,
        )
        .unwrap();
        let s = StepShape::of(&step);
        assert_eq!((s.tokens, s.decode_tokens, s.samples), (5.0, 1.0, 1.0));
        // Prefill rows at key indices 2..=5 read 3+4+5+6 keys; the decode row reads 10.
        assert_eq!(s.kv_tokens_read, 18.0 + 10.0);
    }

    #[test]
    fn token_cost_interpolates_between_knots_and_extends_the_last_segment() {
        let m = CostModel::from_coefficients(vec![1, 4, 16], &[0.010, 0.013, 0.025, 0.0, 0.0]);
        let at = |t: f64| {
            m.predict(&StepShape {
                tokens: t,
                ..Default::default()
            })
        };
        assert!((at(1.0) - 0.010).abs() < 1e-12);
        assert!((at(2.5) - 0.0115).abs() < 1e-12);
        assert!((at(16.0) - 0.025).abs() < 1e-12);
        assert!((at(28.0) - 0.037).abs() < 1e-12);
    }

    #[test]
    fn the_shipped_model_is_valid_and_grows_with_the_batch() {
        let m = CostModel::default_cpu();
        m.validate().unwrap();
        let decode = |n: f64| {
            m.predict(&StepShape {
                tokens: n,
                decode_tokens: n,
                samples: n,
                kv_tokens_read: n * 256.0,
            })
        };
        assert!(decode(1.0) > 0.0);
        assert!(decode(32.0) > decode(4.0));
    }
}
