//! Scheduling plus building one step's metadata, with 256 running sequences of 2k-token
//! contexts (decode steps). Target: ≤ 50 µs per step on one core, so the CPU never makes a
//! ~1 ms GPU decode step wait. Run: `cargo bench --bench scheduler_step`.

use std::time::Instant;

use tandem::engine::request::{Request, SamplingParams};
use tandem::engine::scheduler::{aging, policy, Scheduler, SchedulerConfig};

const SEQS: usize = 256;
const CONTEXT: usize = 2048;
const STEPS: usize = 2000;

fn main() {
    let cfg = SchedulerConfig {
        max_num_seqs: SEQS,
        max_batch_tokens: SEQS * CONTEXT,
        num_blocks: SEQS * (CONTEXT + STEPS + 16) / 16,
        block_size: 16,
        enable_prefix_caching: true,
        max_wait_steps: Some(aging::DEFAULT_MAX_WAIT_STEPS),
    };
    let mut s = Scheduler::new(cfg, policy::by_name("fcfs").unwrap()).unwrap();
    for i in 0..SEQS as u64 {
        let prompt = (0..CONTEXT as u32)
            .map(|t| (t * 31 + i as u32 * 7919) % 50_000)
            .collect();
        let params = SamplingParams {
            max_tokens: STEPS + 10,
            ignore_eos: true,
            ..Default::default()
        };
        s.add(i, Request::new(prompt, params), i);
    }
    // One big prefill step brings every sequence to a 2k-token context.
    let prefill = s.schedule().expect("prefill step");
    s.on_step_done(&prefill, &vec![7; prefill.samples.len()]);

    let mut worst = 0f64;
    let started = Instant::now();
    for step in 0..STEPS {
        let t = Instant::now();
        let b = s.schedule().expect("decode step");
        let accepted = s.on_step_done(&b, &vec![(step % 50_000) as u32; b.samples.len()]);
        assert_eq!(accepted.len(), SEQS);
        s.recycle(b);
        worst = worst.max(t.elapsed().as_secs_f64());
    }
    let mean = started.elapsed().as_secs_f64() / STEPS as f64;
    println!(
        "scheduler step, {SEQS} sequences x {CONTEXT}-token contexts: mean {:.1} us, worst {:.1} us over {STEPS} steps",
        mean * 1e6,
        worst * 1e6
    );
}
