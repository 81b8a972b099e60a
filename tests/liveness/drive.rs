//! Replaying a [`Case`] on the scheduler alone, the way the simulator and the engine drive it
//! (time counts returned steps), checking as it goes that no request outlives its bound, that the
//! cache holds exactly the blocks of live requests, and that an abort releases everything.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use tandem::engine::request::{Request, RequestId, SamplingParams};
use tandem::engine::scheduler::batch::Batch;
use tandem::engine::scheduler::policy::{self, PolicyOptions};
use tandem::engine::scheduler::{Scheduler, SchedulerConfig};

use super::bounds::{aging_bound, linear_bound, workload_bound};
use super::workload::{prompt, Case};

/// What a replay did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub steps: u64,
    pub preemptions: u64,
    /// Sequences the policy refused (they count as finished).
    pub refused: usize,
    /// Per sequence: planned steps from its arrival to its end (`None` if aborted).
    pub spans: Vec<Option<u64>>,
    /// Per sequence: planned steps before its end (`None` if aborted).
    pub ends: Vec<Option<u64>>,
    /// Per sequence: its aging bound (`None` with aging off).
    pub bounds: Vec<Option<u64>>,
}

/// A submitted sequence still in the scheduler.
struct Live {
    id: RequestId,
    /// Planned steps before it arrived.
    arrived: u64,
    /// Its step bound with aging on.
    bound: Option<u64>,
    abort_after: Option<u64>,
}

pub fn run(policy_name: &str, c: &Case) -> Result<Outcome, String> {
    run_with(policy_name, PolicyOptions::default(), c)
}

/// [`run`], the policy built with `opts`. The scheduler's clock reads the returned steps as
/// seconds, and requests' TTFT SLOs are in the same unit.
pub fn run_with(policy_name: &str, opts: PolicyOptions, c: &Case) -> Result<Outcome, String> {
    let cfg = SchedulerConfig {
        max_num_seqs: c.max_num_seqs,
        max_batch_tokens: c.max_batch_tokens,
        num_blocks: c.num_blocks,
        block_size: c.block_size,
        enable_prefix_caching: c.prefix_caching,
        max_wait_steps: c.max_wait_steps,
    };
    let mut s = Scheduler::new(cfg, policy::by_name_with(policy_name, opts).unwrap()).unwrap();
    let seqs = c.seqs();
    let workload_limit = c.max_wait_steps.is_none().then(|| {
        workload_bound(
            policy_name,
            linear_bound(seqs.iter().map(|r| (r.prompt_len, r.output_len))),
        )
    });
    let depth = if c.overlap { 2 } else { 1 };
    let mut in_flight: VecDeque<Batch> = VecDeque::new();
    let mut live: Vec<Live> = Vec::new();
    let mut out = Outcome {
        spans: vec![None; seqs.len()],
        ends: vec![None; seqs.len()],
        bounds: vec![None; seqs.len()],
        ..Outcome::default()
    };
    let (mut now, mut next_req, mut next_seq) = (0u64, 0usize, 0usize);
    loop {
        s.set_clock(Duration::from_secs(now));
        while next_req < c.reqs.len() && c.reqs[next_req].arrival <= now {
            let r = &c.reqs[next_req];
            let tokens = prompt(next_req, r);
            for _ in 0..r.n {
                let mut req = Request::new(
                    tokens.clone(),
                    SamplingParams {
                        max_tokens: r.output_len,
                        ignore_eos: true,
                        ..Default::default()
                    },
                );
                req.priority = r.priority;
                req.client = Some(r.client().into());
                req.ttft_slo = r.ttft_slo.map(Duration::from_secs);
                let id = next_seq as RequestId;
                // Everything unfinished now arrived before it; see `aging_bound`.
                let bound = c.max_wait_steps.map(|w| {
                    let before = live.iter().map(|l| seqs[l.id as usize].work());
                    aging_bound(w, before.chain([r.work()]))
                });
                s.add(id, req, 0);
                out.bounds[id as usize] = bound;
                live.push(Live {
                    id,
                    arrived: out.steps,
                    bound,
                    abort_after: r.abort_after,
                });
                next_seq += 1;
            }
            next_req += 1;
        }
        while in_flight.len() < depth {
            let planned = s.schedule();
            for q in s.take_refused() {
                take(&mut live, q.id);
                if !q.blocks.ids().is_empty() || s.get(q.id).is_some() {
                    return Err(format!(
                        "{policy_name}: refused request {} kept its blocks",
                        q.id
                    ));
                }
                out.refused += 1;
            }
            let Some(b) = planned else { break };
            out.steps += 1;
            check_bounds(policy_name, &s, &live, out.steps, workload_limit)?;
            in_flight.push_back(b);
        }
        let Some(b) = in_flight.pop_front() else {
            match c.reqs.get(next_req) {
                Some(r) => {
                    now = r.arrival;
                    continue;
                }
                None => break,
            }
        };
        now += 1;
        let sampled: Vec<u32> = b.samples.iter().map(|x| 1 + (x.id % 97) as u32).collect();
        for a in s.on_step_done(&b, &sampled) {
            if s.get(a.id)
                .is_some_and(|q| q.num_output() >= q.params.max_tokens)
            {
                s.remove(a.id);
                let l = take(&mut live, a.id);
                out.spans[a.id as usize] = Some(out.steps - l.arrived);
                out.ends[a.id as usize] = Some(out.steps);
            }
        }
        s.recycle(b);
        let due: Vec<RequestId> = live
            .iter()
            .filter(|l| l.abort_after.is_some_and(|k| out.steps - l.arrived >= k))
            .map(|l| l.id)
            .collect();
        for id in due {
            take(&mut live, id);
            let gone = s.remove(id).expect("a live request is in the scheduler");
            if !gone.blocks.ids().is_empty() || s.get(id).is_some() {
                return Err(format!(
                    "{policy_name}: aborted request {id} kept its blocks"
                ));
            }
        }
        check_cache(policy_name, &s, &live)?;
    }
    if !live.is_empty() || s.has_work() {
        return Err(format!(
            "{policy_name}: nothing left to plan with {} requests unfinished ({} running, {} \
             waiting)",
            live.len(),
            s.num_running(),
            s.num_waiting()
        ));
    }
    s.allocator().check_invariants()?;
    if !s.allocator().all_free() {
        return Err(format!("{policy_name}: blocks still referenced at the end"));
    }
    out.preemptions = s.preemptions;
    Ok(out)
}

