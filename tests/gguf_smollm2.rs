//! The GGUF reader, dequantiser and tokenizer on the real default model, SmolLM2-135M-Instruct
//! (Q4_1). Skipped, with a message, when the model is not installed under `$TANDEM_HOME`.

use std::collections::BTreeSet;

use tandem::device::quant::GgmlType;
use tandem::model::default_model::default_model_path;
use tandem::model::gguf::GgufFile;
use tandem::model::gguf_tokenizer::{gguf_tokenizer_info, tokenizer_from_gguf};

fn open_default() -> Option<GgufFile> {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("skipped: default model not found at {}", path.display());
        return None;
    }
    Some(GgufFile::open(&path).unwrap())
}

#[test]
fn smollm2_metadata() {
    let Some(g) = open_default() else { return };
    assert_eq!(g.version(), 3);
    assert_eq!(g.get_str("general.architecture"), Some("llama"));
    for (key, want) in [
        ("llama.block_count", 30),
        ("llama.embedding_length", 576),
        ("llama.feed_forward_length", 1536),
        ("llama.attention.head_count", 9),
        ("llama.attention.head_count_kv", 3),
        ("llama.vocab_size", 49152),
        ("llama.context_length", 8192),
        ("llama.rope.dimension_count", 64),
    ] {
        assert_eq!(g.require_u64(key).unwrap(), want, "{key}");
    }
    assert_eq!(g.get_f32("llama.rope.freq_base"), Some(100000.0));
    let eps = g
        .require_f32("llama.attention.layer_norm_rms_epsilon")
        .unwrap();
    assert!((eps - 1e-5).abs() < 1e-9, "{eps}");
    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(g.get_str("tokenizer.ggml.pre"), Some("smollm"));
    assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(false));
    assert_eq!(
        g.get_array("tokenizer.ggml.tokens").map(<[_]>::len),
        Some(49152)
    );
    let info = gguf_tokenizer_info(&g);
    assert_eq!((info.bos, info.eos), (Some(1), Some(2)));
    assert!(info.chat_template.unwrap().contains("<|im_start|>"));
}

#[test]
fn smollm2_tensors() {
    let Some(g) = open_default() else { return };
    assert_eq!(g.tensors().len(), 272);
    assert!(
        g.tensor_info("output.weight").is_none(),
        "embeddings are tied"
    );
    let embd = g.tensor_info("token_embd.weight").unwrap();
    assert_eq!(
        (embd.shape(), embd.dtype),
        (vec![49152, 576], GgmlType::Q8_0)
    );
    let q = g.tensor_info("blk.0.attn_q.weight").unwrap();
    assert_eq!((q.shape(), q.dtype), (vec![576, 576], GgmlType::Q4_1));
    assert_eq!(
        g.tensor_info("blk.29.attn_k.weight").unwrap().shape(),
        [192, 576]
    );
    let types: BTreeSet<_> = g
        .tensors()
        .iter()
        .map(|t| format!("{:?}", t.dtype))
        .collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["F32", "Q4_1", "Q8_0"]
    );
}

#[test]
fn smollm2_every_tensor_dequantizes_to_finite_values() {
    let Some(g) = open_default() else { return };
    for t in g.tensors() {
        let (data, shape) = g.tensor_f32(&t.name).unwrap();
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{}", t.name);
        let (lo, hi) = data
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        assert!(data.iter().all(|v| v.is_finite()), "{}", t.name);
        assert!(
            lo > -100.0 && hi < 100.0 && hi > lo,
            "{}: range {lo}..{hi}",
            t.name
        );
    }
    // RMSNorm weights are stored unquantised and hover around 1.
    let (norm, _) = g.tensor_f32("output_norm.weight").unwrap();
    let mean = norm.iter().sum::<f32>() / norm.len() as f32;
    assert!(mean > 0.1 && mean < 10.0, "{mean}");
}

#[test]
fn smollm2_tokenizer_matches_hf_ids() {
    let Some(g) = open_default() else { return };
    let tk = tokenizer_from_gguf(&g).unwrap();
    // Reference ids from the HF tokenizer of SmolLM2 (no BOS is added for this model).
    for (text, want) in [
        ("The capital of France is", &[504, 3575, 282, 4649, 314][..]),
        ("Once upon a time", &[6403, 1980, 253, 655]),
        (
            "In 2026, the weather",
            &[788, 216, 34, 32, 34, 38, 28, 260, 3947],
        ),
        (
            "def add(a, b): return",
            &[1604, 803, 24, 81, 28, 278, 727, 1003],
        ),
    ] {
        let ids = tk.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(ids, want, "{text}");
        assert_eq!(tk.decode(&ids, true).unwrap(), text);
    }
}

#[test]
fn smollm2_tokenizer_round_trips_unicode_and_specials() {
    let Some(g) = open_default() else { return };
    let tk = tokenizer_from_gguf(&g).unwrap();
    let text = "12345 héllo 🙂";
    let enc = tk.encode(text, true).unwrap();
    assert_eq!(enc.get_tokens()[..5], ["1", "2", "3", "4", "5"]);
    assert_eq!(tk.decode(enc.get_ids(), true).unwrap(), text);
    let chat = "<|im_start|>user\nhi<|im_end|>\n";
    let ids = tk.encode(chat, true).unwrap().get_ids().to_vec();
    assert_eq!((ids[0], ids[ids.len() - 2]), (1, 2), "{ids:?}");
    assert_eq!(tk.decode(&ids, false).unwrap(), chat);
    assert_eq!(tk.decode(&ids, true).unwrap(), "user\nhi\n");
}
