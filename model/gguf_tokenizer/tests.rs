//! Tokenizer construction tests on a tiny synthetic byte-level vocabulary.

use super::*;
use crate::model::gguf_writer::GgufWriter;

const SPECIAL: [&str; 3] = ["<s>", "</s>", "<tool>"];
const MERGED: [&str; 6] = ["he", "ll", "hell", "hello", "Ġw", "12"];
const MERGES: [&str; 6] = ["h e", "l l", "he ll", "hell o", "Ġ w", "1 2"];

fn strings<S: AsRef<str>>(items: &[S]) -> GgufValue {
    GgufValue::Array(
        (items.iter())
            .map(|s| GgufValue::String(s.as_ref().to_owned()))
            .collect(),
    )
}

/// Tokens: `<s>` (control), `</s>` (control), `<tool>` (user-defined), the 256 byte symbols,
/// then the merged tokens.
fn vocab() -> Vec<String> {
    let mut bytes: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    bytes.sort_unstable();
    (SPECIAL.iter().map(|s| s.to_string()))
        .chain(bytes.iter().map(char::to_string))
        .chain(MERGED.iter().map(|s| s.to_string()))
        .collect()
}

fn writer(model: &str, pre: Option<&str>, add_bos: bool) -> GgufWriter {
    let tokens = vocab();
    let mut types = vec![GgufValue::I32(1); tokens.len()];
    types[0] = GgufValue::I32(3);
    types[1] = GgufValue::I32(3);
    types[2] = GgufValue::I32(4);
    let mut w = GgufWriter::new();
    w.metadata("tokenizer.ggml.model", GgufValue::String(model.into()))
        .metadata("tokenizer.ggml.tokens", strings(&tokens))
        .metadata("tokenizer.ggml.merges", strings(&MERGES))
        .metadata("tokenizer.ggml.token_type", GgufValue::Array(types))
        .metadata("tokenizer.ggml.add_bos_token", GgufValue::Bool(add_bos))
        .metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(0))
        .metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(1))
        .metadata("tokenizer.chat_template", GgufValue::String("{{x}}".into()));
    if let Some(pre) = pre {
        w.metadata("tokenizer.ggml.pre", GgufValue::String(pre.into()));
    }
    w
}

fn load(w: &GgufWriter) -> Result<Tokenizer> {
    tokenizer_from_gguf(&GgufFile::from_bytes(w.to_bytes(), "tok.gguf")?)
}

fn pieces(tk: &Tokenizer, text: &str) -> Vec<String> {
    tk.encode(text, true).unwrap().get_tokens().to_vec()
}

#[test]
fn bpe_merges_apply() {
    let tk = load(&writer("gpt2", Some("smollm"), false)).unwrap();
    assert_eq!(
        pieces(&tk, "hello world"),
        ["hello", "Ġw", "o", "r", "l", "d"]
    );
    let ids = tk.encode("hello world", true).unwrap().get_ids().to_vec();
    assert_eq!(
        ids[0] as usize,
        vocab().iter().position(|t| t == "hello").unwrap()
    );
    assert_eq!(tk.decode(&ids, true).unwrap(), "hello world");
}

#[test]
fn pre_tokenizer_follows_tokenizer_ggml_pre() {
    let smollm = load(&writer("gpt2", Some("smollm"), false)).unwrap();
    assert_eq!(
        pieces(&smollm, "12"),
        ["1", "2"],
        "digits split individually"
    );
    for pre in [None, Some("gpt2"), Some("llama-bpe")] {
        let tk = load(&writer("gpt2", pre, false)).unwrap();
        assert_eq!(pieces(&tk, "12"), ["12"], "{pre:?}");
        let text = "héllo 12 wörld\n\n🙂!";
        let ids = tk.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tk.decode(&ids, false).unwrap(), text, "{pre:?}");
    }
}

#[test]
fn special_and_added_tokens() {
    let tk = load(&writer("gpt2", Some("smollm"), false)).unwrap();
    let ids = tk
        .encode("<s>hello<tool></s>", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids.len(), 4);
    assert_eq!((ids[0], ids[2], ids[3]), (0, 2, 1));
    assert_eq!(tk.decode(&ids, true).unwrap(), "hello<tool>");
    assert_eq!(tk.decode(&ids, false).unwrap(), "<s>hello<tool></s>");
}

#[test]
fn bos_only_when_requested() {
    let with = load(&writer("gpt2", None, true)).unwrap();
    assert_eq!(with.encode("he", true).unwrap().get_tokens(), ["<s>", "he"]);
    let without = load(&writer("gpt2", None, false)).unwrap();
    assert_eq!(without.encode("he", true).unwrap().get_tokens(), ["he"]);
}

#[test]
fn info_reads_ids_and_template() {
    let g = GgufFile::from_bytes(writer("gpt2", None, false).to_bytes(), "t").unwrap();
    let info = gguf_tokenizer_info(&g);
    assert_eq!((info.bos, info.eos), (Some(0), Some(1)));
    assert_eq!(info.chat_template.as_deref(), Some("{{x}}"));
    let empty = GgufFile::from_bytes(GgufWriter::new().to_bytes(), "t").unwrap();
    assert_eq!(gguf_tokenizer_info(&empty), GgufTokenizerInfo::default());
}

#[test]
fn unsupported_inputs_are_named() {
    let e = format!("{:#}", load(&writer("llama", None, false)).unwrap_err());
    assert!(e.contains("'llama'") && e.contains("tok.gguf"), "{e}");
    let e = format!(
        "{:#}",
        load(&writer("gpt2", Some("qwen9"), false)).unwrap_err()
    );
    assert!(e.contains("'qwen9'"), "{e}");
    let e = format!("{:#}", load(&GgufWriter::new()).unwrap_err());
    assert!(e.contains("tokenizer.ggml.model"), "{e}");
}

#[test]
fn merge_rules_split_after_the_first_char() {
    assert_eq!(split_merge("a b").unwrap(), ("a".into(), "b".into()));
    assert_eq!(split_merge("  x").unwrap(), (" ".into(), "x".into()));
    assert_eq!(split_merge("é bc").unwrap(), ("é".into(), "bc".into()));
    assert!(split_merge("abc").is_err());
    assert!(split_merge("").is_err());
}
