//! The fuzz targets' bodies, shared by the libFuzzer targets (`fuzz/fuzz_targets/`, run with
//! `cargo fuzz`) and by the stable test suite (`tests/fuzz_regressions.rs` includes this file),
//! which replays seeds, saved crashes and deterministic mutations through the same code.
//!
//! Each function takes arbitrary bytes and must return without panicking, hanging or allocating
//! without bound; where the input is accepted, it also checks the result's invariants (asserts).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{json, Value};

use tandem::device::quant::GgmlType;
use tandem::model::chat_template::{ChatTemplate, TemplateError};
use tandem::model::config::ModelConfig;
use tandem::model::detokenizer::{IncrementalDetokenizer, StopMatcher};
use tandem::model::gguf::{GgufFile, GgufValue};
use tandem::model::gguf_writer::GgufWriter;
use tandem::model::safetensors_dir::tensors_from_bytes;
use tandem::model::tokenizer::Tokenizer;
use tandem::server::error::ApiError;
use tandem::server::messages::parse_messages;
use tandem::server::validate::{
    check_context, validate, Endpoint, Input, Limits, Prompt, MAX_LOGPROBS, MAX_N, MAX_STOP,
    MAX_STOP_BYTES, MAX_STOP_TOKEN_IDS,
};

/// The repository root (this file is compiled from `fuzz/` and from the root package).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if here.join("tests/models").is_dir() {
        here
    } else {
        here.parent().map(PathBuf::from).unwrap_or(here)
    }
}

/// The tiny test model's byte-level BPE tokenizer (512 tokens, 4 of them special).
pub fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        Tokenizer::from_hf_dir(&repo_root().join("tests/models/tiny-llama"))
            .expect("the tiny tokenizer loads")
    })
}

const VOCAB: usize = 512;
const MAX_CONTEXT: usize = 256;

/// An HF-style template using what real ones use (namespace, raise_exception, string methods,
/// loop variables, tojson, system-prompt handling), for hostile contents to go through.
const HF_TEMPLATE: &str = "{{ bos_token }}{% set ns = namespace(sys='') %}\
{% if messages[0]['role'] == 'system' %}{% set ns.sys = messages[0]['content'] | trim %}{% endif %}\
{% for m in messages %}\
{% if m['role'] not in ['system', 'user', 'assistant', 'tool', 'function'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}\
{% if loop.first and ns.sys %}<<SYS>>{{ ns.sys }}<</SYS>>\n{% endif %}\
{% if m['role'] == 'assistant' %}{% if m['content'] is none %}{{ m | tojson }}{% else %}{{ m['content'].strip() }}{% endif %}{{ eos_token }}\
{% elif m['role'] != 'system' %}[{{ m['role'].upper() }}] {{ m['content'] }}\n{% endif %}\
{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}";

/// The tiny models' ChatML template (as shipped in `tests/models/*/tokenizer_config.json`) and
/// [`HF_TEMPLATE`].
pub fn templates() -> &'static [ChatTemplate] {
    static T: OnceLock<Vec<ChatTemplate>> = OnceLock::new();
    T.get_or_init(|| {
        let tok = tokenizer();
        let chatml = tok
            .chat_template
            .as_deref()
            .expect("the tiny model has a template");
        vec![
            ChatTemplate::new(chatml, "<s>", "</s>").expect("ChatML compiles"),
            ChatTemplate::new(HF_TEMPLATE, "<s>", "</s>").expect("the HF template compiles"),
        ]
    })
}

// --- request bodies ---

