//! `tandem bench serve`: a load generator for any OpenAI-compatible server (this one or vLLM).
//! Sends `--num-prompts` streaming completions of random words with `ignore_eos`, at
//! `--request-rate` (Poisson arrivals; inf = all at once) with at most `--concurrency` in flight,
//! and prints the figures `vllm bench serve` prints.

mod client;
pub mod report;

use anyhow::{Context, Result};
use clap::Args;
use hyper::Uri;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{new_client, run_one, HttpClient};

#[derive(Debug, Clone, Args)]
pub struct BenchServeArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// The model to ask for; the server's first model (GET /v1/models) if absent.
    #[arg(long)]
    pub model: Option<String>,
    /// Most requests in flight at once; unlimited if absent.
    #[arg(long)]
    pub concurrency: Option<usize>,
    #[arg(long, default_value_t = 100)]
    pub num_prompts: usize,
    /// Words per prompt (about one token each).
    #[arg(long, default_value_t = 128)]
    pub input_len: usize,
    /// Tokens to generate per request (sent with ignore_eos, so exactly this many).
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    /// Requests per second, as a Poisson process; inf sends them all at once.
    #[arg(long, default_value_t = f64::INFINITY)]
    pub request_rate: f64,
    /// Seeds the prompts and arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run_bench_serve(args: BenchServeArgs) -> Result<()> {
    anyhow::ensure!(args.num_prompts > 0, "--num-prompts must be positive");
    anyhow::ensure!(args.output_len > 0, "--output-len must be positive");
    anyhow::ensure!(
        args.concurrency != Some(0),
        "--concurrency must be positive"
    );
    anyhow::ensure!(args.request_rate > 0.0, "--request-rate must be positive");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(bench(args))?;
    print!("{report}");
    Ok(())
}

/// Runs the benchmark and returns the printed report.
pub async fn bench(args: BenchServeArgs) -> Result<String> {
    let base = args
        .url
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    let client = new_client();
    let model = match &args.model {
        Some(m) => m.clone(),
        None => first_model(&client, &base).await?,
    };
    let uri: Uri = format!("{base}/v1/completions")
        .parse()
        .context("--url is not a valid URL")?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let bodies: Vec<Value> = (0..args.num_prompts)
        .map(|_| {
            json!({
                "model": model,
                "prompt": random_words(&mut rng, args.input_len),
                "max_tokens": args.output_len,
                "ignore_eos": true,
                "temperature": 0,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        })
        .collect();
    eprintln!(
        "benchmarking {model} at {uri}: {} prompts, rate {}, concurrency {}",
        args.num_prompts,
        args.request_rate,
        args.concurrency
            .map_or("unlimited".into(), |c| c.to_string())
    );
    let limit = Arc::new(tokio::sync::Semaphore::new(
        args.concurrency
            .unwrap_or(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(bodies.len());
    for body in bodies {
        if args.request_rate.is_finite() {
            // Exponential gaps: a Poisson process of the given rate.
            let gap = -(1.0 - rng.random::<f64>()).ln() / args.request_rate;
            tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        }
        let (client, uri, limit) = (client.clone(), uri.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            run_one(&client, &uri, &body).await
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.context("a request task failed")?);
    }
    Ok(report::render(&outcomes, started.elapsed()))
}

async fn first_model(client: &HttpClient, base: &str) -> Result<String> {
    use http_body_util::BodyExt;
    let uri: Uri = format!("{base}/v1/models")
        .parse()
        .context("--url is not a valid URL")?;
    let resp = client
        .get(uri)
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let body = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&body).context("/v1/models did not return JSON")?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .context("/v1/models lists no model; pass --model")
}

/// `n` words drawn from a small common vocabulary: most tokenizers spend about one token each.
fn random_words(rng: &mut StdRng, n: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "of", "and", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are",
        "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by",
        "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when",
        "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time",
        "if", "will", "way", "about", "many", "then", "them", "write", "would", "like", "so",
        "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day",
        "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over",
        "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now",
        "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where",
    ];
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_the_asked_number_of_words() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(random_words(&mut rng, 7).split(' ').count(), 7);
    }
}
