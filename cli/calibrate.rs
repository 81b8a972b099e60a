//! `tandem calibrate`: time real forward steps over a grid of batch shapes and fit the
//! simulator's step-time model to them.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use crate::cli::engine_args::model_name;
use crate::cli::model_args::{Device, ModelArgs};
use crate::device::backend::Backend;
use crate::model::StepLimits;
use crate::runner::Runner;
use crate::sim::calibrate::{default_grid, knots_of, measure};
use crate::sim::fit::fit;

#[derive(clap::Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to write the fitted cost model (JSON, for `tandem sim --cost-model`).
    #[arg(long)]
    pub out: PathBuf,
    /// The largest step to time, in tokens (the engine's --max-batch-tokens).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// The most sequences in a step to time (the engine's --max-num-seqs).
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Timed runs per shape (the median is kept), after one warm-up run.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
}

pub fn run(args: CalibrateArgs) -> Result<()> {
    let device = args.model.open_device()?;
    let source = args.model.open_source()?;
    let path = source.path.clone();
    let limits = StepLimits {
        max_tokens: args.max_batch_tokens,
        max_seqs: args.max_num_seqs,
    };
    match device {
        Device::Cpu(backend) => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let on = format!("the CPU backend, {threads} hardware threads");
            calibrate(
                crate::runner::load(source, backend, limits)?.0,
                &path,
                &on,
                &args,
            )
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(backend) => {
            let on = format!("{} ({})", backend.device_name()?, backend.dtype());
            calibrate(
                crate::runner::load(source, backend, limits)?.0,
                &path,
                &on,
                &args,
            )
        }
    }
}

/// Times the grid of step shapes on `model` (running on the device described by `on`), fits
/// the cost model and saves it.
fn calibrate<B: Backend>(
    mut model: Runner<B>,
    path: &Path,
    on: &str,
    args: &CalibrateArgs,
) -> Result<()> {
    let grid = default_grid(
        args.max_batch_tokens,
        args.max_num_seqs,
        model.cfg().max_position_embeddings,
    );
    anyhow::ensure!(!grid.is_empty(), "the step limits leave no shape to time");
    eprintln!(
        "timing {} step shapes on {} ({} runs each)...",
        grid.len(),
        path.display(),
        args.reps
    );
    let measurements = measure(&mut model, &grid, args.reps, args.block_size, |i, p, m| {
        eprintln!(
            "  [{:>2}/{}] decode {:>3} x {:>4} ctx + prefill {:>3} (+{:>3} cached): {:>9.2} ms",
            i + 1,
            grid.len(),
            p.decode_seqs,
            p.decode_context,
            p.prefill_tokens,
            p.prefill_cached,
            m.seconds * 1e3
        )
    })?;
    let mut cost = fit(&measurements, &knots_of(&grid))?;
    cost.description = format!(
        "{} on {on}, block size {}, fitted over {} step shapes",
        model_name(path),
        args.block_size,
        measurements.len()
    );
    cost.measurements = measurements;
    cost.save(&args.out)
        .with_context(|| format!("saving the cost model to {}", args.out.display()))?;
    let f = cost.fit.clone().unwrap_or_default();
    let curve: Vec<String> = cost
        .token_knots
        .iter()
        .zip(&cost.token_cost_s)
        .map(|(k, c)| format!("{k}: {:.2} ms", c * 1e3))
        .collect();
    println!(
        "step time = g(tokens) + {:.3} ms/sample + {:.2} ns/KV token read, g = {{{}}}",
        cost.per_sample_s * 1e3,
        cost.per_kv_token_read_s * 1e9,
        curve.join(", ")
    );
    println!(
        "fit over {} shapes: R² {:.4}, relative error mean {:.1}%, worst {:.1}%",
        f.samples,
        f.r2,
        f.mean_rel_error * 100.0,
        f.max_rel_error * 100.0
    );
    println!("wrote {}", args.out.display());
    Ok(())
}
