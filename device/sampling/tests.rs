//! End-to-end tests of [`sample`]; each processor is tested on its own in its file.

use super::*;

fn params(f: impl FnOnce(&mut SamplingParams)) -> Arc<SamplingParams> {
    let mut p = SamplingParams::default();
    f(&mut p);
    Arc::new(p)
}

fn state(p: &Arc<SamplingParams>, seed: u64) -> SamplerState {
    SamplerState::new(Arc::clone(p), seed, &[], &[])
}

/// Samples `n` tokens in a row from (a fresh copy of) the same logits.
fn run(st: &mut SamplerState, logits: &[f32], n: usize) -> Vec<u32> {
    let mut scratch = SamplerScratch::new(logits.len());
    (0..n)
        .map(|_| sample(st, &mut logits.to_vec(), &mut scratch).token)
        .collect()
}

fn softmax(l: &[f32]) -> Vec<f64> {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = l.iter().map(|&x| ((x - max) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn histogram(tokens: &[u32], vocab: usize) -> Vec<f64> {
    let mut h = vec![0.0; vocab];
    for &t in tokens {
        h[t as usize] += 1.0 / tokens.len() as f64;
    }
    h
}

const LOGITS: [f32; 6] = [1.0, 2.0, 0.5, -1.0, 2.5, 0.0];

#[test]
fn greedy_picks_the_first_argmax() {
    let p = params(|_| {});
    let mut st = state(&p, 0);
    assert_eq!(run(&mut st, &[0.1, 3.0, -2.0, 3.0], 3), vec![1, 1, 1]);
    assert_eq!(st.num_generated(), 3);
    // top_k = 1 is greedy too, whatever the temperature.
    let p = params(|p| {
        p.temperature = 5.0;
        p.top_k = 1;
    });
    assert_eq!(run(&mut state(&p, 9), &LOGITS, 20), vec![4; 20]);
}

#[test]
fn greedy_applies_penalties_first() {
    // Token 4 leads by 0.5; once generated, presence 1.0 hands the lead to token 1 (2.0 > 1.5);
    // then token 1 is penalised too and token 4 leads again (1.5 > 1.0).
    let p = params(|p| p.presence_penalty = 1.0);
    assert_eq!(run(&mut state(&p, 0), &LOGITS, 3), vec![4, 1, 4]);
    // Frequency 1.0: counts matter, not just presence.
    let p = params(|p| p.frequency_penalty = 1.0);
    assert_eq!(run(&mut state(&p, 0), &LOGITS, 4), vec![4, 1, 4, 0]);
    // Repetition penalty over the prompt: token 4 (prompt) drops to 2.5 / 2 = 1.25 < 2.
    let p = params(|p| p.repetition_penalty = 2.0);
    let mut st = SamplerState::new(Arc::clone(&p), 0, &[4], &[]);
    assert_eq!(run(&mut st, &LOGITS, 1), vec![1]);
}

#[test]
fn seeded_draws_are_reproducible() {
    let p = params(|p| p.temperature = 1.0);
    let a = run(&mut state(&p, 1234), &LOGITS, 200);
    let b = run(&mut state(&p, 1234), &LOGITS, 200);
    assert_eq!(a, b);
}

#[test]
fn draws_differ_across_seeds_and_positions() {
    let p = params(|p| p.temperature = 1.0);
    let flat = vec![0.0f32; 1000];
    // Across positions of one seed: 100 draws from 1000 equally likely tokens are nearly all
    // distinct.
    let one_seed = run(&mut state(&p, 7), &flat, 100);
    let distinct: std::collections::HashSet<_> = one_seed.iter().collect();
    assert!(distinct.len() > 90, "{} distinct", distinct.len());
    // Across seeds at the same position.
    let firsts: std::collections::HashSet<_> = (0..100)
        .map(|s| run(&mut state(&p, s), &flat, 1)[0])
        .collect();
    assert!(firsts.len() > 90, "{} distinct", firsts.len());
}

#[test]
fn batch_mates_do_not_change_a_seeded_request() {
    let p = params(|p| p.temperature = 0.8);
    let alone = run(&mut state(&p, 42), &LOGITS, 50);
    // Interleave with other requests sharing one scratch buffer, another vocabulary size too.
    let mut scratch = SamplerScratch::new(4);
    let mut mine = state(&p, 42);
    let mut other = state(&p, 43);
    let mut got = Vec::new();
    for i in 0..50 {
        if i % 3 == 0 {
            sample(&mut other, &mut vec![0.0; 100], &mut scratch);
        }
        got.push(sample(&mut mine, &mut LOGITS.to_vec(), &mut scratch).token);
    }
    assert_eq!(got, alone);
}

#[test]
fn empirical_distribution_matches_softmax() {
    const N: usize = 20_000;
    for temperature in [1.0f32, 0.5] {
        let p = params(|p| p.temperature = temperature);
        let draws = run(&mut state(&p, 99), &LOGITS, N);
        let got = histogram(&draws, LOGITS.len());
        let scaled: Vec<f32> = LOGITS.iter().map(|l| l / temperature).collect();
        let want = softmax(&scaled);
        for (t, (g, w)) in got.iter().zip(&want).enumerate() {
            // 4.5 standard deviations of a binomial proportion.
            let tol = 4.5 * (w * (1.0 - w) / N as f64).sqrt() + 1e-3;
            assert!((g - w).abs() < tol, "T={temperature} token {t}: {g} vs {w}");
        }
    }
}

#[test]
fn top_k_two_never_yields_a_third_token_and_renormalises() {
    let p = params(|p| {
        p.temperature = 1.0;
        p.top_k = 2;
    });
    let draws = run(&mut state(&p, 5), &LOGITS, 5000);
    assert!(draws.iter().all(|&t| t == 4 || t == 1));
    let got = histogram(&draws, LOGITS.len());
    let want = 1.0 / (1.0 + (-0.5f64).exp()); // P(4) among {4, 1}
    assert!((got[4] - want).abs() < 0.03, "{} vs {want}", got[4]);
}

#[test]
fn top_p_and_min_p_restrict_the_support() {
    // Probabilities ~ .47 (4), .29 (1), .11 (0), .07 (2), .04 (5), .01 (3).
    let probs = softmax(&LOGITS);
    assert!(probs[4] + probs[1] > 0.75 && probs[4] < 0.5);
    let p = params(|p| {
        p.temperature = 1.0;
        p.top_p = 0.7;
    });
    let draws = run(&mut state(&p, 11), &LOGITS, 3000);
    let support: std::collections::BTreeSet<_> = draws.iter().copied().collect();
    assert_eq!(support, [1, 4].into());

    // min_p 0.2: keeps tokens with p >= 0.2 * p(4) ~ 0.094: tokens 4, 1, 0.
    let p = params(|p| {
        p.temperature = 1.0;
        p.min_p = 0.2;
    });
    let draws = run(&mut state(&p, 12), &LOGITS, 3000);
    let support: std::collections::BTreeSet<_> = draws.iter().copied().collect();
    assert_eq!(support, [0, 1, 4].into());

    // All three at once: top_k 3 keeps {4, 1, 0}, top_p 0.9 of that renormalised keeps all three
    // (4 and 1 hold ~.87 of it), min_p 0.5 then drops 0 (~.22 of the max).
    let p = params(|p| {
        p.temperature = 1.0;
        p.top_k = 3;
        p.top_p = 0.9;
        p.min_p = 0.5;
    });
    let draws = run(&mut state(&p, 13), &LOGITS, 3000);
    let support: std::collections::BTreeSet<_> = draws.iter().copied().collect();
    assert_eq!(support, [1, 4].into());
}

#[test]
fn logprobs_are_raw_and_sum_to_one() {
    let p = params(|p| {
        p.temperature = 0.7;
        p.repetition_penalty = 1.5;
        p.frequency_penalty = 0.4;
        p.logprobs = Some(3);
    });
    let logits: Vec<f32> = (0..500).map(|i| ((i * 7919 % 613) as f32) / 50.0).collect();
    let want = softmax(&logits);
    let mut st = SamplerState::new(Arc::clone(&p), 3, &[1, 2, 3], &[]);
    let mut scratch = SamplerScratch::new(logits.len());
    for _ in 0..20 {
        let s = sample(&mut st, &mut logits.clone(), &mut scratch);
        let lp = s.logprob.expect("logprobs were requested");
        assert_eq!(lp.token, s.token);
        // The chosen token's logprob is the raw distribution's, penalties notwithstanding.
        assert!((lp.logprob as f64 - want[s.token as usize].ln()).abs() < 1e-4);
        assert_eq!(lp.top.len(), 3);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| want[b].total_cmp(&want[a]).then(a.cmp(&b)));
        let want_top: Vec<u32> = order[..3].iter().map(|&i| i as u32).collect();
        assert_eq!(lp.top.iter().map(|x| x.0).collect::<Vec<_>>(), want_top);
    }
    // Sum to one, via the top list covering the whole vocabulary.
    let p = params(|p| p.logprobs = Some(usize::MAX));
    let s = sample(&mut state(&p, 0), &mut logits.clone(), &mut scratch);
    let top = s.logprob.unwrap().top;
    assert_eq!(top.len(), logits.len());
    let total: f64 = top.iter().map(|&(_, l)| (l as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");

    // Some(0): just the chosen token's; None: nothing.
    let p = params(|p| p.logprobs = Some(0));
    let s = sample(&mut state(&p, 0), &mut logits.clone(), &mut scratch);
    assert!(s.logprob.unwrap().top.is_empty());
    let s = sample(
        &mut state(&params(|_| {}), 0),
        &mut logits.clone(),
        &mut scratch,
    );
    assert!(s.logprob.is_none());
}

#[test]
fn recomputed_state_continues_with_the_same_draws() {
    let p = params(|p| {
        p.temperature = 1.2;
        p.top_p = 0.95;
        p.frequency_penalty = 0.3;
        p.presence_penalty = 0.2;
        p.repetition_penalty = 1.1;
    });
    let prompt = [3, 1, 4, 1, 5];
    let logits: Vec<f32> = (0..64).map(|i| ((i * 13 % 17) as f32) / 4.0).collect();
    let mut original = SamplerState::new(Arc::clone(&p), 2024, &prompt, &[]);
    let all = run(&mut original, &logits, 30);
    for cut in [0, 1, 10, 29] {
        let mut resumed = SamplerState::new(Arc::clone(&p), 2024, &prompt, &all[..cut]);
        assert_eq!(resumed.num_generated(), cut);
        assert_eq!(
            run(&mut resumed, &logits, 30 - cut),
            all[cut..],
            "cut {cut}"
        );
    }
}

#[test]
fn odd_inputs_do_not_panic() {
    let everything = params(|p| {
        p.temperature = 1.0;
        p.top_k = 1000;
        p.top_p = 0.0;
        p.min_p = 1.0;
        p.repetition_penalty = 0.0; // division by zero: +inf, sanitized
        p.frequency_penalty = -1e38;
        p.presence_penalty = f32::NAN;
        p.logprobs = Some(20);
    });
    let greedy_nan = params(|p| p.temperature = f32::NAN);
    let rows: [&[f32]; 5] = [
        &[],
        &[f32::NAN; 4],
        &[f32::NEG_INFINITY; 4],
        &[f32::INFINITY, 1.0, f32::INFINITY],
        &[f32::MAX, -f32::MAX, 0.0],
    ];
    for p in [&everything, &greedy_nan] {
        for row in rows {
            // Prompt / generated ids far outside the vocabulary are ignored.
            let mut st = SamplerState::new(Arc::clone(p), 1, &[u32::MAX, 2], &[9999]);
            let mut scratch = SamplerScratch::new(0);
            for _ in 0..3 {
                let s = sample(&mut st, &mut row.to_vec(), &mut scratch);
                assert!(row.is_empty() || (s.token as usize) < row.len());
                if let Some(lp) = s.logprob {
                    assert!(!lp.logprob.is_nan());
                    assert!(lp.top.iter().all(|&(_, l)| !l.is_nan()));
                }
            }
        }
    }
    // A NaN never wins: the only finite token is chosen whatever the seed.
    let p = params(|p| p.temperature = 1.0);
    for seed in 0..20 {
        let mut row = vec![f32::NAN, 0.0, f32::NAN];
        assert_eq!(
            sample(&mut state(&p, seed), &mut row, &mut SamplerScratch::new(3)).token,
            1
        );
    }
}
