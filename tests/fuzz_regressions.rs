//! The fuzz targets on the stable toolchain: every seed (`fuzz/seeds/<target>/`), every input a
//! fuzzer once crashed on (`fuzz/regressions/<target>/`, plus the named cases below), and a fixed
//! set of deterministic mutations of the seeds, through the very bodies `cargo fuzz` runs
//! (`fuzz/src/harness.rs`). `scripts/fuzz.sh` runs the coverage-guided fuzzers themselves.
//!
//! `cargo test --release --test fuzz_regressions -- --ignored write_fuzz_seeds` rewrites the
//! seed files from the generators in the harness.

#[path = "../fuzz/src/harness.rs"]
mod harness;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

use tandem::server::validate::Endpoint;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("completions_body", |d| {
        harness::request_body(d, Endpoint::Completions)
    }),
    ("chat_body", |d| harness::request_body(d, Endpoint::Chat)),
    ("chat_template", harness::chat_template),
    ("gguf", harness::gguf),
    ("safetensors", harness::safetensors),
    ("detokenize", harness::detokenize),
];

fn seeds_for(target: &str) -> Vec<Vec<u8>> {
    match target {
        "completions_body" => harness::request_seeds(Endpoint::Completions),
        "chat_body" => harness::request_seeds(Endpoint::Chat),
        "chat_template" => harness::chat_template_seeds(),
        "gguf" => harness::gguf_seeds(),
        "safetensors" => harness::safetensors_seeds(),
        "detokenize" => harness::detokenize_seeds(),
        _ => unreachable!(),
    }
}

fn dir(kind: &str, target: &str) -> PathBuf {
    harness::repo_root().join("fuzz").join(kind).join(target)
}

/// The files in `fuzz/<kind>/<target>/`.
fn files(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir(kind, target)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("readable");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    out
}

fn target(name: &str) -> Target {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn seeds_and_saved_crashes_replay_cleanly() {
    let mut count = 0;
    for (name, run) in TARGETS {
        let seeds = files("seeds", name);
        assert!(
            !seeds.is_empty(),
            "no seeds in {}",
            dir("seeds", name).display()
        );
        for (file, bytes) in seeds.iter().chain(&files("regressions", name)) {
            eprintln!("{name}: {file}");
            run(bytes);
            count += 1;
        }
        for bytes in seeds_for(name) {
            run(&bytes);
        }
    }
    eprintln!("{count} files replayed");
}

/// Interesting values spliced in by the mutator: lengths and counts that overflow or point past
/// the end, type ids just outside the known ones, JSON and template syntax.
const DICTIONARY: &[&[u8]] = &[
    &[0xff; 8],
    &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0, 0, 0, 0, 0, 0, 0, 0x80],
    &[13, 0, 0, 0],
    &[9, 0, 0, 0],
    &[0, 0, 0, 0],
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"null",
    b"[[[[[[[[",
    b"\"\\ud800\"",
    b"{{ ",
    b"{% ",
    b"\xc3",
    b"\xf0\x9f\x98",
];

/// One deterministic mutation of `input`.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let len = v.len();
        match rng.random_range(0..6) {
            0 if len > 0 => v.truncate(rng.random_range(0..len)),
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            2 if len > 0 => {
                let i = rng.random_range(0..len);
                v[i] = rng.random();
            }
            3 => {
                let word = DICTIONARY[rng.random_range(0..DICTIONARY.len())];
                let i = rng.random_range(0..=len);
                if rng.random_bool(0.5) || i + word.len() > len {
                    v.splice(i..i, word.iter().copied());
                } else {
                    v[i..i + word.len()].copy_from_slice(word);
                }
            }
            4 if len > 1 => {
                // Duplicate a slice somewhere else.
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..len.min(a + 64));
                let chunk = v[a..b].to_vec();
                let at = rng.random_range(0..=len);
                v.splice(at..at, chunk);
            }
            _ if len > 0 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..len.min(a + 32) + 1);
                v.drain(a..b.min(len));
            }
            _ => v.push(rng.random()),
        }
    }
    v
}

