//! Random small workloads for the liveness tests: staggered arrivals, prompt and output lengths,
//! priorities, shared prefixes, several samples per prompt, aborts, in a cache of a few blocks
//! with a budget of a few tokens.

use proptest::prelude::*;

#[derive(Debug, Clone)]
pub struct Req {
    /// In returned steps from the start.
    pub arrival: u64,
    pub prompt_len: usize,
    pub output_len: usize,
    /// Requests of one family share the first half of their prompts (prefix-cache hits).
    pub family: u32,
    pub priority: i32,
    /// Copies of the request submitted together, as the server submits `n` > 1: the same prompt.
    pub n: usize,
    /// Aborted this many planned steps after arriving, if still unfinished.
    pub abort_after: Option<u64>,
    /// Its TTFT SLO, in returned steps (for the deadline policy).
    pub ttft_slo: Option<u64>,
}

impl Req {
    /// The tokens every step must spend on one copy at most: see `bounds`.
    pub fn work(&self) -> u64 {
        (self.prompt_len + self.output_len + 2) as u64
    }

    /// Who sent it (for the vtc policy): drawn from the priority, so clients differ in how much
    /// they send and a workload mixes two or three of them.
    pub fn client(&self) -> String {
        format!("client-{}", self.priority.rem_euclid(3))
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_batch_tokens: usize,
    pub max_num_seqs: usize,
    pub prefix_caching: bool,
    /// Plan a step while the previous one is in flight, as the engine does by default.
    pub overlap: bool,
    /// The aging knob (`None`: off).
    pub max_wait_steps: Option<u64>,
    pub reqs: Vec<Req>,
}

impl Case {
    /// One entry per submitted sequence (each copy of an `n` > 1 request), in submission order:
    /// the request it copies.
    pub fn seqs(&self) -> Vec<&Req> {
        self.reqs
            .iter()
            .flat_map(|r| std::iter::repeat_n(r, r.n))
            .collect()
    }
}

pub fn case() -> impl Strategy<Value = Case> {
    let req = (
        (0u64..4, 1usize..=20, 1usize..=12),
        (0u32..3, 0i32..3),
        prop_oneof![4 => Just(1usize), 1 => 2usize..=3],
        prop_oneof![4 => Just(None), 1 => (0u64..24).prop_map(Some)],
        prop_oneof![1 => Just(None), 3 => (0u64..12).prop_map(Some)],
    );
    (
        (1usize..=4, 2usize..=12, 1usize..=16, 1usize..=6),
        (any::<bool>(), any::<bool>()),
        prop_oneof![1 => Just(None), 3 => (0u64..=12).prop_map(Some)],
        proptest::collection::vec(req, 1..=8),
    )
        .prop_map(
            |((bs, nb, budget, seqs), (prefix_caching, overlap), wait, reqs)| {
                let mut arrival = 0;
                let reqs = reqs
                    .into_iter()
                    .map(
                        |(
                            (gap, prompt_len, output_len),
                            (family, priority),
                            n,
                            abort_after,
                            ttft_slo,
                        )| {
                            arrival += gap;
                            Req {
                                arrival,
                                prompt_len,
                                output_len,
                                family,
                                priority,
                                n,
                                abort_after,
                                ttft_slo,
                            }
                        },
                    )
                    // The engine refuses what cannot fit the whole cache.
                    .filter(|r| (r.prompt_len + r.output_len).div_ceil(bs) <= nb)
                    .collect();
                Case {
                    block_size: bs,
                    num_blocks: nb,
                    max_batch_tokens: budget,
                    max_num_seqs: seqs,
                    prefix_caching,
                    overlap,
                    max_wait_steps: wait,
                    reqs,
                }
            },
        )
}

/// The prompt of request `i` (copies of one request share it whole).
pub fn prompt(i: usize, r: &Req) -> Vec<u32> {
    let shared = r.prompt_len / 2;
    (0..r.prompt_len as u32)
        .map(|j| {
            if (j as usize) < shared {
                1000 * (r.family + 1) + j
            } else {
                100_000 * (i as u32 + 1) + j
            }
        })
        .collect()
}

/// How many cases each property test runs: `TANDEM_LIVENESS_CASES`, or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("TANDEM_LIVENESS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
