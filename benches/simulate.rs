//! The simulator's speed: 100k requests of the synthetic workload (median prompt 64, output 32)
//! at a light load (many one-request steps, the expensive case per request) and a saturating
//! one. Target: under 10 s each, so that sweeping a policy over a day's traffic stays
//! interactive. A wall-clock bound belongs here, not in the test suite, where a loaded machine
//! can break it. Run: `cargo bench --bench simulate`.

use std::time::Instant;

use tandem::sim::report::{Slo, Summary};
use tandem::sim::workload::Synthetic;
use tandem::sim::{simulate, CostModel, SimConfig};

const REQUESTS: usize = 100_000;
const TARGET_SECS: f64 = 10.0;

fn main() {
    let cost = CostModel::default_cpu();
    let slo = Slo {
        ttft_s: 1.0,
        tpot_s: 0.1,
    };
    for rate in [0.02, 0.2] {
        let trace = Synthetic {
            num_requests: REQUESTS,
            rate,
            prompt_median: 64.0,
            output_median: 32.0,
            ..Default::default()
        }
        .generate()
        .unwrap();
        let t = Instant::now();
        let r = simulate(&SimConfig::default(), &cost, &trace).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let s = Summary::of(&r, slo);
        let verdict = if secs < TARGET_SECS { "ok" } else { "OVER" };
        println!(
            "{REQUESTS} requests at {rate} req/s: {secs:.2} s wall ({verdict}, target < \
             {TARGET_SECS} s), {} steps, {} completed, {:.0}% busy",
            s.steps,
            s.completed,
            s.utilization * 100.0
        );
    }
}
