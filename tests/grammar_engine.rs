//! Grammars and `logit_bias` inside the engine, on the tiny Llama: constrained rows leave their
//! batch-mates untouched, matchers are freed, a recomputed sampler state continues its grammar,
//! and masks are prepared while the forward pass runs.
//!
//! The tiny model's weights are random, so whatever it produces is the grammar's doing.

#[path = "common/server.rs"]
mod common_server;
#[path = "common/grammar.rs"]
mod grammar;

use std::sync::Arc;

use common_server::*;
use grammar::*;
use tandem::device::sampling::grammar::ConstraintSpec;
use tandem::device::sampling::{sample, SamplerScratch, SamplerState};
use tandem::engine::request::{Event, FinishReason, Request, SamplingParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconstrained_rows_are_unaffected_by_constrained_batch_mates() {
    let s = TestServer::start().await;
    let (c, _) = compiler(&s);
    let g = c
        .compile(&ConstraintSpec::JsonSchema(person_schema()))
        .unwrap();
    let prompt = [5, 6, 7, 8, 9];
    let seeded = SamplingParams {
        temperature: 0.9,
        seed: Some(11),
        ..greedy(40)
    };
    let alone = (
        run(&s.handle, &prompt, greedy(40)).await.0,
        run(&s.handle, &prompt, seeded.clone()).await.0,
    );
    // All four at once: the constrained ones share every step with the free ones.
    let (free_greedy, free_seeded, json_greedy, json_seeded) = tokio::join!(
        run(&s.handle, &prompt, greedy(40)),
        run(&s.handle, &prompt, seeded.clone()),
        run(&s.handle, &prompt, with_grammar(&g, greedy(120))),
        run(&s.handle, &prompt, with_grammar(&g, seeded.clone())),
    );
    assert_eq!(free_greedy.0, alone.0);
    assert_eq!(free_seeded.0, alone.1);
    for (ids, reason) in [json_greedy, json_seeded] {
        let text = s.tokenizer.decode(&ids, true).unwrap();
        assert_ne!(ids, alone.0);
        if reason == FinishReason::Stop {
            check_person(&text);
        } else {
            assert!(text.starts_with('{'), "{text:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchers_are_freed_when_requests_end_or_abort() {
    let s = TestServer::start().await;
    let (c, stats) = compiler(&s);
    // Never complete: the request runs until it is aborted.
    let g = c.compile(&ConstraintSpec::Regex("[a-z]+".into())).unwrap();
    let mut p = with_grammar(&g, greedy(200));
    p.ignore_eos = true;
    p.logit_bias = s.tokenizer.eos_ids.iter().map(|&e| (e, -100.0)).collect();
    let mut streams: Vec<_> = (0..3)
        .map(|_| {
            s.handle
                .submit(Request::new(vec![1, 2, 3], p.clone()))
                .unwrap()
        })
        .collect();
    for st in &mut streams {
        assert!(matches!(st.recv().await, Some(Event::Tokens { .. })));
    }
    assert!(
        stats.snapshot().live_matchers >= 3,
        "{:?}",
        stats.snapshot()
    );
    drop(streams);
    // The engine has nothing else to run: the executor must still drop their states.
    eventually("the aborted requests' matchers are dropped", || {
        stats.snapshot().live_matchers == 0
    })
    .await;
    let ok_only = c
        .compile(&ConstraintSpec::Choice(vec!["ok".into()]))
        .unwrap();
    let done = run(&s.handle, &[1, 2], with_grammar(&ok_only, greedy(10))).await;
    assert_eq!(
        (s.tokenizer.decode(&done.0, true).unwrap().as_str(), done.1),
        ("ok", FinishReason::Stop)
    );
    eventually("the finished request's matcher is dropped", || {
        stats.snapshot().live_matchers == 0
    })
    .await;
    assert!(stats.snapshot().masks > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recomputed_sampler_state_continues_the_grammar() {
    // Preemption rebuilds the sampler state from the generated tokens: the grammar must be
    // replayed, so the continuation is the one an uninterrupted request samples.
    let s = TestServer::start().await;
    let (c, _) = compiler(&s);
    let g = c
        .compile(&ConstraintSpec::JsonSchema(person_schema()))
        .unwrap();
    let params = Arc::new(with_grammar(
        &g,
        SamplingParams {
            temperature: 1.0,
            ..greedy(60)
        },
    ));
    let vocab = s.handle.model().vocab_size;
    let row = |i: usize| -> Vec<f32> {
        (0..vocab)
            .map(|t| ((t * 7919 + i * 104729) % 1000) as f32 / 100.0)
            .collect()
    };
    let mut scratch = SamplerScratch::new(vocab);
    let mut whole = SamplerState::new(params.clone(), 3, &[1], &[]);
    let all: Vec<u32> = (0..30)
        .map(|i| sample(&mut whole, &mut row(i), &mut scratch).token)
        .collect();
    let mut resumed = SamplerState::new(params.clone(), 3, &[1], &all[..12]);
    let rest: Vec<u32> = (12..30)
        .map(|i| sample(&mut resumed, &mut row(i), &mut scratch).token)
        .collect();
    assert_eq!(rest, all[12..]);
    // And the mask really constrains: unconstrained sampling of the same rows differs.
    let mut free = SamplerState::new(
        Arc::new(SamplingParams {
            temperature: 1.0,
            ..greedy(60)
        }),
        3,
        &[1],
        &[],
    );
    let unconstrained: Vec<u32> = (0..30)
        .map(|i| sample(&mut free, &mut row(i), &mut scratch).token)
        .collect();
    assert_ne!(unconstrained, all);
    assert!(s.tokenizer.decode(&all, true).unwrap().starts_with("{\""));
}

/// The pool prepares the masks while the caller's work (the forward pass) runs, not after it;
/// the masks are those a matcher computes by itself at sampling, and a prepared mask is applied
/// without being computed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masks_are_prepared_while_the_forward_pass_runs() {
    use std::time::{Duration, Instant};
    use tandem::device::sampling::grammar::{ConstraintMatcher, MaskPool};

    let s = TestServer::start().await;
    let (c, stats) = compiler(&s);
    let g = c
        .compile(&ConstraintSpec::JsonSchema(person_schema()))
        .unwrap();
    // A few tokens the grammar accepts, each the first its mask allows.
    let mut walker = ConstraintMatcher::new(&g, &[]);
    let mut prefix = Vec::new();
    for _ in 0..5 {
        let t = walker.mask().first_bit_set().expect("a token is allowed") as u32;
        walker.advance(t);
        prefix.push(t);
    }
    let mut rows: Vec<ConstraintMatcher> = (0..4)
        .map(|i| ConstraintMatcher::new(&g, &prefix[..i + 1]))
        .collect();
    let masks_before = stats.snapshot().masks;
    let pool = MaskPool::default();
    // The stand-in forward pass waits for the masks: it sees them all only if they are computed
    // while it runs.
    let seen_during = pool.overlap(rows.iter_mut().collect(), || {
        let started = Instant::now();
        while stats.snapshot().masks < masks_before + 4 {
            if started.elapsed() > Duration::from_secs(20) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    });
    assert!(seen_during, "{:?}", stats.snapshot());
    let vocab = s.handle.model().vocab_size;
    let late_before = stats.snapshot().masks_at_sampling;
    for (i, row) in rows.iter_mut().enumerate() {
        assert!(row.is_prepared(), "row {i}");
        let mut logits = vec![0.0f32; vocab];
        row.apply(&mut logits);
        let mut alone = ConstraintMatcher::new(&g, &prefix[..i + 1]);
        let mut want = vec![0.0f32; vocab];
        alone.apply(&mut want);
        assert_eq!(logits, want, "row {i}");
        assert!(logits.iter().any(|l| l.is_infinite()), "row {i} is masked");
    }
    // The four prepared rows were not computed again; the four matchers made alone were.
    let after = stats.snapshot();
    assert_eq!(after.masks_at_sampling, late_before + 4, "{after:?}");
    assert_eq!(after.masks, masks_before + 8, "{after:?}");
}

/// Served through the engine, every mask of a constrained request is prepared during its step's
/// forward pass and counted once: one per sampled token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_requests_masks_are_prepared_ahead_and_counted_once() {
    let s = TestServer::start().await;
    let (c, stats) = compiler(&s);
    let g = c
        .compile(&ConstraintSpec::JsonSchema(person_schema()))
        .unwrap();
    let before = stats.snapshot();
    let (ids, _) = run(&s.handle, &[5, 6, 7], with_grammar(&g, greedy(120))).await;
    let after = stats.snapshot();
    assert!(ids.len() > 3, "{ids:?}");
    assert_eq!(after.masks - before.masks, ids.len() as u64, "{after:?}");
    assert_eq!(
        after.masks_at_sampling, before.masks_at_sampling,
        "{after:?}"
    );
}
