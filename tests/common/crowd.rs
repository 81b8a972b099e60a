//! A crowd of mixed requests and a way to run it through an engine: the launch-ahead tests
//! compare what different paths make of it.

use tandem::engine::request::{Event, FinishReason, Request, SamplingParams, TokenLogprob};
use tandem::engine::EngineHandle;

#[derive(Debug)]
pub struct Outcome {
    pub ids: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub reason: FinishReason,
}

pub fn run_all(h: &EngineHandle, reqs: &[Request]) -> Vec<Outcome> {
    let mut streams: Vec<_> = reqs.iter().map(|r| h.submit(r.clone()).unwrap()).collect();
    streams
        .iter_mut()
        .map(|s| {
            let (mut ids, mut logprobs) = (vec![], vec![]);
            loop {
                match super::wait::next_event(s).expect("stream ends with Finished") {
                    Event::Tokens {
                        ids: i,
                        logprobs: l,
                        ..
                    } => {
                        ids.extend(i);
                        logprobs.extend(l);
                    }
                    Event::Finished { reason, .. } => {
                        return Outcome {
                            ids,
                            logprobs,
                            reason,
                        }
                    }
                }
            }
        })
        .collect()
}

/// Greedy, seeded top-k/top-p, min-p, logprobs, and penalties (host-only: the executor drains
/// and runs those steps on the host) mixed in one crowd, with a pool small enough to preempt.
pub fn crowd() -> Vec<Request> {
    let mut state = 7u64;
    let mut rand = move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    (0..40)
        .map(|i| {
            let len = 3 + rand(30) as usize;
            let prompt = (0..len).map(|_| 4 + rand(500) as u32).collect();
            let mut p = SamplingParams {
                max_tokens: 3 + rand(18) as usize,
                ignore_eos: true,
                seed: Some(i),
                ..Default::default()
            };
            match i % 5 {
                0 => p.temperature = 0.0,
                1 => (p.temperature, p.top_k, p.top_p) = (0.8, 40, 0.9),
                2 => (p.temperature, p.min_p, p.logprobs) = (1.1, 0.05, Some(3)),
                3 => (p.temperature, p.top_p) = (0.7, 0.8),
                _ => (p.temperature, p.frequency_penalty) = (0.9, 0.5),
            }
            Request::new(prompt, p)
        })
        .collect()
}
