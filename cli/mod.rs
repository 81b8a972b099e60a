//! The commands and their arguments (clap structs); `main.rs` only dispatches to them.

pub mod bench_decode;
pub mod bench_throughput;
pub mod calibrate;
pub mod engine_args;
pub mod generate;
pub mod loadgen;
pub mod model_args;
pub mod serve;
pub mod sim;
mod sim_record;
pub mod trace_args;
