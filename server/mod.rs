//! The OpenAI-compatible HTTP server (`tandem serve`).
//!
//! A request goes `http` (accept, body limit) → `routes` → `generate` (validate, tokenize,
//! context check, submit to the engine) → `completions`/`chat` (wire format), streamed through
//! `sse` or returned whole. Every failure becomes an OpenAI error envelope (`error`).

pub mod body;
pub mod chat;
pub mod completions;
pub mod error;
pub mod generate;
pub mod http;
pub mod io;
pub mod messages;
pub mod metrics;
pub mod openai;
pub mod panic;
pub mod response;
pub mod routes;
pub mod sse;
pub mod state;
pub mod validate;

pub use http::serve;
pub use state::ServerConfig;
