#![no_main]
//! Incremental detokenization and stop strings over arbitrary token sequences.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem_fuzz::harness::detokenize(data));
