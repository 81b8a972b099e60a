//! A calibrated simulator for scheduling research.
//!
//! It runs the engine's own [`Scheduler`](crate::engine::scheduler::Scheduler) — block
//! allocator, prefix cache, policies, preemption, not a copy — against a pretend executor
//! whose step time comes from a [`CostModel`](cost_model::CostModel) fitted to real forward
//! steps by `tandem calibrate`. Samples are fake tokens; requests finish at their target output
//! length. So a policy is tried in seconds on a laptop, on a trace or a synthetic workload, and
//! its simulated effect predicts the engine's (`tests/sim_engine_agreement.rs` checks that).
//!
//! ```text
//!  workload (synthetic | trace) ─────────▶ simulator ──▶ report / per-request CSV
//!                                          │  Scheduler (real)        ▲
//!                                          └─ step time = cost model ─┘  ◀── calibrate
//! ```

pub mod calibrate;
pub mod cdf_chart;
pub mod chart;
pub mod compare;
pub mod cost_model;
pub mod fit;
pub mod markdown_report;
pub mod report;
pub mod reseed;
pub mod run_record;
pub mod simulator;
pub mod ticks;
pub mod timeline;
pub mod timeline_chart;
pub mod trace_formats;
pub mod workload;

pub use cost_model::CostModel;
pub use report::{Slo, Summary};
pub use simulator::{simulate, simulate_with, SimConfig, SimResult};
pub use workload::{Synthetic, TraceRequest};
