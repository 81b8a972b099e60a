//! Structured outputs and `logit_bias` end to end on the tiny Llama: every constraint kind the
//! server accepts yields output that matches it, bad constraints and biases are 400s naming the
//! field, constrained rows leave their batch-mates untouched, and matchers are freed.
//!
//! The tiny model's weights are random, so whatever it produces is the grammar's doing.

#[path = "common/server.rs"]
mod common_server;

use std::sync::Arc;

use common_server::*;
use hyper::StatusCode;
use serde_json::{json, Value};
use tandem::device::sampling::grammar::{
    CompiledGrammar, ConstraintSpec, GrammarCompiler, GrammarStats,
};
use tandem::device::sampling::{sample, SamplerScratch, SamplerState};
use tandem::engine::request::{Event, FinishReason, Request, SamplingParams};
use tandem::engine::EngineHandle;
use tandem::model::token_env::token_env;

/// A nested object with an enum, a bounded array and bounded strings, so even a random model
/// finishes it well within the tiny model's 256-token context.
fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "color": {"enum": ["red", "green", "blue"]},
            "flags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
            "inner": {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["ok", "n"],
                "additionalProperties": false
            }
        },
        "required": ["name", "color", "flags", "inner"],
        "additionalProperties": false
    })
}

/// Panics unless `v` is a valid [`person_schema`] instance.
fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["color", "flags", "inner", "name"], "{text}");
    assert!(
        v["name"].as_str().is_some_and(|s| s.chars().count() <= 6),
        "{text}"
    );
    assert!(
        ["red", "green", "blue"].contains(&v["color"].as_str().unwrap_or("")),
        "{text}"
    );
    let flags = v["flags"].as_array().expect("flags is an array");
    assert!(
        (1..=3).contains(&flags.len()) && flags.iter().all(Value::is_boolean),
        "{text}"
    );
    assert!(v["inner"]["ok"].is_boolean(), "{text}");
    assert!(v["inner"]["n"].as_u64().is_some_and(|n| n <= 99), "{text}");
    assert_eq!(v["inner"].as_object().unwrap().len(), 2, "{text}");
}

/// A completion with EOS honoured (the shared builders ignore it) and room to finish.
fn constrained(extra: Value) -> Value {
    completion(with(json!({"ignore_eos": false, "max_tokens": 120}), extra))
}

fn text_and_finish(v: &Value, i: usize) -> (String, String) {
    let c = &v["choices"][i];
    let text = c["text"]
        .as_str()
        .or_else(|| c["message"]["content"].as_str());
    (
        text.expect("a text").to_string(),
        c["finish_reason"]
            .as_str()
            .expect("a finish reason")
            .to_string(),
    )
}