/// Every target on a fixed set of mutations of its seeds: the same inputs every run, so a failure
/// here reproduces exactly (the panic message names the target and the mutation number).
#[test]
fn deterministic_mutations_of_the_seeds_are_handled() {
    const PER_TARGET: usize = 3000;
    for (name, run) in TARGETS {
        let seeds = seeds_for(name);
        let mut rng = StdRng::seed_from_u64(0x7a6e_d3a1);
        let started = std::time::Instant::now();
        for i in 0..PER_TARGET {
            let seed = &seeds[i % seeds.len()];
            let input = mutate(&mut rng, seed);
            let outcome = std::panic::catch_unwind(|| run(&input));
            if outcome.is_err() {
                let path = std::env::temp_dir().join(format!("tandem-fuzz-{name}-{i}"));
                let _ = std::fs::write(&path, &input);
                panic!(
                    "{name}: mutation {i} failed; the input is in {} (move it into \
                     fuzz/regressions/{name}/ once fixed)",
                    path.display()
                );
            }
        }
        eprintln!("{name}: {PER_TARGET} mutations in {:?}", started.elapsed());
    }
}

/// Every prefix of every binary seed: the truncated files the model readers must refuse cleanly.
#[test]
fn every_truncation_of_the_model_file_seeds_is_refused_cleanly() {
    for name in ["gguf", "safetensors"] {
        let run = target(name);
        for seed in seeds_for(name) {
            for len in 0..seed.len() {
                run(&seed[..len]);
            }
        }
    }
}

/// Hostile request bodies the issue names, by hand.
#[test]
fn hostile_request_bodies() {
    let deep = |open: &str, close: &str, n: usize| {
        format!(
            "{{\"prompt\": {}1{}, \"messages\": {}{}}}",
            open.repeat(n),
            close.repeat(n),
            open.repeat(n),
            close.repeat(n)
        )
    };
    let cases: Vec<Vec<u8>> = vec![
        deep("[", "]", 5000).into_bytes(),
        deep("{\"a\":", "}", 5000).into_bytes(),
        "[".repeat(100_000).into_bytes(),
        b"{\"prompt\": \"\xff\xfe\", \"messages\": \"\xc3\"}".to_vec(),
        br#"{"prompt": "x", "max_tokens": 1e999}"#.to_vec(),
        br#"{"prompt": "x", "max_tokens": 99999999999999999999999999999}"#.to_vec(),
        br#"{"prompt": "x", "temperature": 1e308, "top_k": -99999999999999999999}"#.to_vec(),
        br#"{"prompt": [99999999999999999999], "seed": 1.5e19}"#.to_vec(),
        br#"{"prompt": "x", "n": 1000000, "logprobs": 1000000}"#.to_vec(),
        br#"{"messages": [{"role": "user", "content": "x"}], "n": 99, "top_logprobs": 99, "logprobs": true}"#.to_vec(),
        br#"{"prompt": "x", "stop": ["\u0000", "\ud83d\ude00"]}"#.to_vec(),
        br#"{"messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]}"#.to_vec(),
        br#"{"messages": [{"role": "user", "content": "{% for x in range(99999999) %}{{x}}{% endfor %}"}]}"#.to_vec(),
        br#"{"messages": [{"role": "assistant", "content": null, "tool_calls": [[[[]]]]}]}"#.to_vec(),
        b"\"just a string\"".to_vec(),
        b"".to_vec(),
    ];
    for body in &cases {
        harness::request_body(body, Endpoint::Completions);
        harness::request_body(body, Endpoint::Chat);
    }
}

/// (Maintenance) Rewrites `fuzz/seeds/` from the generators in the harness.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    for (name, _) in TARGETS {
        let d = dir("seeds", name);
        std::fs::create_dir_all(&d).unwrap();
        for (i, bytes) in seeds_for(name).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), bytes).unwrap();
        }
    }
}
