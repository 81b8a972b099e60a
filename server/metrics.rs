//! `/metrics` in the Prometheus text format, with vLLM-style names (`tandem:…`) so existing
//! dashboards translate.
//!
//! Engine-side figures (running, waiting, KV usage, token and preemption counters, finished
//! requests by reason) are read from [`EngineStats`] at scrape time by a collector, so they can
//! never drift from the engine's own counts. Latency histograms and client disconnects are
//! observed here in the server, which is where requests are seen from the client's side.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

use crate::device::sampling::grammar::GrammarStats;
use crate::engine::handle::{EngineHandle, EngineStats};
use std::sync::Arc;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

pub struct Metrics {
    registry: Registry,
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    queue: Histogram,
    client_disconnects: Counter,
}

impl Metrics {
    pub fn new(handle: EngineHandle, grammar: Arc<GrammarStats>) -> Self {
        let mut m = Self::build(Some(handle));
        m.registry
            .register_collector(Box::new(GrammarCollector(grammar)));
        m
    }

    /// Only the server-side metrics (for tests of the streaming logic without an engine).
    pub fn without_engine() -> Self {
        Self::build(None)
    }

    fn build(handle: Option<EngineHandle>) -> Self {
        let mut registry = Registry::default();
        let hist = |b: &[f64]| Histogram::new(b.iter().copied());
        let m = Metrics {
            ttft: hist(TTFT_BUCKETS),
            itl: hist(ITL_BUCKETS),
            e2e: hist(LATENCY_BUCKETS),
            queue: hist(LATENCY_BUCKETS),
            client_disconnects: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "tandem:time_to_first_token_seconds",
            "Time from receiving a request to its first token.",
            m.ttft.clone(),
        );
        registry.register(
            "tandem:inter_token_latency_seconds",
            "Time between consecutive token outputs of a request.",
            m.itl.clone(),
        );
        registry.register(
            "tandem:e2e_request_latency_seconds",
            "Time from receiving a request to its last token.",
            m.e2e.clone(),
        );
        registry.register(
            "tandem:request_queue_time_seconds",
            "Time a request waited in the engine's queue before first being scheduled.",
            m.queue.clone(),
        );
        registry.register(
            "tandem:client_disconnects",
            "Requests aborted because the client went away before the response was complete.",
            m.client_disconnects.clone(),
        );
        if let Some(handle) = handle {
            registry.register_collector(Box::new(EngineCollector(handle)));
        }
        Metrics { registry, ..m }
    }

    pub fn observe_ttft(&self, d: Duration) {
        self.ttft.observe(d.as_secs_f64());
    }

    pub fn observe_itl(&self, d: Duration) {
        self.itl.observe(d.as_secs_f64());
    }

    pub fn observe_e2e(&self, d: Duration) {
        self.e2e.observe(d.as_secs_f64());
    }

    pub fn observe_queue(&self, d: Duration) {
        self.queue.observe(d.as_secs_f64());
    }

    pub fn client_disconnects(&self) -> u64 {
        self.client_disconnects.get()
    }

    pub fn client_disconnected(&self) {
        self.client_disconnects.inc();
    }

    /// The exposition text (content type [`CONTENT_TYPE`]).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the engine's stats on every scrape.
struct EngineCollector(EngineHandle);

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_stats(&self.0.stats(), &mut enc)
    }
}

/// Reads the structured-output counters on every scrape.
#[derive(Debug)]
struct GrammarCollector(Arc<GrammarStats>);

