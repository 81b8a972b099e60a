//! The CPU forward pass against transformers, token for token, on every committed fixture:
//! alone, all together in one flat batch over scattered blocks, and prefilled in chunks.

mod common;

use common::*;
use tandem::model::StepLimits;

const LIMITS: StepLimits = StepLimits {
    max_tokens: 256,
    max_seqs: 16,
};

/// Each case alone: prefill its prompt, then decode the fixture's tokens one at a time.
fn each_case_alone(name: &str) {
    let f = load_fixture(name);
    let Some(path) = model_path(&f) else { return };
    let (model, _) = open_model(&path, LIMITS);
    check_each_case_alone(model, &f, name);
}

/// All cases in one flat batch over scrambled blocks (see `check_all_cases_batched`).
fn all_cases_batched(name: &str) {
    let f = load_fixture(name);
    let Some(path) = model_path(&f) else { return };
    let (model, _) = open_model(&path, LIMITS);
    check_all_cases_batched(model, &f, name);
}

/// The prompt's last logits are the same prefilled at once, in chunks of 3, and token by token;
/// on the first case and on the one with the longest prompt (longer than tiny-mistral-swa's
/// window, so chunks there straddle its first cut).
fn prefill_chunking_is_invisible(name: &str) {
    let f = load_fixture(name);
    let Some(path) = model_path(&f) else { return };
    let (model, _) = open_model(&path, LIMITS);
    let mut driver = Driver::new(model, 64, 8, scattered(64));
    let longest = f
        .cases
        .iter()
        .max_by_key(|c| c.prompt_ids.len())
        .expect("the fixture has cases");
    let mut cases = vec![&f.cases[0]];
    if !std::ptr::eq(longest, cases[0]) {
        cases.push(longest);
    }
    for case in cases {
        let n = case.prompt_ids.len();
        let mut last = Vec::new();
        for chunk in [n, 3, 1] {
            let mut seqs = vec![Seq {
                tokens: case.prompt_ids.clone(),
                cached: 0,
                blocks: vec![],
            }];
            let mut logits = Vec::new();
            while seqs[0].cached < n {
                let k = chunk.min(n - seqs[0].cached);
                logits = driver.step(&mut seqs, &[k]).remove(0);
            }
            check_step(&format!("{name} chunks of {chunk}"), &logits, case, 0);
            if !last.is_empty() {
                let diff = logits
                    .iter()
                    .zip(&last)
                    .map(|(a, b): (&f32, &f32)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    diff <= 1e-4,
                    "{name}: chunks of {chunk} differ from a whole prefill by {diff}"
                );
            }
            last = logits;
            driver = Driver::new(driver.model, 64, 8, scattered(64));
        }
    }
}

/// The tokenizer encodes each prompt and the tokenizer cases as transformers' does.
fn tokenizer_agrees(name: &str) {
    let f = load_fixture(name);
    let Some(path) = model_path(&f) else { return };
    let tok = tandem::model::loader::ModelSource::open(&path)
        .unwrap()
        .tokenizer;
    for case in &f.cases {
        let ids = tok.encode(&case.prompt, case.add_special_tokens).unwrap();
        assert_eq!(ids, case.prompt_ids, "{name}: encoding {:?}", case.prompt);
    }
    for case in &f.tokenizer_cases {
        assert_eq!(
            tok.encode(&case.text, true).unwrap(),
            case.ids,
            "{name}: encoding {:?}",
            case.text
        );
        // transformers' decode keeps special tokens by default.
        assert_eq!(
            tok.decode(&case.ids, false).unwrap(),
            case.decoded,
            "{name}: decoding {:?}",
            case.ids
        );
    }
}

/// The sliding-window model (its window shorter than every case) with each prompt prefilled in
/// chunks shorter than the window, one longer, and a token a step, then decoded past the
/// window: every step against transformers.
#[test]
fn sliding_window_chunked_prefill_then_decode() {
    let name = "tiny-mistral-swa";
    let f = load_fixture(name);
    let Some(path) = model_path(&f) else { return };
    let (mut model, _) = open_model(&path, LIMITS);
    let window = model
        .cfg()
        .sliding_window
        .expect("tiny-mistral-swa has a sliding window");
    // The fixture means something only if the window cuts: in decode for every case, and in
    // the prefill of some but not all.
    let prompt_lens: Vec<usize> = f.cases.iter().map(|c| c.prompt_ids.len()).collect();
    assert!(
        f.cases
            .iter()
            .all(|c| c.prompt_ids.len() + c.generated_ids.len() > window + 1),
        "{name}: a case stays within the window of {window}"
    );
    assert!(
        prompt_lens.iter().any(|&n| n > window) && prompt_lens.iter().any(|&n| n <= window),
        "{name}: prompt lengths {prompt_lens:?} against the window of {window}"
    );
    for chunk in [1, window - 2, window + 1] {
        for case in &f.cases {
            model = check_case_chunked(model, case, chunk, 4, name);
        }
    }
}

macro_rules! fixture_tests {
    ($($module:ident => $name:literal),* $(,)?) => {
        $(mod $module {
            #[test] fn each_case_alone() { super::each_case_alone($name) }
            #[test] fn all_cases_batched() { super::all_cases_batched($name) }
            #[test] fn prefill_chunking_is_invisible() { super::prefill_chunking_is_invisible($name) }
            #[test] fn tokenizer_agrees() { super::tokenizer_agrees($name) }
        })*

        #[test]
        fn every_fixture_file_is_tested() {
            let tested = [$($name),*];
            for name in fixture_names() {
                assert!(tested.contains(&name.as_str()), "tests/fixtures/{name}.json has no tests");
            }
        }
    };
}

fixture_tests! {
    tiny_llama => "tiny-llama",
    tiny_mistral => "tiny-mistral",
    tiny_mistral_swa => "tiny-mistral-swa",
    tiny_qwen2 => "tiny-qwen2",
    tiny_qwen3 => "tiny-qwen3",
    smollm2 => "smollm2-135m-instruct",
}
