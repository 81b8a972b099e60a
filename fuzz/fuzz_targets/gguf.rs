#![no_main]
//! The GGUF reader on truncated and corrupted files.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem_fuzz::harness::gguf(data));
