//! Reader tests against files built by [`GgufWriter`], plus hostile-input cases.

use super::*;
use crate::model::gguf_writer::GgufWriter;

fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7 % 23) as f32 - 11.0) / 4.0).collect()
}

/// A small file exercising every metadata type and every supported tensor type.
fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("u8", GgufValue::U8(200))
        .metadata("i8", GgufValue::I8(-5))
        .metadata("u16", GgufValue::U16(60000))
        .metadata("i16", GgufValue::I16(-300))
        .metadata("llama.block_count", GgufValue::U32(30))
        .metadata("i32", GgufValue::I32(-7))
        .metadata("eps", GgufValue::F32(1e-5))
        .metadata("flag", GgufValue::Bool(true))
        .metadata("u64", GgufValue::U64(1 << 40))
        .metadata("i64", GgufValue::I64(-1))
        .metadata("f64", GgufValue::F64(0.25))
        .metadata("words", strings(&["a", "héllo", ""]))
        .metadata(
            "ints",
            GgufValue::Array(vec![GgufValue::I32(3), GgufValue::I32(-4)]),
        )
        .metadata(
            "nested",
            GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::U8(1)])]),
        );
    let t = |w: &mut GgufWriter, name, dims: &[u64], ty| {
        let n = dims.iter().product::<u64>() as usize;
        w.tensor(name, dims, ty, &ramp(n)).map(|_| ()).unwrap();
    };
    t(&mut w, "f32", &[3, 2], GgmlType::F32);
    t(&mut w, "f16", &[5], GgmlType::F16);
    t(&mut w, "bf16", &[2, 2, 2], GgmlType::BF16);
    t(&mut w, "q8", &[64, 3], GgmlType::Q8_0);
    t(&mut w, "q4_0", &[32, 2], GgmlType::Q4_0);
    t(&mut w, "q4_1", &[32, 1, 2], GgmlType::Q4_1);
    w
}

fn strings(items: &[&str]) -> GgufValue {
    GgufValue::Array(
        items
            .iter()
            .map(|s| GgufValue::String(s.to_string()))
            .collect(),
    )
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile> {
    GgufFile::from_bytes(bytes, "test.gguf")
}

/// The full error chain, as a user would see it with `{:#}`.
fn err(bytes: Vec<u8>) -> String {
    match parse(bytes) {
        Ok(_) => panic!("expected a parse error"),
        Err(e) => format!("{e:#}"),
    }
}

/// Byte offset just past the name string of tensor `name` in its tensor info.
fn after_name(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle);
    at.unwrap() + needle.len()
}

#[test]
fn metadata_round_trips() {
    let g = parse(sample().to_bytes()).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.get_str("general.architecture"), Some("llama"));
    assert_eq!(g.get_u64("u8"), Some(200));
    assert_eq!(g.get_u64("u16"), Some(60000));
    assert_eq!(g.require_u64("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_u64("u64"), Some(1 << 40));
    assert_eq!(g.get_u64("i8"), None, "negative ints are not u64");
    assert_eq!(g.get("i16").and_then(GgufValue::as_i64), Some(-300));
    assert_eq!(g.get("i32"), Some(&GgufValue::I32(-7)));
    assert_eq!(g.get("i64").and_then(GgufValue::as_i64), Some(-1));
    assert_eq!(g.get_f32("eps"), Some(1e-5));
    assert_eq!(g.get_f32("f64"), Some(0.25));
    assert_eq!(g.get_bool("flag"), Some(true));
    let words = g.require_array("words").unwrap();
    let words: Vec<_> = words.iter().filter_map(GgufValue::as_str).collect();
    assert_eq!(words, ["a", "héllo", ""]);
    assert_eq!(g.get_array("ints").map(<[_]>::len), Some(2));
    assert_eq!(
        g.get_array("nested").unwrap()[0].as_array().unwrap().len(),
        1
    );
}

#[test]
fn require_errors_name_key_and_file() {
    let g = parse(sample().to_bytes()).unwrap();
    let e = g.require_u64("nope").unwrap_err().to_string();
    assert!(e.contains("'nope'") && e.contains("test.gguf"), "{e}");
    let e = g.require_str("eps").unwrap_err().to_string();
    assert!(
        e.contains("'eps'") && e.contains("f32") && e.contains("string"),
        "{e}"
    );
    let e = g.tensor_f32("missing").unwrap_err().to_string();
    assert!(e.contains("'missing'") && e.contains("test.gguf"), "{e}");
}

#[test]
fn tensors_round_trip() {
    let g = parse(sample().to_bytes()).unwrap();
    assert_eq!(g.tensors().len(), 6);
    let info = g.tensor_info("q8").unwrap();
    assert_eq!((info.n_elements(), info.shape()), (192, vec![3, 64]));
    for (name, tol) in [
        ("f32", 0.0),
        ("f16", 1e-3),
        ("bf16", 1e-2),
        ("q8", 0.03),
        ("q4_0", 0.4),
        ("q4_1", 0.2),
    ] {
        let (data, shape) = g.tensor_f32(name).unwrap();
        let info = g.tensor_info(name).unwrap();
        assert_eq!(shape, info.shape(), "{name}");
        assert_eq!(data.len() as u64, info.n_elements(), "{name}");
        let want = ramp(data.len());
        let max_err = want
            .iter()
            .zip(&data)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_err <= tol, "{name}: max error {max_err}");
    }
    assert_eq!(g.tensor_bytes("q4_1").unwrap().len(), 40);
}

