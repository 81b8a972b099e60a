//! `tandem bench serve`: a load generator for any OpenAI-compatible server (this one or vLLM).
//! Sends `--num-prompts` streaming completions of random words with `ignore_eos`, at
//! `--request-rate` (Poisson arrivals; inf = all at once) with at most `--concurrency` in flight,
//! or replays a trace's requests at its arrival times, and prints the figures `vllm bench serve`
//! prints.

mod client;
mod prompts;
pub mod report;

use anyhow::{Context, Result};
use clap::Args;
use hyper::Uri;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::trace_args::TraceArgs;
use client::{new_client, run_one, HttpClient};
use prompts::{random_words, trace_prompt};

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
    /// Replay a trace instead: its arrival times, prompt lengths (in words of synthetic text,
    /// sharing the words its prefixes share) and output lengths; --num-prompts, --input-len,
    /// --output-len and --request-rate are then unused.
    #[command(flatten)]
    pub trace: TraceArgs,
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
    let body = |prompt: String, max_tokens: usize| {
        json!({
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "ignore_eos": true,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    };
    // Each request's body and, replaying a trace, its arrival in seconds from the start.
    let requests: Vec<(Option<f64>, Value)> = match args.trace.load()? {
        Some(trace) => trace
            .iter()
            .enumerate()
            .map(|(i, r)| (Some(r.arrival), body(trace_prompt(r, i), r.output_len)))
            .collect(),
        None => (0..args.num_prompts)
            .map(|_| {
                (
                    None,
                    body(random_words(&mut rng, args.input_len), args.output_len),
                )
            })
            .collect(),
    };
    let pace = match &args.trace.trace {
        Some(path) => format!("the arrivals of {}", path.display()),
        None => format!("rate {}", args.request_rate),
    };
    eprintln!(
        "benchmarking {model} at {uri}: {} prompts, {pace}, concurrency {}",
        requests.len(),
        args.concurrency
            .map_or("unlimited".into(), |c| c.to_string())
    );
    let limit = Arc::new(tokio::sync::Semaphore::new(
        args.concurrency
            .unwrap_or(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(requests.len());
    for (arrival, body) in requests {
        if let Some(at) = arrival {
            tokio::time::sleep_until((started + Duration::from_secs_f64(at)).into()).await;
        } else if args.request_rate.is_finite() {
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
