//! Tool calling and reasoning output for `/v1/chat/completions`.
//!
//! Request side: `request` reads `tools`/`tool_choice`/`parallel_tool_calls`, `history` checks
//! and parses earlier calls in `messages`, `template` decides what the chat template renders
//! (the `tools` variable, or the fallback system prompt). Output side: `support` picks the
//! model's call syntax and reasoning parser at startup, `syntax` reads call regions, `stream` and
//! `reasoning` split text as it arrives, `output` turns that into messages and stream deltas.
//! `forced` holds the schema a `required`/named call must match (constrained decoding).

pub mod forced;
pub mod forced_stream;
pub mod history;
pub mod output;
pub mod reasoning;
pub mod request;
pub mod stream;
pub mod support;
pub mod syntax;
pub mod template;