#[test]
fn version_2_and_custom_alignment() {
    let mut w = sample();
    w.version(2).alignment(64);
    let bytes = w.to_bytes();
    let g = parse(bytes).unwrap();
    assert_eq!(g.version(), 2);
    assert_eq!(g.tensor_f32("f32").unwrap().0, ramp(6));
    assert!(err(sample().version(4).to_bytes()).contains("version 4"));
    assert!(err(sample().alignment(48).to_bytes()).contains("power of two"));
}

#[test]
fn open_reads_from_disk_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    sample().write(&path).unwrap();
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.tensor_f32("q8").unwrap().1, [3, 64]);
    std::fs::write(&path, b"GGUF\x03\0\0\0").unwrap();
    let e = format!("{:#}", GgufFile::open(&path).err().unwrap());
    assert!(e.contains("model.gguf") && e.contains("truncated"), "{e}");
    let e = format!(
        "{:#}",
        GgufFile::open(&dir.path().join("none")).err().unwrap()
    );
    assert!(e.contains("none"), "{e}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().to_bytes();
    for len in 0..bytes.len() {
        let prefix = bytes.get(..len).unwrap().to_vec();
        assert!(parse(prefix).is_err(), "prefix of {len} bytes parsed");
    }
    assert!(err(bytes[..30].to_vec()).contains("truncated"));
}

/// Random byte corruptions of a valid file must give `Ok` or `Err`, never a panic, and whatever
/// parses must still dequantise without panicking.
#[test]
fn random_corruptions_never_panic() {
    let bytes = sample().to_bytes();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % b.len() as u64) as usize;
            b[at] = next() as u8;
        }
        if let Ok(g) = parse(b) {
            for t in g.tensors() {
                let _ = g.tensor_f32(&t.name);
            }
        }
    }
}

#[test]
fn bad_magic() {
    let mut bytes = sample().to_bytes();
    bytes[0] = b'X';
    assert!(err(bytes).contains("not a GGUF file"));
}

#[test]
fn corrupted_tensor_type_names_tensor_and_id() {
    let mut bytes = sample().to_bytes();
    let at = after_name(&bytes, "q8") + 4 + 2 * 8; // n_dims, two dims
    bytes[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    let e = err(bytes);
    assert!(e.contains("'q8'") && e.contains("77"), "{e}");
    let mut w = GgufWriter::new();
    w.tensor_raw("k", &[32], 16, vec![0; 18]); // IQ2_XXS: a known type tandem does not decode
    let e = err(w.to_bytes());
    assert!(e.contains("'k'") && e.contains("IQ2_XXS"), "{e}");
}

#[test]
fn huge_string_length() {
    let mut bytes = sample().to_bytes();
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes()); // length of the first key
    let e = err(bytes);
    assert!(
        e.contains("18446744073709551615") && e.contains("offset 24"),
        "{e}"
    );
}