impl Collector for GrammarCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        let enc = &mut enc;
        counter(
            enc,
            "tandem:structured_output_requests",
            "Requests admitted with a structured-output constraint (one per choice).",
            s.constrained_requests,
        )?;
        gauge(
            enc,
            "tandem:grammar_matchers_live",
            "Grammar matchers alive (one per constrained sequence being generated).",
            s.live_matchers,
        )?;
        counter(
            enc,
            "tandem:grammar_compiles",
            "Grammars compiled (cache misses).",
            s.compiles,
        )?;
        gauge(
            enc,
            "tandem:grammar_compile_seconds_sum",
            "Total time spent compiling grammars.",
            s.compile_seconds,
        )?;
        counter(
            enc,
            "tandem:grammar_masks",
            "Token masks computed.",
            s.masks,
        )?;
        gauge(
            enc,
            "tandem:grammar_mask_seconds_sum",
            "Total time spent computing token masks (summed over the threads computing them, \
             mostly while the forward pass runs).",
            s.mask_seconds,
        )?;
        counter(
            enc,
            "tandem:grammar_masks_at_sampling",
            "Token masks not ready when sampling began, computed then on the executor thread.",
            s.masks_at_sampling,
        )
    }
}

fn encode_stats(s: &EngineStats, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    gauge(
        enc,
        "tandem:num_requests_running",
        "Requests in the running batch.",
        s.running as i64,
    )?;
    gauge(
        enc,
        "tandem:num_requests_waiting",
        "Requests waiting to be scheduled.",
        s.waiting as i64,
    )?;
    gauge(
        enc,
        "tandem:kv_cache_usage_perc",
        "Fraction of KV-cache blocks in use (1 = full).",
        f64::from(s.kv_usage),
    )?;
    counter(
        enc,
        "tandem:prompt_tokens",
        "Prompt tokens processed.",
        s.prompt_tokens,
    )?;
    counter(
        enc,
        "tandem:generation_tokens",
        "Tokens generated.",
        s.generation_tokens,
    )?;
    counter(
        enc,
        "tandem:num_preemptions",
        "Times a running request was preempted.",
        s.preemptions,
    )?;
    counter(
        enc,
        "tandem:prefix_cache_queries",
        "Prompt tokens looked up in the prefix cache.",
        s.prefix_cache_queries,
    )?;
    counter(
        enc,
        "tandem:prefix_cache_hits",
        "Prompt tokens served from the prefix cache.",
        s.prefix_cache_hits,
    )?;
    let ty = ConstCounter::new(0u64).metric_type();
    let mut family = enc.encode_descriptor(
        "tandem:request_success",
        "Finished requests, by finish reason.",
        None,
        ty,
    )?;
    for (reason, n) in [
        ("stop", s.finished_stop),
        ("length", s.finished_length),
        ("abort", s.finished_abort),
        ("error", s.finished_error),
    ] {
        let labels = [("finished_reason", reason)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<N: EncodeGaugeValue + std::fmt::Debug + Send + Sync + 'static>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Stats(EngineStats);
    impl std::fmt::Debug for Stats {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Stats")
        }
    }
    impl Collector for Stats {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_stats(&self.0, &mut enc)
        }
    }

    #[test]
    fn stats_render_as_prometheus_text() {
        let mut r = Registry::default();
        let stats = EngineStats {
            running: 2,
            waiting: 3,
            kv_usage: 0.5,
            prompt_tokens: 10,
            generation_tokens: 20,
            preemptions: 1,
            finished_stop: 4,
            finished_length: 5,
            ..Default::default()
        };
        r.register_collector(Box::new(Stats(stats)));
        let h = Histogram::new(TTFT_BUCKETS.iter().copied());
        h.observe(0.003);
        r.register("tandem:time_to_first_token_seconds", "ttft", h);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &r).unwrap();
        for line in [
            "tandem:num_requests_running 2",
            "tandem:num_requests_waiting 3",
            "tandem:kv_cache_usage_perc 0.5",
            "tandem:prompt_tokens_total 10",
            "tandem:generation_tokens_total 20",
            "tandem:num_preemptions_total 1",
            "tandem:request_success_total{finished_reason=\"stop\"} 4",
            "tandem:request_success_total{finished_reason=\"length\"} 5",
            "tandem:time_to_first_token_seconds_count 1",
            "tandem:time_to_first_token_seconds_bucket{le=\"0.005\"} 1",
            "# TYPE tandem:time_to_first_token_seconds histogram",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
    }
}
