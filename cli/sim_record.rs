//! `tandem sim`'s [`RunRecord`]: its arguments spelled out so the run can be reproduced.

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
