//! `tandem sim`'s [`RunRecord`]: its arguments spelled out so the run can be reproduced, and
//! the same as the parameter list of `report.md`.

use clap::ValueEnum;

use crate::cli::sim::SimArgs;
use crate::sim::report::Slo;
use crate::sim::run_record::{version, CostModelUsed, RunRecord, SchedulerKnobs, Workload};
use crate::sim::CostModel;

impl SimArgs {
    pub(crate) fn record(
        &self,
        cost: &CostModel,
        slo: Slo,
        policies: &[String],
        seeds: &[u64],
    ) -> RunRecord {
        let workload = match &self.trace.trace {
            Some(path) => Workload::Trace {
                path: path.display().to_string(),
                format: self
                    .trace
                    .trace_format
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string()),
                start: self.trace.start,
                duration: self.trace.duration,
                gaps_shuffled_per_seed: seeds.len() > 1,
            },
            None => Workload::Synthetic(self.synthetic(self.rate)),
        };
        RunRecord {
            tandem_version: version(),
            command: std::env::args().skip(1).collect(),
            policies: policies.to_vec(),
            scheduler: SchedulerKnobs {
                max_num_seqs: self.max_num_seqs,
                max_batch_tokens: self.max_batch_tokens,
                num_blocks: self.num_blocks,
                block_size: self.block_size,
                prefix_caching: !self.no_prefix_caching,
                max_wait_steps: self.aging.max_wait_steps(),
                overlap: !self.no_overlap,
                max_queue: self.max_queue,
                length_error: self.length_error,
            },
            workload,
            rates: self.rates.clone(),
            seeds: seeds.to_vec(),
            slo,
            cost_model: CostModelUsed {
                path: self.cost_model.as_ref().map(|p| p.display().to_string()),
                model: cost.clone(),
            },
        }
    }
}

/// The record as `report.md`'s parameter list.
pub(crate) fn params(r: &RunRecord) -> Vec<(String, String)> {
    let k = &r.scheduler;
    let workload = match &r.workload {
        Workload::Trace {
            path,
            format,
            start,
            duration,
            gaps_shuffled_per_seed,
        } => format!(
            "trace `{path}` ({format}), from {start} s{}{}",
            duration.map_or(String::new(), |d| format!(" for {d} s")),
            if *gaps_shuffled_per_seed {
                "; each seed shuffles its arrival gaps"
            } else {
                ""
            }
        ),
        Workload::Synthetic(s) => format!(
            "synthetic: {} requests, prompt median {} (σ {}, max {}), output median {} (σ {}, max {}), \
             {} prefix groups, {} priority levels, {} clients",
            s.num_requests,
            s.prompt_median,
            s.prompt_sigma,
            s.max_prompt,
            s.output_median,
            s.output_sigma,
            s.max_output,
            s.prefix_groups,
            s.priority_levels,
            s.clients
        ),
    };
    let list = |xs: &[String]| xs.join(", ");
    vec![
        ("tandem".into(), r.tandem_version.clone()),
        ("command".into(), format!("`tandem {}`", r.command.join(" "))),
        ("policies".into(), list(&r.policies)),
        ("workload".into(), workload),
        (
            "rates (requests/s)".into(),
            list(&r.rates.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
        ),
        (
            "seeds".into(),
            list(&r.seeds.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
        ),
        (
            "scheduler".into(),
            format!(
                "max_num_seqs {}, max_batch_tokens {}, {} KV blocks of {} tokens, prefix caching {}, \
                 aging {}, overlap {}, max_queue {}, length error σ {}",
                k.max_num_seqs,
                k.max_batch_tokens,
                k.num_blocks,
                k.block_size,
                if k.prefix_caching { "on" } else { "off" },
                k.max_wait_steps
                    .map_or("off".to_string(), |s| format!("after {s} steps")),
                if k.overlap { "on" } else { "off" },
                k.max_queue,
                k.length_error
            ),
        ),
        (
            "SLO".into(),
            format!("TTFT ≤ {} s and TPOT ≤ {} s", r.slo.ttft_s, r.slo.tpot_s),
        ),
        (
            "cost model".into(),
            r.cost_model
                .path
                .clone()
                .unwrap_or_else(|| "the shipped CPU model".into()),
        ),
        (
            "reproduce".into(),
            "`compare.json` holds all of the above, with the cost model's parameters".into(),
        ),
    ]
}