/// `/v1/completions` or `/v1/chat/completions` body validation, then what the server does next
/// with an accepted request that needs no engine: the context check, template and tokenizer.
pub fn request_body(data: &[u8], endpoint: Endpoint) {
    let limits = Limits { vocab_size: VOCAB };
    let v = match validate(data, endpoint, limits) {
        Ok(v) => v,
        Err(e) => {
            // Every refusal renders as OpenAI's envelope.
            let json: Value = serde_json::from_str(&ApiError::from(e).to_json()).unwrap();
            for k in ["message", "type", "param", "code"] {
                assert!(json["error"].get(k).is_some(), "{json}");
            }
            return;
        }
    };
    assert_eq!(v.endpoint, endpoint);
    assert!((1..=MAX_N).contains(&v.n), "n {}", v.n);
    let p = &v.params;
    assert!(p.logprobs.is_none_or(|k| k <= MAX_LOGPROBS));
    assert!(p.temperature >= 0.0 && p.temperature.is_finite());
    assert!(p.top_p > 0.0 && p.top_p <= 1.0);
    assert!((0.0..=1.0).contains(&p.min_p));
    assert!(p.stop.len() <= MAX_STOP);
    assert!(p
        .stop
        .iter()
        .all(|s| !s.is_empty() && s.len() <= MAX_STOP_BYTES));
    assert!(p.stop_token_ids.len() <= MAX_STOP_TOKEN_IDS);
    assert!(p.stop_token_ids.iter().all(|&t| (t as usize) < VOCAB));
    assert!(v.max_tokens.is_none_or(|m| m >= 1));
    let ids = match &v.input {
        Input::Prompt(Prompt::Ids(ids)) => {
            assert!(!ids.is_empty() && ids.iter().all(|&t| (t as usize) < VOCAB));
            ids.clone()
        }
        Input::Prompt(Prompt::Text(text)) => {
            assert!(!text.is_empty());
            tokenizer().encode(text, true).unwrap_or_default()
        }
        Input::Messages(messages) => {
            let mut ids = Vec::new();
            let tools = v.tools.as_ref().map(|t| t.template_tools());
            for t in templates() {
                if let Ok(text) = t.render_with(
                    messages,
                    v.template.add_generation_prompt,
                    tools.as_deref(),
                    &v.template.kwargs,
                ) {
                    ids = tokenizer().encode(&text, false).unwrap_or_default();
                }
            }
            ids
        }
    };
    let _ = check_context(ids.len(), v.max_tokens.unwrap_or(16), MAX_CONTEXT, endpoint);
}

// --- chat templates ---

/// Messages built from arbitrary bytes (contents with template syntax, control characters,
/// invalid UTF-8 made lossy, odd roles and shapes) rendered by real templates. ChatML must
/// reproduce every content verbatim: contents are data, never template source.
pub fn chat_template(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    const ROLES: [&str; 8] = [
        "system",
        "user",
        "assistant",
        "tool",
        "developer",
        "function",
        "wizard",
        "",
    ];
    let mut raw = Vec::new();
    for (i, field) in rest.split(|&b| b == 0xff).take(64).enumerate() {
        let text = String::from_utf8_lossy(field).into_owned();
        let role = ROLES[(shape as usize + i) % ROLES.len()];
        let content = match (shape >> 3) % 4 {
            0 | 1 => json!(text),
            2 => json!([{"type": "text", "text": text}, {"type": "text", "text": "x"}]),
            _ if role == "assistant" => Value::Null,
            _ => json!(text),
        };
        let mut m = json!({"role": role, "content": content});
        if shape & 0x40 != 0 {
            m["name"] = json!(text);
        }
        raw.push(m);
    }
    let Ok(messages) = parse_messages(&Value::Array(raw)) else {
        return;
    };
    let add_generation_prompt = shape & 0x80 != 0;
    let [chatml, hf] = templates() else {
        unreachable!()
    };
    let all_text = messages.iter().all(|m| m["content"].is_string());
    let rendered = match chatml.render(&messages, add_generation_prompt) {
        Ok(text) => text,
        // ChatML concatenates `content`: a null one (an assistant turn with tool calls only)
        // cannot render, and must say so rather than panic.
        Err(TemplateError::Failed(_)) if !all_text => return,
        Err(e) => panic!("ChatML failed on text messages: {e}"),
    };
    let mut want = String::new();
    for m in &messages {
        let content = m["content"].as_str().unwrap_or("none");
        want += &format!(
            "<|im_start|>{}\n{content}<|im_end|>\n",
            m["role"].as_str().unwrap()
        );
    }
    if add_generation_prompt {
        want += "<|im_start|>assistant\n";
    }
    if all_text {
        assert_eq!(rendered, want);
    }
    tokenizer().encode(&rendered, false).unwrap();
    match hf.render(&messages, add_generation_prompt) {
        Ok(text) => {
            tokenizer().encode(&text, false).unwrap();
        }
        Err(TemplateError::Rejected(_) | TemplateError::OutOfFuel) => {}
        Err(e @ TemplateError::Failed(_)) => {
            // Runtime errors are allowed (e.g. `.strip()` of something odd) but must not be
            // about the content having been parsed as template source.
            assert!(!e.to_string().contains("syntax error"), "{e}");
        }
    }
}

