//! Broken model files give a clear error naming the file and tensor — never a panic.

mod common;

use common::*;
use safetensors::SafeTensors;
use std::path::Path;
use tandem::device::cpu::CpuBackend;
use tandem::model::loader::ModelSource;
use tandem::model::StepLimits;

const LIMITS: StepLimits = StepLimits {
    max_tokens: 32,
    max_seqs: 4,
};

/// A scratch copy of the tiny Llama model.
fn copy_tiny_llama() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo_root().join("tests/models/tiny-llama");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    match ModelSource::open(dir).and_then(|s| s.load_weights(&CpuBackend::new()).map(|_| ())) {
        Ok(()) => panic!("loading {} should fail", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = copy_tiny_llama();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_tiny_llama();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let gone = "model.layers.1.mlp.up_proj.weight";
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != gone)
        .collect();
    safetensors::serialize_to_file(kept, None, &path).unwrap();
    let e = load_error(dir.path());
    assert!(e.contains("missing tensor") && e.contains(gone), "{e}");
}

#[test]
fn wrong_shape_is_named() {
    let dir = copy_tiny_llama();
    edit_config(dir.path(), |c| c["intermediate_size"] = 96.into());
    let e = load_error(dir.path());
    assert!(
        e.contains("mlp.gate_proj.weight") && e.contains("[96, 64]"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = copy_tiny_llama();
    edit_config(dir.path(), |c| c["model_type"] = "gpt_neox".into());
    let e = load_error(dir.path());
    assert!(
        e.contains("unsupported architecture")
            && e.contains("gpt_neox")
            && e.contains("config.json"),
        "{e}"
    );
}

#[test]
fn missing_and_odd_paths_are_explained() {
    let e = format!(
        "{:#}",
        ModelSource::open(Path::new("/no/such/model"))
            .err()
            .unwrap()
    );
    assert!(e.contains("does not exist"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = format!("{:#}", ModelSource::open(dir.path()).err().unwrap());
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn bad_step_input_is_an_error_not_a_panic() {
    let (mut model, _) = open_model(&repo_root().join("tests/models/tiny-llama"), LIMITS);
    let mut kv = model.new_kv_cache(4, 4).unwrap();
    let vocab = model.cfg().vocab_size as u32;
    let e = model
        .forward(&one_seq_step(&[vocab], 0, &[0], 4), &mut kv)
        .err()
        .unwrap();
    assert!(e.to_string().contains("vocabulary"), "{e}");
    // A block id outside the cache.
    let e = model
        .forward(&one_seq_step(&[1, 2], 0, &[9], 4), &mut kv)
        .err()
        .unwrap();
    assert!(e.to_string().contains("outside the cache"), "{e}");
    // More tokens than the workspace holds.
    let long = vec![1u32; 40];
    let blocks: Vec<u32> = (0..10).collect();
    let e = model
        .forward(&one_seq_step(&long, 0, &blocks, 4), &mut kv)
        .err()
        .unwrap();
    assert!(e.to_string().contains("max_tokens"), "{e}");
    // A position past the model's context.
    let ctx = model.cfg().max_position_embeddings;
    let far: Vec<u32> = (0..(ctx / 4 + 1) as u32).map(|b| b % 4).collect();
    let e = model
        .forward(&one_seq_step(&[1], ctx, &far, 4), &mut kv)
        .err()
        .unwrap();
    assert!(e.to_string().contains("context"), "{e}");
}
