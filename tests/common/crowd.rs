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

/// The regex the crowd's constrained requests follow ([`constrain_crowd`]).
pub const CROWD_REGEX: &str = "(yes|no)-[0-9]{2,3}";

/// Gives every fourth request of `reqs` a grammar ([`CROWD_REGEX`], compiled for the tokenizer
/// of the model in `model_dir`) and the next one a logit bias (a nudge, a ban of token 300).
pub fn constrain_crowd(reqs: &mut [Request], model_dir: &std::path::Path) {
    use std::sync::Arc;
    use tandem::device::sampling::grammar::{ConstraintSpec, GrammarCompiler, GrammarStats};
    use tandem::model::token_env::token_env;
    use tandem::model::tokenizer::Tokenizer;

    let tok = Arc::new(Tokenizer::from_hf_dir(model_dir).unwrap());
    let env = token_env(tok.clone(), tok.vocab_size()).unwrap();
    let compiler = GrammarCompiler::new(env, Arc::new(GrammarStats::default())).unwrap();
    let regex = compiler
        .compile(&ConstraintSpec::Regex(CROWD_REGEX.into()))
        .unwrap();
    for (i, r) in reqs.iter_mut().enumerate() {
        let p = Arc::make_mut(&mut r.params);
        match i % 4 {
            0 => p.constraint = Some(regex.clone()),
            1 => p.logit_bias = vec![(7, 5.0), (300, -100.0), (301, 2.5)],
            _ => {}
        }
    }
}

/// Checks what [`constrain_crowd`] asked of the outcomes: a grammar completed matches
/// [`CROWD_REGEX`] (decoded with `decode`), a banned token never appears, and at least one
/// grammar completed.
pub fn check_constrained_crowd(got: &[Outcome], decode: impl Fn(&[u32]) -> String) {
    for (i, g) in got.iter().enumerate() {
        if i % 4 == 0 && g.reason == FinishReason::Stop {
            let text = decode(&g.ids);
            let (word, digits) = text.split_once('-').unwrap_or_else(|| panic!("{text:?}"));
            assert!(["yes", "no"].contains(&word), "{text:?}");
            assert!((2..=3).contains(&digits.len()), "{text:?}");
        }
        if i % 4 == 1 {
            assert!(!g.ids.contains(&300), "request {i}: a banned token");
        }
    }
    let finished = (0..got.len())
        .step_by(4)
        .filter(|&i| got[i].reason == FinishReason::Stop);
    assert!(
        finished.count() > 0,
        "no constrained request completed its grammar"
    );
}
