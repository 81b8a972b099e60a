//! The figures `vllm bench serve` prints, computed the same way (np.percentile-style linear
//! interpolation; TPOT excludes the first token; ITL pools every gap of every request), so
//! numbers from the two tools compare.

use std::fmt::Write;
use std::time::Duration;

/// What one request measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ok: bool,
    pub error: String,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub ttft: Duration,
    /// Gaps between consecutive content chunks.
    pub itl: Vec<Duration>,
    pub e2e: Duration,
}

/// mean, median, p99 in milliseconds (zeros when empty).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub p99: f64,
}

pub fn summarize(values_ms: &mut [f64]) -> Summary {
    if values_ms.is_empty() {
        return Summary::default();
    }
    values_ms.sort_by(f64::total_cmp);
    Summary {
        mean: values_ms.iter().sum::<f64>() / values_ms.len() as f64,
        median: percentile(values_ms, 50.0),
        p99: percentile(values_ms, 99.0),
    }
}

/// numpy's default (linear) percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn render(outcomes: &[Outcome], duration: Duration) -> String {
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
    let secs = duration.as_secs_f64().max(1e-9);
    let input: usize = ok.iter().map(|o| o.prompt_tokens).sum();
    let output: usize = ok.iter().map(|o| o.output_tokens).sum();
    let mut ttft: Vec<f64> = ok.iter().map(|o| ms(o.ttft)).collect();
    let mut tpot: Vec<f64> = ok
        .iter()
        .filter(|o| o.output_tokens > 1)
        .map(|o| (ms(o.e2e) - ms(o.ttft)) / (o.output_tokens - 1) as f64)
        .collect();
    let mut itl: Vec<f64> = ok
        .iter()
        .flat_map(|o| o.itl.iter().map(|d| ms(*d)))
        .collect();
    let mut e2e: Vec<f64> = ok.iter().map(|o| ms(o.e2e)).collect();

    let mut s = String::new();
    let line = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "{k:<40} {v}");
    };
    let _ = writeln!(s, "{:=^50}", " Serving Benchmark Result ");
    line(&mut s, "Successful requests:", ok.len().to_string());
    line(
        &mut s,
        "Failed requests:",
        (outcomes.len() - ok.len()).to_string(),
    );
    line(&mut s, "Benchmark duration (s):", format!("{secs:.2}"));
    line(&mut s, "Total input tokens:", input.to_string());
    line(&mut s, "Total generated tokens:", output.to_string());
    line(
        &mut s,
        "Request throughput (req/s):",
        format!("{:.2}", ok.len() as f64 / secs),
    );
    line(
        &mut s,
        "Output token throughput (tok/s):",
        format!("{:.2}", output as f64 / secs),
    );
    line(
        &mut s,
        "Total Token throughput (tok/s):",
        format!("{:.2}", (input + output) as f64 / secs),
    );
    for (title, short, values) in [
        ("Time to First Token", "TTFT", &mut ttft),
        ("Time per Output Token (excl. 1st token)", "TPOT", &mut tpot),
        ("Inter-token Latency", "ITL", &mut itl),
        ("End-to-end Latency", "E2EL", &mut e2e),
    ] {
        let sum = summarize(values);
        let _ = writeln!(s, "{:-^50}", title);
        line(
            &mut s,
            &format!("Mean {short} (ms):"),
            format!("{:.2}", sum.mean),
        );
        line(
            &mut s,
            &format!("Median {short} (ms):"),
            format!("{:.2}", sum.median),
        );
        line(
            &mut s,
            &format!("P99 {short} (ms):"),
            format!("{:.2}", sum.p99),
        );
    }
    let _ = writeln!(s, "{}", "=".repeat(50));
    if let Some(first) = outcomes.iter().find(|o| !o.ok) {
        let _ = writeln!(s, "first failure: {}", first.error);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 99.0) - 3.97).abs() < 1e-9);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        let s = summarize(&mut [3.0, 1.0, 2.0]);
        assert_eq!((s.mean, s.median), (2.0, 2.0));
    }

    #[test]
    fn the_report_has_vllms_lines() {
        let o = Outcome {
            ok: true,
            prompt_tokens: 10,
            output_tokens: 3,
            ttft: Duration::from_millis(100),
            itl: vec![Duration::from_millis(10), Duration::from_millis(30)],
            e2e: Duration::from_millis(140),
            ..Default::default()
        };
        let failed = Outcome {
            error: "boom".into(),
            ..Default::default()
        };
        let r = render(&[o, failed], Duration::from_secs(2));
        for needle in [
            "Successful requests:                     1",
            "Failed requests:                         1",
            "Output token throughput (tok/s):         1.50",
            "Mean TTFT (ms):                          100.00",
            "Mean TPOT (ms):                          20.00",
            "Median ITL (ms):                         20.00",
            "P99 E2EL (ms):                           140.00",
            "first failure: boom",
        ] {
            assert!(r.contains(needle), "missing {needle:?} in\n{r}");
        }
    }
}
