//! The subcommands' implementations (the CLI's shape is in main.rs).

pub mod bench_decode;
pub mod bench_throughput;
pub mod calibrate;
pub mod sim;
