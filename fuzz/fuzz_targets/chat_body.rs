#![no_main]
//! A /v1/chat/completions request body: validation, then the chat template and tokenizer.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tandem_fuzz::harness::request_body(
    data,
    tandem::server::validate::Endpoint::Chat
));