#[test]
fn huge_array_count() {
    let mut w = GgufWriter::new();
    w.metadata("a", GgufValue::Array(vec![GgufValue::U32(1)]));
    let mut bytes = w.to_bytes();
    // magic, version, counts (24) + key (8 + 1) + value type (4) + element type (4).
    bytes[41..49].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(err(bytes).contains("claims 9223372036854775807 elements"));
}

#[test]
fn deep_nesting_is_rejected() {
    let mut v = GgufValue::U8(0);
    for _ in 0..20 {
        v = GgufValue::Array(vec![v]);
    }
    let mut w = GgufWriter::new();
    w.metadata("deep", v);
    assert!(err(w.to_bytes()).contains("nested deeper"));
}

#[test]
fn tensor_offset_past_end() {
    let mut bytes = sample().to_bytes();
    let at = after_name(&bytes, "q4_1") + 4 + 3 * 8 + 4; // n_dims, dims, type
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = err(bytes);
    assert!(
        e.contains("'q4_1'") && e.contains("outside the file"),
        "{e}"
    );
    let mut bytes = sample().to_bytes();
    let at = after_name(&bytes, "q4_1") + 4 + 3 * 8 + 4;
    bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(bytes).contains("outside the file"));
}

#[test]
fn bad_dims() {
    let mut w = GgufWriter::new();
    w.tensor_raw("big", &[1 << 32, 1 << 32, 1 << 32], 0, vec![]);
    assert!(err(w.to_bytes()).contains("overflow"));
    let mut w = GgufWriter::new();
    w.tensor_raw("five", &[1, 1, 1, 1, 1], 0, vec![0; 4]);
    assert!(err(w.to_bytes()).contains("5 dimensions"));
    let mut w = GgufWriter::new();
    w.tensor_raw("odd", &[16, 2], GgmlType::Q8_0.id(), vec![0; 34]);
    assert!(err(w.to_bytes()).contains("block size"));
}

#[test]
fn duplicates_are_rejected() {
    let mut w = GgufWriter::new();
    w.tensor_raw("t", &[1], 0, vec![0; 4])
        .tensor_raw("t", &[1], 0, vec![0; 4]);
    assert!(err(w.to_bytes()).contains("duplicate tensor name 't'"));
    let mut w = GgufWriter::new();
    w.metadata("k", GgufValue::U8(1))
        .metadata("k", GgufValue::U8(2));
    assert!(err(w.to_bytes()).contains("duplicate metadata key 'k'"));
}

#[test]
fn unknown_value_type() {
    let mut w = GgufWriter::new();
    w.metadata("k", GgufValue::U8(1));
    let mut bytes = w.to_bytes();
    bytes[33..37].copy_from_slice(&13u32.to_le_bytes());
    assert!(err(bytes).contains("unknown metadata value type 13"));
}

/// GGUF rows for one head of dim 4: [r0, r2, r1, r3] (pairs (i, i + hd/2) interleaved).
#[test]
fn unpermute_hand_example() {
    let gguf = [10, 12, 11, 13, 20, 22, 21, 23];
    let hf = unpermute_qk_rows(&gguf, 8, 1, 2).unwrap();
    assert_eq!(hf, [10, 11, 12, 13, 20, 21, 22, 23]);
    assert_eq!(permute_qk_rows(&hf, 8, 1, 2).unwrap(), gguf);
}

#[test]
fn permute_round_trips_with_wide_rows() {
    let (rows, cols, heads) = (24, 3, 3);
    let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let p = permute_qk_rows(&w, rows, cols, heads).unwrap();
    assert_ne!(p, w);
    // Row 1 of GGUF head 0 is HF row hd/2 = 4.
    assert_eq!(p[cols..2 * cols], w[4 * cols..5 * cols]);
    assert_eq!(unpermute_qk_rows(&p, rows, cols, heads).unwrap(), w);
    assert!(unpermute_qk_rows(&w, rows, cols, 5).is_err());
    assert!(unpermute_qk_rows(&w, rows, cols + 1, heads).is_err());
    assert!(unpermute_qk_rows(&w, rows, cols, 0).is_err());
}
