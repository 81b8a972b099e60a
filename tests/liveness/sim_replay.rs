//! Replaying a [`Case`] in the simulator (the engine's scheduler under the simulator's event
//! loop), every step one simulated second, so the per-request aging bound reads in seconds.

use tandem::engine::scheduler::policy::PolicyOptions;
use tandem::engine::scheduler::SchedulerConfig;
use tandem::sim::simulator::Rejection;
use tandem::sim::{simulate_with, SimConfig, TraceRequest};

use super::bounds::{aging_bound, linear_bound, workload_bound};
use super::workload::Case;

/// The case as a trace: copies of an `n` > 1 request share their whole prompt (a prefix group
/// of their own), single requests their family's half.
fn trace(c: &Case) -> Vec<TraceRequest> {
    let mut out = Vec::new();
    for (i, r) in c.reqs.iter().enumerate() {
        let (group, prefix_len) = if r.n > 1 {
            (100 + i as u32, r.prompt_len)
        } else {
            (r.family, r.prompt_len / 2)
        };
        for _ in 0..r.n {
            out.push(TraceRequest {
                arrival: r.arrival as f64,
                prompt_len: r.prompt_len,
                output_len: r.output_len,
                prefix_group: Some(group),
                prefix_len,
                priority: r.priority,
                client: Some(r.client()),
                ttft_slo_ms: r.ttft_slo.map(|steps| steps as f64 * 1e3),
                cancel_after: r.abort_after.map(|steps| steps as f64),
                ..Default::default()
            });
        }
    }
    out
}

/// Runs the case under `policy_name`, its aborts as clients going away (`cancel_after`). The
/// simulator itself fails if the scheduler stops with work left or a block still referenced at
/// the end.
///
/// With aging on, each request ends within its [`aging_bound`] + 2 seconds of arriving: the
/// executor is busy from its arrival to its end (with it unfinished there is always a step to
/// run or one in flight), and the steps it runs in that time are at most the two planned before
/// the arrival and still running, plus the steps planned after it up to the one with its last
/// sample, which the bound counts.
pub fn run(policy_name: &str, c: &Case) -> Result<(), String> {
    run_with(policy_name, PolicyOptions::default(), c)
}

/// [`run`], the policy built with `opts`. A request the policy refuses counts as finished: it
/// never ran, so it delays nobody.
pub fn run_with(policy_name: &str, opts: PolicyOptions, c: &Case) -> Result<(), String> {
    let trace = trace(c);
    let cfg = SimConfig {
        sched: SchedulerConfig {
            max_num_seqs: c.max_num_seqs,
            max_batch_tokens: c.max_batch_tokens,
            num_blocks: c.num_blocks,
            block_size: c.block_size,
            enable_prefix_caching: c.prefix_caching,
            max_wait_steps: c.max_wait_steps,
        },
        policy: policy_name.into(),
        overlap: c.overlap,
        max_queue: 0,
        slo_miss: opts.slo_miss,
        ..Default::default()
    };
    let limit = match c.max_wait_steps {
        None => workload_bound(
            policy_name,
            linear_bound(trace.iter().map(|r| (r.prompt_len, r.output_len))),
        ),
        // The last request's bound (each step takes a second) from the last arrival.
        Some(w) => {
            aging_bound(w, trace.iter().map(work)) + 2 + c.reqs.last().map_or(0, |r| r.arrival)
        }
    };
    let mut steps = 0u64;
    let r = simulate_with(&cfg, &trace, |_| {
        steps += 1;
        // A hang shows as the simulator stepping on; stop it (the panic carries the message).
        assert!(
            steps <= limit,
            "{policy_name}: still stepping after {limit} steps"
        );
        1.0
    })
    .map_err(|e| format!("{policy_name}: {e:#}"))?;
    for (i, q) in r.requests.iter().enumerate() {
        if q.rejected == Some(Rejection::SloMissed) {
            continue;
        }
        if q.rejected.is_some() || q.finished.is_nan() {
            return Err(format!("{policy_name}: request {i} never finished"));
        }
        if q.cancelled {
            // Gone when its client went, not before.
            let at = q.arrival + trace[i].cancel_after.expect("only a cancel_after cancels");
            if q.finished < at {
                return Err(format!(
                    "{policy_name}: request {i} cancelled at {} s, before its client left at {at} s",
                    q.finished
                ));
            }
            continue;
        }
        if let Some(after) = trace[i].cancel_after {
            if q.finished > q.arrival + after {
                return Err(format!(
                    "{policy_name}: request {i} finished at {} s, after its client left at {} s",
                    q.finished,
                    q.arrival + after
                ));
            }
        }
        let Some(w) = c.max_wait_steps else { continue };
        let before = r.requests[..i]
            .iter()
            .zip(&trace)
            .filter(|(p, _)| p.finished >= q.arrival)
            .map(|(_, t)| work(t));
        let bound = aging_bound(w, before.chain([work(&trace[i])])) + 2;
        let span = q.finished - q.arrival;
        if span > bound as f64 {
            return Err(format!(
                "{policy_name}: request {i} took {span} s (steps) from arrival to end, bound \
                 {bound} ({} preemptions)",
                q.preemptions
            ));
        }
    }
    Ok(())
}

fn work(t: &TraceRequest) -> u64 {
    (t.prompt_len + t.output_len + 2) as u64
}
