//! What the simulator replays: a list of requests with arrival times and lengths, either
//! generated (Poisson arrivals, lognormal lengths, optional shared-prefix groups) or read from a
//! JSONL trace, one request per line:
//!
//! ```json
//! {"arrival": 0.25, "prompt_len": 180, "output_len": 64, "prefix_group": 3, "prefix_len": 128}
//! ```
//!
//! `arrival` is in seconds from the start; `prefix_group`/`prefix_len` (optional) say that the
//! prompt's first `prefix_len` tokens are the group's shared prefix (a system prompt, a
//! document), so the prefix cache can serve them; `priority` (optional, lower first) feeds the
//! `priority` policy; `hash_ids` with `hash_block_len` (optional, as the Mooncake traces give
//! them) name each `hash_block_len`-token block of the prompt, so prompts whose blocks share ids
//! share those tokens. Public trace formats are read by [`trace_formats`](super::trace_formats).

use anyhow::{ensure, Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{weighted::WeightedIndex, Distribution, Exp, LogNormal};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::request::{Request, SamplingParams};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// Seconds from the start of the trace.
    pub arrival: f64,
    pub prompt_len: usize,
    /// Tokens the request generates before it finishes (EOS, stop or max_tokens alike).
    pub output_len: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_group: Option<u32>,
    /// Leading prompt tokens shared with the group (ignored without a group).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_len: usize,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// One id per leading block of the prompt: equal ids, equal blocks (over the group prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_ids: Vec<u64>,
    /// Prompt tokens per `hash_ids` entry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hash_block_len: usize,
    /// Who sent it, for the `vtc` fairness policy (the OpenAI `user` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Its TTFT SLO in milliseconds (the request body's `ttft_slo_ms`); absent: the simulation's
    /// `--ttft-slo-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_slo_ms: Option<f64>,
    /// Seconds after its arrival at which its client goes away (a closed connection, a timeout):
    /// a request still unfinished then is aborted, its blocks freed. Absent: it waits to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_after: Option<f64>,
}

fn is_zero(x: &usize) -> bool {
    *x == 0
}

fn is_zero_i32(x: &i32) -> bool {
    *x == 0
}

/// A synthetic workload's parameters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Synthetic {
    pub num_requests: usize,
    /// Mean arrivals per second (Poisson); infinite = everything at time 0.
    pub rate: f64,
    /// Lognormal lengths: the median and the σ of the underlying normal, clamped to 1..=max.
    pub prompt_median: f64,
    pub prompt_sigma: f64,
    pub max_prompt: usize,
    pub output_median: f64,
    pub output_sigma: f64,
    pub max_output: usize,
    /// Shared-prefix groups (0 = none); a grouped request's prompt is the group's
    /// `prefix_len`-token prefix followed by its own lognormal part.
    pub prefix_groups: u32,
    pub prefix_len: usize,
    /// Fraction of requests that belong to a group.
    pub prefix_share: f64,
    /// Priorities drawn uniformly from 0..levels (1 = all equal).
    pub priority_levels: u32,
    /// Clients sending the requests (0 = none named); client k sends a share proportional to
    /// 1 / (k + 1), so the first few dominate, as a few heavy users do.
    pub clients: u32,
    pub seed: u64,
}

impl Default for Synthetic {
    fn default() -> Self {
        Synthetic {
            num_requests: 1000,
            rate: 1.0,
            prompt_median: 128.0,
            prompt_sigma: 0.8,
            max_prompt: 1024,
            output_median: 64.0,
            output_sigma: 0.8,
            max_output: 512,
            prefix_groups: 0,
            prefix_len: 256,
            prefix_share: 1.0,
            priority_levels: 1,
            clients: 0,
            seed: 0,
        }
    }
}

