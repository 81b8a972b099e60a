//! Structured outputs and `logit_bias` end to end on the tiny Llama, through the server: every
//! constraint kind the server accepts yields output that matches it, and bad constraints and
//! biases are 400s naming the field. (Inside the engine: tests/grammar_engine.rs.)
//!
//! The tiny model's weights are random, so whatever it produces is the grammar's doing.

#[path = "common/server.rs"]
mod common_server;
#[path = "common/grammar.rs"]
mod grammar;

use common_server::*;
use grammar::*;
use hyper::StatusCode;
use serde_json::{json, Value};

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

/// Not a test: the per-token mask time for a nested schema on the default model's 49k-token
/// vocabulary (benches/RESULTS.md). `cargo test --release --test structured_outputs -- --ignored
/// --nocapture mask_time`. Also checks every token of a valid document passes its mask.
/// `TANDEM_MASK_VOCAB=FILE.gguf` takes the tokenizer from another GGUF instead (a vocabulary-only
/// file will do), e.g. `scripts/bench/mask_time_128k.sh`'s Llama 3 vocabulary (128,256 tokens).
#[test]
#[ignore]
fn mask_time_on_the_default_model() {
    use std::sync::Arc;
    use std::time::Instant;
    use tandem::device::sampling::grammar::{
        ConstraintMatcher, ConstraintSpec, GrammarCompiler, GrammarStats,
    };
    use tandem::model::default_model::default_model_path;
    use tandem::model::gguf::GgufFile;
    use tandem::model::token_env::token_env;
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
