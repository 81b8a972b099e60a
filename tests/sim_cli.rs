//! `tandem sim` and `tandem calibrate` as a user runs them: reports, CSV, charts, a fitted cost
//! model that `sim` accepts.

#[path = "common/wait.rs"]
mod wait;

use std::path::Path;
use std::process::{Command, Output};
use wait::OutputWithin;

fn tandem(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output_within();
    assert!(
        out.status.success(),
        "tandem {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn sim_prints_the_report_and_writes_per_request_csv() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let trace = dir.path().join("trace.jsonl");
    let out = tandem(&[
        "sim",
        "--num-requests",
        "200",
        "--rate",
        "0.2",
        "--prefix-groups",
        "2",
        "--save-trace",
        trace.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "throughput:",
        "goodput:",
        "TTFT",
        "TPOT",
        "E2E",
        "queue",
        "preemptions:",
        "prefix cache:",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    let csv = read(&out_dir.join("requests.csv"));
    assert_eq!(csv.lines().count(), 201);
    assert!(csv.starts_with("id,arrival,prompt_len,output_len,prefix_group,"));
    let summary: serde_json::Value =
        serde_json::from_str(&read(&out_dir.join("summary.json"))).unwrap();
    assert_eq!(summary["completed"], 200);

    // The saved trace replays to the same report.
    let again = tandem(&[
        "sim",
        "--trace",
        trace.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let first_lines = |s: &[u8]| {
        String::from_utf8_lossy(s)
            .lines()
            .take(9)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(first_lines(&out.stdout), first_lines(&again.stdout));
}

#[test]
fn sim_compare_sweeps_policies_over_rates_and_draws_charts() {
    let dir = tempfile::tempdir().unwrap();
    let out = tandem(&[
        "sim",
        "--compare",
        "fcfs,prefill-first,decode-first",
        "--rates",
        "0.05,0.1,0.2",
        "--num-requests",
        "100",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("prefill-first"), "{stdout}");
    let csv = read(&dir.path().join("compare.csv"));
    assert_eq!(csv.lines().count(), 1 + 3 * 3);
    let svg = read(&dir.path().join("compare.svg"));
    assert!(svg.starts_with("<svg"));
    for want in ["decode-first", "TTFT p99", "arrival rate"] {
        assert!(svg.contains(want), "no {want:?} in the chart");
    }
}

#[test]
fn calibrate_fits_a_cost_model_that_sim_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/models/tiny-llama");
    let cost = dir.path().join("cost.json");
    let out = tandem(&[
        "calibrate",
        "--model",
        model,
        "--max-batch-tokens",
        "64",
        "--max-num-seqs",
        "8",
        "--out",
        cost.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("fit over"));
    let json: serde_json::Value = serde_json::from_str(&read(&cost)).unwrap();
    assert!(!json["measurements"].as_array().unwrap().is_empty());
    tandem(&[
        "sim",
        "--cost-model",
        cost.to_str().unwrap(),
        "--num-requests",
        "50",
        "--max-batch-tokens",
        "64",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
}

#[test]
fn sim_rejects_an_unknown_policy_and_a_bad_trace() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .arg("--out")
            .arg(dir.path())
            .output_within()
    };
    let out = run(&["sim", "--policy", "nope", "--num-requests", "5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheduling policy"));
    let trace = dir.path().join("bad.jsonl");
    std::fs::write(&trace, "{\"arrival\": 0, \"prompt_len\": 4}\n").unwrap();
    let out = run(&["sim", "--trace", trace.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.jsonl") && stderr.contains("line 1"),
        "{stderr}"
    );
}

/// Each public trace format replays from the file as published; the Mooncake trace's block
/// hashes give the prefix cache real hits.
#[test]
fn sim_replays_each_public_trace_format() {
    let traces = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    for (file, replayable) in [
        ("azure_code_2023.csv", 4),
        ("azure_conv_2024.csv", 4),
        ("burstgpt.csv", 4),
        ("mooncake.jsonl", 4),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let trace = traces.join(file);
        tandem(&[
            "sim",
            "--trace",
            trace.to_str().unwrap(),
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        let summary: serde_json::Value =
            serde_json::from_str(&read(&dir.path().join("summary.json"))).unwrap();
        assert_eq!(summary["completed"], replayable, "{file}");
        let hits = summary["prefix_cache_hits"].as_u64().unwrap();
        assert_eq!(hits > 0, file == "mooncake.jsonl", "{file}: {hits} hits");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = tandem(&[
        "sim",
        "--trace",
        traces.join("burstgpt.csv").to_str().unwrap(),
        "--trace-format",
        "burstgpt",
        "--start",
        "100",
        "--duration",
        "30",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("left out 1 rows"));
    let summary: serde_json::Value =
        serde_json::from_str(&read(&dir.path().join("summary.json"))).unwrap();
    assert_eq!(summary["completed"], 2, "the window holds two requests");
}

/// `--max-wait-steps` reaches the scheduler: under shortest-prompt-first at a load where the
/// queue grows, serving every request overdue after one step (close to fcfs) gives another
/// schedule than `--no-aging`; and the two options exclude each other.
#[test]
fn sim_takes_the_aging_knob() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = |aging: &[&str]| {
        let out_dir = dir.path().join(aging.join(""));
        let mut args = vec!["sim", "--policy", "shortest-prompt-first"];
        args.extend(["--num-requests", "300", "--rate", "1"]);
        args.extend(aging);
        args.extend(["--out", out_dir.to_str().unwrap()]);
        tandem(&args);
        read(&out_dir.join("requests.csv"))
    };
    let without = schedule(&["--no-aging"]);
    assert!(
        without != schedule(&["--max-wait-steps", "1"]),
        "--max-wait-steps 1 left every request's times as --no-aging has them"
    );
    let both = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["sim", "--no-aging", "--max-wait-steps", "5"])
        .output()
        .unwrap();
    assert!(!both.status.success());
}

/// The TTFT SLO knobs parse, the report gives the SLO attainment, refusals show in the CSV, and
/// on an overloaded workload (twice what the shipped cost model serves) the deadline policy
/// meets more SLOs than fcfs, which serves the requests that already missed theirs first.
#[test]
fn sim_takes_the_ttft_slo_knobs_and_reports_attainment() {
    let dir = tempfile::tempdir().unwrap();
    let attainment = |policy: &str, slo_miss: &str| -> (f64, u64, String) {
        let out_dir = dir.path().join(format!("{policy}-{slo_miss}"));
        let out = tandem(&[
            "sim",
            "--policy",
            policy,
            "--num-requests",
            "300",
            "--rate",
            "2",
            "--ttft-slo-ms",
            "5000",
            "--slo-miss",
            slo_miss,
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("TTFT SLO attainment:"), "{stdout}");
        let summary: serde_json::Value =
            serde_json::from_str(&read(&out_dir.join("summary.json"))).unwrap();
        let a = summary["ttft_slo_attainment"].as_f64().unwrap();
        let refused = summary["slo_refused"].as_u64().unwrap();
        (a, refused, read(&out_dir.join("requests.csv")))
    };
    let (fcfs, fcfs_refused, _) = attainment("fcfs", "refuse");
    let (edf, _, _) = attainment("deadline", "deprioritise");
    let (edf_refusing, refused, csv) = attainment("deadline", "refuse");
    assert_eq!(fcfs_refused, 0, "only the deadline policy refuses");
    assert!(
        edf > fcfs + 0.1 && edf_refusing > fcfs + 0.1,
        "TTFT SLO attainment: fcfs {fcfs}, deadline {edf}, deadline refusing {edf_refusing}"
    );
    assert!(refused > 0, "nothing refused on an overloaded server");
    assert_eq!(
        csv.matches(",slo_missed,").count() as u64,
        refused,
        "the CSV marks each refusal"
    );

    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["sim", "--num-requests", "5"])
            .args(args)
            .arg("--out")
            .arg(dir.path())
            .output_within()
    };
    for (bad, knob) in [
        ("--ttft-slo-ms=-1", "--ttft-slo-ms"),
        ("--ttft-slo-ms=soon", "--ttft-slo-ms"),
        ("--slo-miss=drop", "--slo-miss"),
    ] {
        let out = run(&[bad]);
        assert!(!out.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(knob), "{bad}: {stderr}");
    }
    let without = run(&[]);
    assert!(
        !String::from_utf8_lossy(&without.stdout).contains("TTFT SLO attainment"),
        "attainment reported without an SLO"
    );
}

#[test]
fn sim_compare_with_seeds_writes_spread_cdfs_timelines_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let policies = ["fcfs", "shortest-prompt-first"];
    tandem(&[
        "sim",
        "--compare",
        &policies.join(","),
        "--rates",
        "0.1,0.3",
        "--seeds",
        "3",
        "--num-requests",
        "60",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let csv = read(&dir.path().join("compare.csv"));
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header = rows.headers().unwrap().clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let (mean, min, max) = (col("ttft_p50"), col("ttft_p50_min"), col("ttft_p50_max"));
    let mut spread_seen = false;
    for row in rows.records() {
        let row = row.unwrap();
        assert_eq!(&row[col("seeds")], "3");
        let v = |i: usize| row[i].parse::<f64>().unwrap();
        assert!(v(min) <= v(mean) && v(mean) <= v(max), "{row:?}");
        spread_seen |= v(min) < v(max);
    }
    assert!(spread_seen, "three seeds gave identical runs everywhere");

    let report = read(&dir.path().join("report.md"));
    for p in policies {
        assert!(
            report.contains(&format!("### {p}\n")),
            "no table for {p}:\n{report}"
        );
        // One row per rate in each policy's table, each with a (min–max) spread.
        let table = report.split(&format!("### {p}\n")).nth(1).unwrap();
        let rows: Vec<_> = table
            .lines()
            .filter(|l| l.starts_with("| 0."))
            .take(2)
            .collect();
        assert_eq!(rows.len(), 2, "{table}");
        assert!(rows.iter().all(|r| r.contains('–')), "{rows:?}");
    }
    for svg in [
        "compare.svg",
        "cdf.svg",
        "timeline-fcfs.svg",
        "timeline-shortest-prompt-first.svg",
    ] {
        assert!(
            report.contains(&format!("]({svg})")),
            "report.md does not show {svg}"
        );
        let text = read(&dir.path().join(svg));
        assert!(text.starts_with("<svg"), "{svg}");
    }
    let cdf = read(&dir.path().join("cdf.svg"));
    for want in [
        "TTFT CDF",
        "TPOT CDF",
        "fraction of requests",
        "time to first token (s)",
    ] {
        assert!(cdf.contains(want), "no {want:?} in the CDF chart");
    }
    let timeline = read(&dir.path().join("timeline-fcfs.svg"));
    for want in [
        "prefill tokens",
        "decode tokens",
        "KV-cache blocks in use",
        "simulated time (s)",
    ] {
        assert!(timeline.contains(want), "no {want:?} in the timeline");
    }
}

#[test]
fn the_summary_records_how_to_reproduce_the_run_and_rerunning_it_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    tandem(&[
        "sim",
        "--policy",
        "shortest-job-first",
        "--length-error",
        "0.5",
        "--num-requests",
        "80",
        "--rate",
        "0.3",
        "--seed",
        "7",
        "--max-wait-steps",
        "300",
        "--num-blocks",
        "512",
        "--out",
        first.to_str().unwrap(),
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(&read(&first.join("summary.json"))).unwrap();
    let run = &summary["run"];
    assert!(run["tandem_version"]
        .as_str()
        .unwrap()
        .starts_with(env!("CARGO_PKG_VERSION")));
    assert_eq!(run["policies"][0], "shortest-job-first");
    assert_eq!(run["seeds"][0], 7);
    assert_eq!(run["scheduler"]["max_wait_steps"], 300);
    assert_eq!(run["scheduler"]["num_blocks"], 512);
    assert_eq!(run["scheduler"]["length_error"], 0.5);
    assert_eq!(run["workload"]["kind"], "synthetic");
    assert_eq!(run["workload"]["num_requests"], 80);
    assert!(run["cost_model"]["model"].is_object(), "{run}");

    // The recorded command, pointed elsewhere, gives the same numbers.
    let second = dir.path().join("second");
    let mut args: Vec<String> = run["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let out = args.iter().position(|a| a == "--out").unwrap();
    args[out + 1] = second.to_str().unwrap().to_string();
    tandem(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let again: serde_json::Value =
        serde_json::from_str(&read(&second.join("summary.json"))).unwrap();
    for key in [
        "completed",
        "steps",
        "duration_s",
        "ttft",
        "tpot",
        "e2e",
        "goodput",
    ] {
        assert_eq!(summary[key], again[key], "{key} differs on the rerun");
    }
}

/// The walkthrough in docs/simulator.md, run as written there (its `--out` moved to a temporary
/// directory): it must succeed on the committed sample trace and show the policies apart, which
/// is its point (at the highest rate, shortest-prompt-first's median TTFT well under fcfs's).
#[test]
fn the_docs_walkthrough_runs_and_separates_the_policies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = read(&root.join("docs/simulator.md"));
    let command = doc
        .split("./target/release/tandem sim ")
        .nth(1)
        .expect("docs/simulator.md runs `./target/release/tandem sim`")
        .split('\n')
        .scan(true, |more, line| {
            let this = more.then_some(line.trim().trim_end_matches('\\').to_owned());
            *more = line.trim_end().ends_with('\\');
            this
        })
        .collect::<Vec<_>>()
        .join(" ");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap().to_owned();
    let mut args: Vec<String> = vec!["sim".into()];
    let mut words = command.split_whitespace();
    while let Some(w) = words.next() {
        args.push(w.into());
        if w == "--out" {
            words.next().expect("--out takes a directory");
            args.push(out_dir.clone());
        } else if w == "--trace" {
            // Relative to the repository root, where the walkthrough runs.
            let trace = words.next().expect("--trace takes a file");
            args.push(root.join(trace).to_str().unwrap().into());
        }
    }
    assert!(args.iter().any(|a| a == "--out"), "{args:?}");
    tandem(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let csv = read(&dir.path().join("compare.csv"));
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let top_rate = rows
        .iter()
        .map(|r| r[col("rate")].parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    let ttft_at_top = |policy: &str| -> f64 {
        let r = rows
            .iter()
            .find(|r| {
                r[col("policy")] == policy && r[col("rate")].parse::<f64>().unwrap() == top_rate
            })
            .unwrap_or_else(|| panic!("no {policy} row at rate {top_rate}"));
        r[col("ttft_p50")].parse().unwrap()
    };
    let (fcfs, spf) = (ttft_at_top("fcfs"), ttft_at_top("shortest-prompt-first"));
    assert!(
        spf < 0.5 * fcfs,
        "median TTFT at {top_rate} req/s: fcfs {fcfs:.1} s, shortest-prompt-first {spf:.1} s"
    );
}