impl Synthetic {
    /// Draws the workload. Arrival gaps are drawn as unit exponentials divided by the rate, so
    /// one seed gives the same requests at every rate, only spaced differently.
    pub fn generate(&self) -> Result<Vec<TraceRequest>> {
        ensure!(self.rate > 0.0, "the rate must be positive");
        ensure!(
            self.prompt_median >= 1.0 && self.output_median >= 1.0,
            "median lengths must be at least 1"
        );
        ensure!(
            self.max_prompt >= 1 && self.max_output >= 1,
            "maximum lengths must be at least 1"
        );
        ensure!(
            (0.0..=1.0).contains(&self.prefix_share),
            "the prefix share must be within 0..=1"
        );
        let mut rng = StdRng::seed_from_u64(self.seed);
        let gap = Exp::new(1.0)?;
        let clients = WeightedIndex::new((0..self.clients.max(1)).map(|k| 1.0 / (k + 1) as f64))?;
        let prompt = LogNormal::new(self.prompt_median.ln(), self.prompt_sigma)?;
        let output = LogNormal::new(self.output_median.ln(), self.output_sigma)?;
        let draw = |d: &LogNormal<f64>, rng: &mut StdRng, max: usize| {
            (d.sample(rng).round() as usize).clamp(1, max)
        };
        let mut t = 0.0;
        let mut out = Vec::with_capacity(self.num_requests);
        for _ in 0..self.num_requests {
            let g: f64 = gap.sample(&mut rng);
            if self.rate.is_finite() {
                t += g / self.rate;
            }
            let own = draw(&prompt, &mut rng, self.max_prompt);
            let output_len = draw(&output, &mut rng, self.max_output);
            let joins: f64 = rng.random();
            let group: u32 = rng.random_range(0..self.prefix_groups.max(1));
            let priority = rng.random_range(0..self.priority_levels.max(1)) as i32;
            let grouped =
                self.prefix_groups > 0 && self.prefix_len > 0 && joins < self.prefix_share;
            // Drawn only when asked for, so workloads without clients stay as they were.
            let client = (self.clients > 0).then(|| format!("client-{}", clients.sample(&mut rng)));
            out.push(TraceRequest {
                arrival: t,
                prompt_len: own + if grouped { self.prefix_len } else { 0 },
                output_len,
                prefix_group: grouped.then_some(group),
                prefix_len: if grouped { self.prefix_len } else { 0 },
                priority,
                client,
                ..Default::default()
            });
        }
        Ok(out)
    }
}

/// Checks that a workload can be replayed: non-empty prompts and outputs, arrivals in order.
pub fn validate(reqs: &[TraceRequest]) -> Result<()> {
    let mut last = 0.0;
    for (i, r) in reqs.iter().enumerate() {
        ensure!(
            r.arrival.is_finite() && r.arrival >= 0.0,
            "request {i}: arrival must be a time >= 0"
        );
        ensure!(
            r.arrival >= last,
            "request {i}: arrivals must be in non-decreasing order"
        );
        ensure!(r.prompt_len > 0, "request {i}: the prompt is empty");
        ensure!(
            r.output_len > 0,
            "request {i}: output_len must be at least 1"
        );
        ensure!(
            r.hash_ids.is_empty() || r.hash_block_len > 0,
            "request {i}: hash_ids need a hash_block_len of at least 1"
        );
        ensure!(
            r.ttft_slo_ms.is_none_or(|ms| ms.is_finite() && ms >= 0.0),
            "request {i}: ttft_slo_ms must be a number of milliseconds >= 0"
        );
        ensure!(
            r.cancel_after.is_none_or(|s| s.is_finite() && s >= 0.0),
            "request {i}: cancel_after must be a number of seconds >= 0"
        );
        last = r.arrival;
    }
    Ok(())
}

