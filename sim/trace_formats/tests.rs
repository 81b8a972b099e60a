use super::*;
use crate::sim::workload::prompt_tokens;

fn read_file(name: &str, format: TraceFormat, window: Window) -> Result<Trace> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traces")
        .join(name);
    read(&path, format, window)
}

fn lengths(t: &Trace) -> Vec<(usize, usize)> {
    t.requests
        .iter()
        .map(|r| (r.prompt_len, r.output_len))
        .collect()
}

fn arrivals(t: &Trace) -> Vec<f64> {
    t.requests.iter().map(|r| r.arrival).collect()
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

#[test]
fn each_format_is_sniffed_from_its_first_line() {
    for (file, format) in [
        ("azure_code_2023.csv", TraceFormat::Azure),
        ("azure_conv_2024.csv", TraceFormat::Azure),
        ("burstgpt.csv", TraceFormat::Burstgpt),
        ("mooncake.jsonl", TraceFormat::Mooncake),
    ] {
        let t = read_file(file, TraceFormat::Auto, Window::default()).unwrap();
        assert_eq!(t.format, format, "{file}");
    }
    assert_eq!(
        sniff(r#"{"arrival": 0, "prompt_len": 3, "output_len": 1}"#).unwrap(),
        TraceFormat::Jsonl
    );
    let err = sniff("time,prompt,output").unwrap_err().to_string();
    assert!(err.contains("--trace-format"), "{err}");
}

#[test]
fn azure_rows_become_requests_timed_from_the_first() {
    let t = read_file("azure_code_2023.csv", TraceFormat::Azure, Window::default()).unwrap();
    assert_eq!(lengths(&t), [(374, 44), (396, 109), (91, 14), (2042, 7)]);
    assert_eq!(t.skipped, 1, "the row with no generated tokens");
    assert!(close(&arrivals(&t), &[0.0, 4.314579, 5.073253, 6.62831]));
    let t = read_file("azure_conv_2024.csv", TraceFormat::Auto, Window::default()).unwrap();
    assert_eq!(lengths(&t)[3], (4416, 111));
    assert!(close(&arrivals(&t), &[0.0, 0.51228, 1.29009, 3.0517]));
}

#[test]
fn burstgpt_skips_failed_requests() {
    let t = read_file("burstgpt.csv", TraceFormat::Burstgpt, Window::default()).unwrap();
    assert_eq!(lengths(&t), [(472, 18), (417, 217), (1360, 195), (145, 69)]);
    assert_eq!(t.skipped, 1);
    assert!(close(&arrivals(&t), &[0.0, 113.0, 126.0, 135.0]));
}

#[test]
fn mooncake_hash_ids_become_shared_prompt_blocks() {
    let t = read_file("mooncake.jsonl", TraceFormat::Mooncake, Window::default()).unwrap();
    assert!(close(&arrivals(&t), &[0.0, 0.25, 0.6, 1.8]));
    let p: Vec<Vec<u32>> = t
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| prompt_tokens(r, i, 50_000))
        .collect();
    let b = mooncake::HASH_BLOCK_TOKENS;
    // Requests 0 and 1 share blocks 0 and 1 (ids 0, 1), then differ (ids 2 and 3).
    assert_eq!(p[0][..2 * b], p[1][..2 * b]);
    assert_ne!(p[0][2 * b..2 * b + 16], p[1][2 * b..2 * b + 16]);
    // Request 3 lists the same ids as request 0; its tail past the hashed blocks is its own.
    assert_eq!(p[3][..1200], p[0][..]);
    let as_if_first = prompt_tokens(&t.requests[3], 0, 50_000);
    assert_eq!(as_if_first[..3 * b], p[3][..3 * b]);
    assert_ne!(as_if_first[3 * b..], p[3][3 * b..]);
    // Request 2 shares nothing.
    assert_ne!(p[2][..16], p[0][..16]);
}

#[test]
fn a_window_cuts_and_retimes() {
    let w = Window {
        start: 100.0,
        duration: Some(30.0),
    };
    let t = read_file("burstgpt.csv", TraceFormat::Auto, w).unwrap();
    assert_eq!(lengths(&t), [(417, 217), (1360, 195)]);
    assert!(close(&arrivals(&t), &[13.0, 26.0]));
    let empty = Window {
        start: 1000.0,
        duration: None,
    };
    let err = read_file("burstgpt.csv", TraceFormat::Auto, empty).unwrap_err();
    assert!(format!("{err:#}").contains("no request arrives"), "{err:#}");
    let bad = Window {
        start: 0.0,
        duration: Some(0.0),
    };
    assert!(read_file("burstgpt.csv", TraceFormat::Auto, bad).is_err());
}

#[test]
fn malformed_rows_name_their_row_and_column() {
    let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,12,3\n2023-11-16 18:15:47,twelve,3\n";
    let err = read_from(csv.as_bytes(), TraceFormat::Azure, Window::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("row 3") && msg.contains("ContextTokens"),
        "{msg}"
    );
    let missing = "Timestamp,Model,Request tokens\n1,ChatGPT,5\n";
    let err = read_from(missing.as_bytes(), TraceFormat::Burstgpt, Window::default()).unwrap_err();
    assert!(format!("{err:#}").contains("Response tokens"), "{err:#}");
    let json = "{\"timestamp\": 1, \"input_length\": 4}\n";
    assert!(read_from(json.as_bytes(), TraceFormat::Mooncake, Window::default()).is_err());
}