// --- GGUF ---

/// The GGUF reader on untrusted bytes: header, metadata accessors, tensors (dequantised), then
/// what loading a model reads from it (config, tokenizer).
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") else {
        return;
    };
    for (key, value) in file.metadata() {
        let _ = (
            value.as_u64(),
            value.as_i64(),
            value.as_f32(),
            value.type_name(),
        );
        let _ = file.require_str(key);
    }
    for t in file.tensors() {
        // Bounded: the data must lie inside the input, but F32 output could still be 8x larger.
        if t.n_elements() <= 1 << 20 {
            if let Ok((values, shape)) = file.tensor_f32(&t.name) {
                assert_eq!(values.len(), shape.iter().product::<usize>());
            }
        }
    }
    if let Ok(cfg) = ModelConfig::from_gguf(&file) {
        cfg.validate().expect("from_gguf returns validated configs");
    }
    if let Ok(tok) = Tokenizer::from_gguf(&file) {
        if let Ok(ids) = tok.encode("Hello wörld 😀 <s>", true) {
            let _ = tok.decode(&ids, true);
        }
    }
}

fn gguf_strings(items: &[String]) -> GgufValue {
    GgufValue::Array(items.iter().map(|s| GgufValue::String(s.clone())).collect())
}

/// Small valid GGUF files: one of every metadata and tensor type, and a llama header with a
/// byte-level vocabulary (so config and tokenizer parsing get past their first checks).
pub fn gguf_seeds() -> Vec<Vec<u8>> {
    let ramp = |n: usize| -> Vec<f32> { (0..n).map(|i| (i % 13) as f32 - 6.0).collect() };
    let mut a = GgufWriter::new();
    a.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("u8", GgufValue::U8(7))
        .metadata("i8", GgufValue::I8(-7))
        .metadata("u16", GgufValue::U16(700))
        .metadata("i16", GgufValue::I16(-700))
        .metadata("i32", GgufValue::I32(-70_000))
        .metadata("f32", GgufValue::F32(0.5))
        .metadata("bool", GgufValue::Bool(true))
        .metadata("u64", GgufValue::U64(1 << 40))
        .metadata("i64", GgufValue::I64(-1))
        .metadata("f64", GgufValue::F64(0.25))
        .metadata("s", gguf_strings(&["a".into(), "é".into()]))
        .metadata(
            "nested",
            GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::U8(1)])]),
        );
    for (name, dims, ty) in [
        ("f32", vec![4u64, 2], GgmlType::F32),
        ("f16", vec![4], GgmlType::F16),
        ("bf16", vec![2, 2], GgmlType::BF16),
        ("q8", vec![32, 2], GgmlType::Q8_0),
        ("q4_0", vec![32], GgmlType::Q4_0),
        ("q4_1", vec![32], GgmlType::Q4_1),
    ] {
        let n = dims.iter().product::<u64>() as usize;
        a.tensor(name, &dims, ty, &ramp(n)).unwrap();
    }

    let mut bytes: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    bytes.sort_unstable();
    let tokens: Vec<String> = ["<s>", "</s>"]
        .iter()
        .map(|s| s.to_string())
        .chain(bytes.iter().map(char::to_string))
        .chain(["he", "ll", "hell", "hello"].iter().map(|s| s.to_string()))
        .collect();
    let mut types = vec![GgufValue::I32(1); tokens.len()];
    types[0] = GgufValue::I32(3);
    types[1] = GgufValue::I32(3);
    let mut b = GgufWriter::new();
    b.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("llama.context_length", GgufValue::U32(64))
        .metadata("llama.embedding_length", GgufValue::U32(8))
        .metadata("llama.feed_forward_length", GgufValue::U32(16))
        .metadata("llama.block_count", GgufValue::U32(1))
        .metadata("llama.attention.head_count", GgufValue::U32(2))
        .metadata("llama.attention.head_count_kv", GgufValue::U32(1))
        .metadata("llama.rope.freq_base", GgufValue::F32(10000.0))
        .metadata(
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(1e-5),
        )
        .metadata("tokenizer.ggml.model", GgufValue::String("gpt2".into()))
        .metadata("tokenizer.ggml.pre", GgufValue::String("smollm".into()))
        .metadata("tokenizer.ggml.tokens", gguf_strings(&tokens))
        .metadata(
            "tokenizer.ggml.merges",
            gguf_strings(&["h e".into(), "l l".into(), "he ll".into(), "hell o".into()]),
        )
        .metadata("tokenizer.ggml.token_type", GgufValue::Array(types))
        .metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(0))
        .metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(1))
        .metadata(
            "tokenizer.chat_template",
            GgufValue::String("{{ messages }}".into()),
        );
    b.tensor("token_embd.weight", &[8, 4], GgmlType::F16, &ramp(32))
        .unwrap();
    vec![a.to_bytes(), b.to_bytes()]
}