async fn ok(s: &TestServer, path: &str, body: Value) -> Value {
    let r = post(s.addr, path, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_output_matches_the_schema_on_both_endpoints() {
    let s = TestServer::start().await;
    let rf = json!({"type": "json_schema", "json_schema": {"name": "p", "schema": person_schema(), "strict": true}});
    let v = ok(&s, COMPLETIONS, constrained(json!({"response_format": rf}))).await;
    let (text, finish) = text_and_finish(&v, 0);
    check_person(&text);
    assert_eq!(finish, "stop");

    let body = chat(json!({"ignore_eos": false, "max_tokens": 120, "response_format": rf}));
    let v = ok(&s, CHAT, body).await;
    let (text, finish) = text_and_finish(&v, 0);
    check_person(&text);
    assert_eq!(finish, "stop");

    // vLLM's spellings of the same constraint.
    for body in [
        json!({"guided_json": person_schema()}),
        json!({"guided_json": person_schema().to_string()}),
        json!({"structured_outputs": {"json": person_schema()}}),
    ] {
        let v = ok(&s, COMPLETIONS, constrained(body)).await;
        check_person(&text_and_finish(&v, 0).0);
    }
}

/// What the OpenAI Python SDK's `chat.completions.parse(response_format=Owner)` sends for
/// pydantic models `Owner { pets: list[Pet] (max 2), nick: Optional[str] }`,
/// `Pet { name: str (max 5), kind: Color }`, `Color = Enum("red", "blue")`: `$defs` and `$ref`,
/// titles, `anyOf` with null, every property required, `additionalProperties: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdks_parse_schema_is_enforced_and_counted() {
    let s = TestServer::start().await;
    let schema = json!({
        "$defs": {
            "Color": {"enum": ["red", "blue"], "title": "Color", "type": "string"},
            "Pet": {
                "additionalProperties": false,
                "properties": {
                    "name": {"maxLength": 5, "title": "Name", "type": "string"},
                    "kind": {"$ref": "#/$defs/Color"}
                },
                "required": ["name", "kind"], "title": "Pet", "type": "object"
            }
        },
        "additionalProperties": false,
        "properties": {
            "pets": {"items": {"$ref": "#/$defs/Pet"}, "maxItems": 2, "title": "Pets", "type": "array"},
            "nick": {"anyOf": [{"maxLength": 4, "type": "string"}, {"type": "null"}], "title": "Nick"}
        },
        "required": ["pets", "nick"], "title": "Owner", "type": "object"
    });
    let rf = json!({"type": "json_schema", "json_schema": {"name": "Owner", "schema": schema, "strict": true}});
    for seed in 0..3 {
        let body = chat(
            json!({"ignore_eos": false, "max_tokens": 150, "response_format": rf, "temperature": 1.0, "seed": seed}),
        );
        let (text, finish) = text_and_finish(&ok(&s, CHAT, body).await, 0);
        assert_eq!(finish, "stop", "{text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v.as_object().unwrap().len(), 2, "{text}");
        assert!(
            v["nick"].is_null() || v["nick"].as_str().is_some_and(|n| n.chars().count() <= 4),
            "{text}"
        );
        let pets = v["pets"].as_array().expect("pets");
        assert!(pets.len() <= 2, "{text}");
        for p in pets {
            assert_eq!(p.as_object().unwrap().len(), 2, "{text}");
            assert!(
                p["name"].as_str().is_some_and(|n| n.chars().count() <= 5),
                "{text}"
            );
            assert!(
                ["red", "blue"].contains(&p["kind"].as_str().unwrap_or("")),
                "{text}"
            );
        }
    }
    // Three requests, one compile (the cache), and every matcher freed once the engine is idle.
    let deadline = std::time::Instant::now() + LIMIT;
    let m = loop {
        let m = get(s.addr, "/metrics").await.text();
        if metric(&m, "tandem:grammar_matchers_live") == Some(0.0)
            || std::time::Instant::now() > deadline
        {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(
        metric(&m, "tandem:structured_output_requests_total"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "tandem:grammar_compiles_total"),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(&m, "tandem:grammar_masks_total").is_some_and(|n| n > 10.0),
        "{m}"
    );
    assert!(
        metric(&m, "tandem:grammar_mask_seconds_sum").is_some_and(|t| t > 0.0),
        "{m}"
    );
    assert!(
        metric(&m, "tandem:grammar_compile_seconds_sum").is_some_and(|t| t > 0.0),
        "{m}"
    );
    assert_eq!(metric(&m, "tandem:grammar_matchers_live"), Some(0.0), "{m}");
    // Every mask was computed while its step's forward pass ran.
    assert_eq!(
        metric(&m, "tandem:grammar_masks_at_sampling_total"),
        Some(0.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_object_output_is_an_object() {
    let s = TestServer::start().await;
    let body = constrained(json!({"response_format": {"type": "json_object"}, "max_tokens": 200}));
    let (text, finish) = text_and_finish(&ok(&s, COMPLETIONS, body).await, 0);
    assert!(text.starts_with('{'), "{text:?}");
    // A random model may well fill the budget inside a string: only a finished one must parse.
    if finish == "stop" {
        let v: Value = serde_json::from_str(&text).expect("complete JSON");
        assert!(v.is_object());
    } else {
        assert_eq!(finish, "length");
    }
    // `text` constrains nothing: the same request without the field answers the same.
    let plain = ok(&s, COMPLETIONS, completion(json!({}))).await;
    let text_rf = ok(
        &s,
        COMPLETIONS,
        completion(json!({"response_format": {"type": "text"}})),
    )
    .await;
    assert_eq!(plain["choices"][0]["text"], text_rf["choices"][0]["text"]);
}

/// `(yes|no)-[0-9]{2}`, checked by hand.
fn matches_regex(t: &str) -> bool {
    let Some((word, digits)) = t.split_once('-') else {
        return false;
    };
    ["yes", "no"].contains(&word) && digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_choice_and_grammar_outputs_match() {
    let s = TestServer::start().await;
    for body in [
        json!({"guided_regex": "(yes|no)-[0-9]{2}"}),
        json!({"structured_outputs": {"regex": "(yes|no)-[0-9]{2}"}}),
    ] {
        let (text, finish) = text_and_finish(&ok(&s, COMPLETIONS, constrained(body)).await, 0);
        assert!(matches_regex(&text), "{text:?}");
        assert_eq!(finish, "stop");
    }

    let choices = ["alpha", "beta \"quoted\"", "γ"];
    for body in [
        json!({"guided_choice": choices}),
        json!({"structured_outputs": {"choice": choices}}),
    ] {
        for seed in 0..3 {
            let body = with(body.clone(), json!({"temperature": 1.0, "seed": seed}));
            let (text, finish) = text_and_finish(&ok(&s, COMPLETIONS, constrained(body)).await, 0);
            assert!(choices.contains(&text.as_str()), "{text:?}");
            assert_eq!(finish, "stop");
        }
    }

    // Streamed, on chat: the deltas add up to a valid choice.
    let body = chat(
        json!({"ignore_eos": false, "max_tokens": 20, "stream": true, "guided_choice": choices}),
    );
    let r = post(s.addr, CHAT, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (texts, finish) = collect_stream(&parse_events(&r));
    assert!(choices.contains(&texts[0].as_str()), "{texts:?}");
    assert_eq!(finish[0].as_deref(), Some("stop"));

    let lark = "start: \"(\" num (\",\" num)? \")\"\nnum: /[0-9]{1,3}/";
    for body in [
        json!({"guided_grammar": lark}),
        json!({"structured_outputs": {"grammar": lark}}),
    ] {
        let (text, _) = text_and_finish(&ok(&s, COMPLETIONS, constrained(body)).await, 0);
        let inner = text
            .strip_prefix('(')
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{text:?}"));
        for num in inner.split(',') {
            assert!(
                (1..=3).contains(&num.len()) && num.bytes().all(|b| b.is_ascii_digit()),
                "{text:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_choice_of_n_matches_the_schema() {
    let s = TestServer::start().await;
    let body =
        constrained(json!({"guided_json": person_schema(), "n": 3, "temperature": 1.0, "seed": 5}));
    let v = ok(&s, COMPLETIONS, body).await;
    let texts: Vec<String> = (0..3).map(|i| text_and_finish(&v, i).0).collect();
    for t in &texts {
        check_person(t);
    }
    assert!(
        texts[0] != texts[1] || texts[1] != texts[2],
        "seeded choices all alike: {texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_constraints_and_biases_are_400s_naming_the_field() {
    let s = TestServer::start().await;
    let schema = |schema: Value| json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}});
    let cases = [
        // llguidance refuses what it cannot enforce rather than relaxing it.
        (
            schema(json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})),
            "response_format",
            Some("missing"),
        ),
        (
            schema(json!({"type": "strin"})),
            "response_format",
            Some("strin"),
        ),
        (json!({"guided_regex": "(unclosed"}), "guided_regex", None),
        (
            json!({"guided_grammar": "start: undefined_rule"}),
            "guided_grammar",
            None,
        ),
        (json!({"guided_choice": []}), "guided_choice", None),
        (json!({"guided_choice": "a"}), "guided_choice", None),
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format.type",
            None,
        ),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "response_format.json_schema",
            None,
        ),
        (
            json!({"guided_json": {"type": "object"}, "guided_regex": "a"}),
            "guided_regex",
            Some("only one"),
        ),
        (
            json!({"response_format": {"type": "json_object"}, "structured_outputs": {"choice": ["a"]}}),
            "structured_outputs",
            None,
        ),
        (
            json!({"structured_outputs": {"choice": ["a"], "regex": "b"}}),
            "structured_outputs",
            None,
        ),
        (
            json!({"logit_bias": {"512": 1}}),
            "logit_bias",
            Some("vocabulary"),
        ),
        (json!({"logit_bias": {"5": 101}}), "logit_bias", Some("100")),
        (json!({"logit_bias": {"x": 1}}), "logit_bias", None),
        (json!({"logit_bias": {"5": "high"}}), "logit_bias", None),
        (json!({"logit_bias": [1]}), "logit_bias", None),
        (
            json!({"logit_bias": (0..301).map(|i| (i.to_string(), json!(1))).collect::<serde_json::Map<_, _>>()}),
            "logit_bias",
            Some("300"),
        ),
    ];
    for (extra, param, in_message) in cases {
        for path in [COMPLETIONS, CHAT] {
            let body = if path == COMPLETIONS {
                completion(extra.clone())
            } else {
                chat(extra.clone())
            };
            let r = post(s.addr, path, &body).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{extra}: {}", r.text());
            assert_eq!(
                r.error_param().as_deref(),
                Some(param),
                "{extra}: {}",
                r.text()
            );
            if let Some(needle) = in_message {
                let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
                assert!(msg.contains(needle), "{extra}: {msg}");
            }
        }
    }
}

/// The engine's tokens and finish reason for `params` on `prompt`.
async fn run(h: &EngineHandle, prompt: &[u32], params: SamplingParams) -> (Vec<u32>, FinishReason) {
    let mut stream = h.submit(Request::new(prompt.to_vec(), params)).unwrap();
    let mut ids = Vec::new();
    loop {
        match stream.recv().await.expect("stream ends with Finished") {
            Event::Tokens { ids: more, .. } => ids.extend(more),
            Event::Finished { reason, .. } => return (ids, reason),
        }
    }
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_forces_and_bans_tokens() {
    let s = TestServer::start().await;
    let prompt = [1, 2, 3, 4];
    let (plain, _) = run(&s.handle, &prompt, greedy(6)).await;
    let forced = 300;
    assert!(
        !plain.iter().all(|&t| t == forced),
        "pick a token greedy does not emit"
    );
    let mut p = greedy(6);
    p.logit_bias = vec![(forced, 100.0)];
    assert_eq!(run(&s.handle, &prompt, p).await.0, vec![forced; 6]);

    let banned = plain[0];
    let mut p = greedy(6);
    p.logit_bias = vec![(banned, -100.0)];
    let (out, _) = run(&s.handle, &prompt, p).await;
    assert!(!out.contains(&banned), "{banned} in {out:?}");

    // Through the server, on both endpoints: the forced token's text, `max_tokens` times.
    let piece = s.tokenizer.decode(&[forced], false).unwrap();
    let body = completion(json!({"logit_bias": {forced.to_string(): 100}, "max_tokens": 3}));
    assert_eq!(
        ok(&s, COMPLETIONS, body).await["choices"][0]["text"],
        piece.repeat(3)
    );
    let body = chat(json!({"logit_bias": {forced.to_string(): 100.0}, "max_tokens": 3}));
    assert_eq!(
        ok(&s, CHAT, body).await["choices"][0]["message"]["content"],
        piece.repeat(3)
    );
}

fn compiler(s: &TestServer) -> (GrammarCompiler, Arc<GrammarStats>) {
    let stats = Arc::new(GrammarStats::default());
    let env = token_env(s.tokenizer.clone(), s.handle.model().vocab_size).unwrap();
    let c = GrammarCompiler::new(env, stats.clone()).expect("a compiler for the tiny tokenizer");
    (c, stats)
}

fn with_grammar(g: &Arc<CompiledGrammar>, mut p: SamplingParams) -> SamplingParams {
    p.constraint = Some(g.clone());
    p.ignore_eos = false;
    p
}

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

/// Not a test: the per-token mask time for a nested schema on the default model's 49k-token
/// vocabulary (benches/RESULTS.md). `cargo test --release --test structured_outputs -- --ignored
/// --nocapture mask_time`. Also checks every token of a valid document passes its mask.
/// `TANDEM_MASK_VOCAB=FILE.gguf` takes the tokenizer from another GGUF instead (a vocabulary-only
/// file will do), e.g. `scripts/bench/mask_time_128k.sh`'s Llama 3 vocabulary (128,256 tokens).
#[test]
#[ignore]
fn mask_time_on_the_default_model() {
    use std::time::Instant;
    use tandem::device::sampling::grammar::ConstraintMatcher;
    use tandem::model::default_model::default_model_path;
    use tandem::model::gguf::GgufFile;
    use tandem::model::tokenizer::Tokenizer;

    let path = std::env::var_os("TANDEM_MASK_VOCAB")
        .map_or_else(default_model_path, std::path::PathBuf::from);
    let g = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tok = Arc::new(Tokenizer::from_gguf(&g).unwrap());
    let vocab = tok.vocab_size();
    let started = Instant::now();
    let env = token_env(tok.clone(), vocab).unwrap();
    let stats = Arc::new(GrammarStats::default());
    let c = GrammarCompiler::new(env, stats.clone()).unwrap();
    let trie_ms = started.elapsed().as_secs_f64() * 1e3;
    let schema = json!({
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "city": {"type": "string"},
                    "kind": {"enum": ["home", "work"]}
                },
                "required": ["street", "city", "kind"]
            },
            "scores": {"type": "array", "items": {"type": "number"}}
        },
        "required": ["id", "name", "tags", "address", "scores"]
    });
    let started = Instant::now();
    let grammar = c.compile(&ConstraintSpec::JsonSchema(schema)).unwrap();
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let doc = r#"{"id":42,"name":"Ada Lovelace","tags":["math","poetry","engines"],"address":{"street":"12 St James's Square","city":"London","kind":"home"},"scores":[3.5,-1,2e3]}"#;
    let ids = tok.encode(doc, false).unwrap();
    let (mut times, mut cold) = (Vec::new(), 0.0);
    for round in 0..5 {
        let mut m = ConstraintMatcher::new(&grammar, &[]);
        for &t in &ids {
            // The mask's own time (the stats'), not feeding the previous token, which
            // `mask` does first.
            let before = stats.snapshot().mask_seconds;
            let mask = m.mask();
            let took = stats.snapshot().mask_seconds - before;
            if round > 0 {
                times.push(took * 1e6);
            } else {
                cold += took * 1e6 / ids.len() as f64;
            }
            assert!(
                mask.is_allowed(t),
                "token {t} ({:?}) refused",
                tok.id_to_token(t)
            );
            m.advance(t);
        }
        assert!(
            m.mask().is_allowed(tok.eos_ids[0]),
            "the document is complete"
        );
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "vocab {vocab}: trie + factory {trie_ms:.0} ms, schema compile {compile_ms:.1} ms, mask \
         {mean:.0} µs/token mean, {:.0} median, {:.0} p90, {:.0} max over {} tokens \
         ({cold:.0} µs/token mean on the first, cold pass)",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times[times.len() - 1],
        times.len()
    );
}