fn take(live: &mut Vec<Live>, id: RequestId) -> Live {
    let at = live
        .iter()
        .position(|l| l.id == id)
        .expect("request is live");
    live.remove(at)
}

/// After `steps` planned steps: no live request is past its aging bound, and with aging off the
/// workload is within its own.
fn check_bounds(
    policy_name: &str,
    s: &Scheduler,
    live: &[Live],
    steps: u64,
    workload_limit: Option<u64>,
) -> Result<(), String> {
    for l in live {
        if let Some(bound) = l.bound.filter(|&b| steps - l.arrived > b) {
            return Err(format!(
                "{policy_name}: request {} unfinished {} steps after arriving (bound {bound}; {} \
                 preemptions of it, {} running, {} waiting)",
                l.id,
                steps - l.arrived,
                s.get(l.id).map_or(0, |q| q.preemptions),
                s.num_running(),
                s.num_waiting()
            ));
        }
    }
    if let Some(workload_limit) = workload_limit.filter(|&w| steps > w) {
        return Err(format!(
            "{policy_name}: {} requests unfinished after {workload_limit} steps ({} running, {} \
             waiting, {} preemptions)",
            live.len(),
            s.num_running(),
            s.num_waiting(),
            s.preemptions
        ));
    }
    Ok(())
}

/// The cache holds exactly the blocks of live requests: nothing finished or aborted keeps one.
fn check_cache(policy_name: &str, s: &Scheduler, live: &[Live]) -> Result<(), String> {
    let a = s.allocator();
    a.check_invariants()?;
    let held: BTreeSet<u32> = live
        .iter()
        .filter_map(|l| s.get(l.id))
        .flat_map(|q| q.blocks.ids().iter().copied())
        .collect();
    let used = a.num_blocks() - a.num_free();
    if used != held.len() {
        return Err(format!(
            "{policy_name}: {used} blocks referenced, live requests hold {}",
            held.len()
        ));
    }
    Ok(())
}
