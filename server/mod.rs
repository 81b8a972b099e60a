//! The OpenAI-compatible HTTP server (`tandem serve`).
//!
//! A request goes `http` (accept, body limit) → `routes` (which picks the endpoint's wire format)
//! → `generate` (validate, tokenize with `prompt`, context check, submit to the engine) →
//! `completions`/`chat` (the `wire` format), streamed through `sse` or returned whole.
//! `tokenize` serves `/tokenize` and `/detokenize` from the same validation and prompt code. Every
//! failure becomes an OpenAI error envelope (`error`).

pub mod body;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generate;
pub mod http;
pub mod io;
pub mod job;
pub mod messages;
pub mod metrics;
pub mod openai;
pub mod panic;
pub mod prompt;
pub mod response;
pub mod routes;
pub mod sse;
pub mod state;
pub mod tokenize;
pub mod tools;
pub mod validate;
pub mod wire;

pub use http::serve;
pub use state::ServerConfig;