// --- safetensors ---

/// The safetensors reader on untrusted bytes: header checks, then every tensor converted.
pub fn safetensors(data: &[u8]) {
    if let Ok(tensors) = tensors_from_bytes(data) {
        for (_, t) in tensors {
            assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        }
    }
}

/// Small valid safetensors files (F32, F16, BF16; a scalar and an empty tensor).
pub fn safetensors_seeds() -> Vec<Vec<u8>> {
    fn file(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let start = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                name.to_string(),
                json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let mut h = Value::Object(header).to_string().into_bytes();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        out
    }
    let f32s: Vec<u8> = (0..6)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let halfs: Vec<u8> = (0..4).flat_map(|i| [i as u8, 0x3c]).collect();
    vec![
        file(&[("w", "F32", vec![2, 3], f32s.clone())]),
        file(&[
            ("a", "F16", vec![4], halfs.clone()),
            ("b", "BF16", vec![2, 2], halfs),
            ("s", "F32", vec![], f32s[..4].to_vec()),
            ("e", "F32", vec![0, 3], vec![]),
        ]),
    ]
}

// --- detokenization ---

/// Token ids from bytes: little-endian u16 pairs, mostly inside the 512-token vocabulary (with
/// its special tokens), some just outside; a 0xffff pair is `u32::MAX`.
pub fn ids_of(data: &[u8]) -> Vec<u32> {
    data.chunks_exact(2)
        .map(|c| match u16::from_le_bytes([c[0], c[1]]) {
            0xffff => u32::MAX,
            v => u32::from(v) % 530,
        })
        .collect()
}

/// Incremental detokenization of an arbitrary token sequence: the deltas add up to the one-shot
/// decode and never end inside a character; with a prompt context, nothing panics and no delta
/// ends in U+FFFD. Then stop strings cut the stream as a naive scan says.
pub fn detokenize(data: &[u8]) {
    let Some((&ctrl, rest)) = data.split_first() else {
        return;
    };
    let tok = tokenizer();
    // Stop strings come from the front of the input, the ids from the rest.
    let n_stop_bytes = (ctrl as usize % 8).min(rest.len());
    let (stop_bytes, rest) = rest.split_at(n_stop_bytes);
    let ids = ids_of(rest);
    let n_context = (ctrl as usize >> 3) % 8;
    let (context, generated) = ids.split_at(n_context.min(ids.len()));

    let mut d = IncrementalDetokenizer::new(&[]);
    let mut deltas = Vec::new();
    for &id in &ids {
        let delta = d.push(tok, id).expect("decoding never fails on ids");
        assert!(!delta.ends_with('\u{FFFD}'), "{delta:?} for {ids:?}");
        deltas.push(delta);
    }
    let whole = tok.decode(&ids, true).unwrap();
    assert_eq!(deltas.concat() + &d.flush(tok).unwrap(), whole, "{ids:?}");

    let mut d = IncrementalDetokenizer::new(context);
    for &id in generated {
        let delta = d.push(tok, id).unwrap();
        assert!(!delta.ends_with('\u{FFFD}'), "{delta:?}");
    }
    d.flush(tok).unwrap();

    // Stop strings: up to two, cut from the lossy text of the stop bytes.
    let stop_text = String::from_utf8_lossy(stop_bytes);
    let mid = stop_text
        .char_indices()
        .map(|(i, _)| i)
        .nth(stop_text.chars().count() / 2)
        .unwrap_or(stop_text.len());
    let stops: Vec<String> = [&stop_text[..mid], &stop_text[mid..]]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
        .collect();
    stop_strings(&stops, &deltas);
}

