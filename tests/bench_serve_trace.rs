//! `tandem bench serve --trace`: a trace drives a real server at its arrival times, with prompts
//! of its lengths whose shared blocks are shared text (so the server's prefix cache hits).

#[path = "common/server.rs"]
mod common_server;

use clap::Parser;
use common_server::*;
use std::time::{Duration, Instant};
use tandem::cli::loadgen::{bench, BenchServeArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchServeArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_replays_at_its_arrival_times_with_shared_prefixes() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    // Requests 0, 1 and 3 share their first two 24-word blocks; request 2 shares nothing.
    std::fs::write(
        &trace,
        "{\"arrival\": 0.0, \"prompt_len\": 60, \"output_len\": 3, \"hash_ids\": [1, 2, 3], \"hash_block_len\": 24}\n\
         {\"arrival\": 0.3, \"prompt_len\": 55, \"output_len\": 4, \"hash_ids\": [1, 2, 4], \"hash_block_len\": 24}\n\
         {\"arrival\": 0.4, \"prompt_len\": 30, \"output_len\": 2}\n\
         {\"arrival\": 0.9, \"prompt_len\": 50, \"output_len\": 3, \"hash_ids\": [1, 2], \"hash_block_len\": 24}\n",
    )
    .unwrap();
    let url = format!("http://{}", server.addr);
    let cli =
        Cli::try_parse_from(["bench", "--url", &url, "--trace", trace.to_str().unwrap()]).unwrap();
    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(120), bench(cli.args))
        .await
        .expect("the benchmark finished within 120 s")
        .unwrap();
    let took = started.elapsed();
    assert!(
        report.contains("Successful requests:                     4"),
        "{report}"
    );
    assert!(
        report.contains("Total generated tokens:                  12"),
        "{report}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "the last request waited for its arrival: {took:?}"
    );
    let metrics = get(server.addr, "/metrics").await.text();
    let hits = metric(&metrics, "tandem:prefix_cache_hits_total")
        .or_else(|| metric(&metrics, "tandem:prefix_cache_hits"))
        .expect("the prefix-cache hit counter");
    assert!(
        hits >= 16.0,
        "requests sharing 48 words of prefix hit a 16-token block: {hits}"
    );
    server.finish().await.unwrap();
}
