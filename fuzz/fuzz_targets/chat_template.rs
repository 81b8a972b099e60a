#![no_main]
//! Chat-template rendering of messages with hostile contents.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem_fuzz::harness::chat_template(data));