/// Feeds `deltas` to a [`StopMatcher`] and checks it against a naive scan.
pub fn stop_strings(stops: &[String], deltas: &[String]) {
    let mut want = (deltas.concat(), false);
    let mut so_far = String::new();
    for d in deltas {
        so_far += d;
        if let Some(start) = stops.iter().filter_map(|s| so_far.find(s.as_str())).min() {
            want = (so_far[..start].to_string(), true);
            break;
        }
    }
    let longest = stops.iter().map(String::len).max().unwrap_or(0);
    let mut m = StopMatcher::new(stops);
    let (mut out, mut fed, mut stopped) = (String::new(), 0, false);
    for d in deltas {
        let (text, hit) = m.push(d);
        out += &text;
        fed += d.len();
        if hit {
            stopped = true;
            break;
        }
        assert!(fed - out.len() < longest.max(1), "held back too much");
    }
    out += &m.flush();
    assert_eq!((out, stopped), want, "stops {stops:?}, deltas {deltas:?}");
}

/// Seeds for the detokenizer: real text's ids (multi-byte characters, specials in between).
pub fn detokenize_seeds() -> Vec<Vec<u8>> {
    let tok = tokenizer();
    ["Hello world", "héllo 😀 日本語", "a\n\tb <|im_end|> c"]
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut out = vec![(i * 9) as u8 + 2, b'o', b' '];
            for id in tok.encode(text, false).unwrap() {
                out.extend_from_slice(&(id as u16).to_le_bytes());
            }
            out
        })
        .collect()
}

/// Seeds for the request bodies: valid requests using every field, for either endpoint.
pub fn request_seeds(endpoint: Endpoint) -> Vec<Vec<u8>> {
    let common = json!({
        "model": "tiny-llama", "max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "top_k": 5,
        "min_p": 0.1, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "repetition_penalty": 1.1, "seed": -3, "stop": ["\n", "END"], "stop_token_ids": [2],
        "ignore_eos": true, "n": 2, "stream": true, "stream_options": {"include_usage": true},
        "priority": 1
    });
    let mut a = common.clone();
    let mut b = json!({"max_tokens": null, "stop": "x"});
    match endpoint {
        Endpoint::Completions => {
            a["prompt"] = json!("Once upon a time");
            a["logprobs"] = json!(3);
            b["prompt"] = json!([[1, 2, 3]]);
        }
        Endpoint::Chat => {
            a["messages"] = json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi {{ x }}"}]},
                {"role": "assistant", "content": null, "tool_calls": []},
                {"role": "user", "content": "ok"}
            ]);
            a["logprobs"] = json!(true);
            a["top_logprobs"] = json!(2);
            a["max_completion_tokens"] = json!(4);
            b["messages"] = json!([{"role": "user", "content": "Hi"}]);
        }
    }
    vec![a.to_string().into_bytes(), b.to_string().into_bytes()]
}

/// Seeds for the chat-template target.
pub fn chat_template_seeds() -> Vec<Vec<u8>> {
    let mut a = vec![1u8];
    a.extend_from_slice(b"{{ raise_exception('x') }}\xff{% for i in range(10**9) %}\xff<|im_end|>");
    let mut b = vec![0x93u8];
    b.extend_from_slice("héllo 😀".as_bytes());
    b.extend_from_slice(b"\xff\x00\x7f\xc3");
    vec![a, b]
}