pub fn write_trace(path: &Path, reqs: &[TraceRequest]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for r in reqs {
        serde_json::to_writer(&mut w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// Mean arrivals per second over the trace (infinite when everything arrives at once).
pub fn mean_rate(reqs: &[TraceRequest]) -> f64 {
    match (reqs.first(), reqs.last()) {
        (Some(a), Some(b)) if b.arrival > a.arrival => {
            (reqs.len() - 1) as f64 / (b.arrival - a.arrival)
        }
        _ => f64::INFINITY,
    }
}

/// Concrete prompt token ids for request number `index`: the group's shared prefix, or the
/// blocks its `hash_ids` name, then tokens unique to the request. Ids lie in `100..vocab`
/// (tokenizers keep special tokens low) and are a pure function of (group, block id or index,
/// position), so the simulator and a real engine replaying the same trace see the same prompts
/// and the same prefix-cache hits.
/// The engine request `r` stands for, with prompt `prompt` (see [`prompt_tokens`]): exactly
/// `output_len` tokens (EOS ignored), the trace's priority, client and TTFT SLO, and its true
/// output length as the length prediction (an oracle; the simulator may make it noisy). The
/// simulator and the engine-driving benchmarks build requests here, so a trace means the same
/// requests to both.
pub fn engine_request(r: &TraceRequest, prompt: Vec<u32>) -> Request {
    let mut req = Request::new(
        prompt,
        SamplingParams {
            max_tokens: r.output_len,
            ignore_eos: true,
            ..Default::default()
        },
    );
    req.priority = r.priority;
    req.predicted_output_len = Some(r.output_len);
    req.client = r.client.as_deref().map(Arc::from);
    req.ttft_slo = r.ttft_slo_ms.map(|ms| Duration::from_secs_f64(ms / 1e3));
    req
}

pub fn prompt_tokens(r: &TraceRequest, index: usize, vocab: u32) -> Vec<u32> {
    let low = 100.min(vocab / 2);
    let span = (vocab - low) as u64;
    let shared = match r.prefix_group {
        Some(_) => r.prefix_len.min(r.prompt_len),
        None => 0,
    };
    let group_salt = 0x5EED_0000_0000_0000 ^ r.prefix_group.unwrap_or(0) as u64;
    let own_salt = 0xA11C_E000_0000_0000 ^ index as u64;
    let hashed = if r.hash_block_len == 0 {
        0
    } else {
        r.hash_ids.len().saturating_mul(r.hash_block_len)
    };
    (0..r.prompt_len)
        .map(|pos| {
            // A hashed block's tokens depend on its id and the offset inside it only: the ids
            // are chained, so an id already stands for everything before it.
            let (salt, at) = if pos < shared {
                (group_salt, pos)
            } else if pos < hashed {
                let id = r.hash_ids[pos / r.hash_block_len];
                (mix(0xB10C_0000_0000_0000 ^ id), pos % r.hash_block_len)
            } else {
                (own_salt, pos)
            };
            low + (mix(salt.wrapping_add((at as u64) << 40)) % span) as u32
        })
        .collect()
}

/// SplitMix64's finaliser: a cheap, well-spread hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::trace_formats::{read, TraceFormat, Window};

    #[test]
    fn same_seed_same_workload_and_rate_only_rescales_arrivals() {
        let spec = Synthetic {
            num_requests: 200,
            rate: 4.0,
            prefix_groups: 3,
            prefix_share: 0.5,
            ..Default::default()
        };
        let a = spec.generate().unwrap();
        assert_eq!(a, spec.generate().unwrap());
        let b = Synthetic {
            rate: 8.0,
            ..spec.clone()
        }
        .generate()
        .unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.prompt_len, x.output_len), (y.prompt_len, y.output_len));
            assert!((x.arrival - 2.0 * y.arrival).abs() < 1e-9);
        }
        let rate = mean_rate(&a);
        assert!((2.5..6.0).contains(&rate), "rate {rate}");
        assert!(a.iter().any(|r| r.prefix_group.is_some()));
        assert!(a.iter().any(|r| r.prefix_group.is_none()));
    }

    #[test]
    fn grouped_prompts_share_exactly_their_prefix() {
        let r = |len, group| TraceRequest {
            arrival: 0.0,
            prompt_len: len,
            output_len: 1,
            prefix_group: group,
            prefix_len: 32,
            ..Default::default()
        };
        let a = prompt_tokens(&r(50, Some(1)), 0, 1000);
        let b = prompt_tokens(&r(60, Some(1)), 1, 1000);
        let c = prompt_tokens(&r(50, None), 2, 1000);
        assert_eq!(a[..32], b[..32]);
        assert_ne!(a[32..40], b[32..40]);
        assert_ne!(a[..32], c[..32]);
        assert!(a.iter().chain(&b).all(|&t| (100..1000).contains(&t)));
    }

    #[test]
    fn trace_round_trips_through_jsonl() {
        let reqs = Synthetic {
            num_requests: 20,
            prefix_groups: 2,
            priority_levels: 3,
            ..Default::default()
        }
        .generate()
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        write_trace(&path, &reqs).unwrap();
        let read = |p: &Path| read(p, TraceFormat::Jsonl, Window::default()).map(|t| t.requests);
        let back = read(&path).unwrap();
        assert_eq!(back.len(), reqs.len());
        for (a, b) in back.iter().zip(&reqs) {
            // serde_json reads floats back to within an ulp, not always bit for bit.
            assert!((a.arrival - b.arrival).abs() <= 1e-12 * b.arrival.max(1.0));
            assert_eq!(
                TraceRequest {
                    arrival: b.arrival,
                    ..a.clone()
                },
                *b
            );
        }
        std::fs::write(
            &path,
            "{\"arrival\": 1, \"prompt_len\": 0, \"output_len\": 3}\n",
        )
        .unwrap();
        assert!(read(&path).is_err());
    }
}
