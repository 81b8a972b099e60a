#![no_main]
//! A /v1/completions request body: validation, then the prompt's tokens and context check.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem_fuzz::harness::request_body(
    data,
    tandem::server::validate::Endpoint::Completions
));
