//! Structured outputs: a request's constraint (JSON schema, regex, choice, Lark grammar) compiled
//! by llguidance into a matcher that says, before each sampled token, which tokens may come next.
//!
//! - [`spec`]: the constraint as the request states it.
//! - `model/token_env.rs` (a layer up, where the tokenizer is): llguidance's view of the
//!   tokenizer, each token's bytes in a trie, which [`GrammarCompiler::new`] takes.
//! - [`compiler`]: spec → [`CompiledGrammar`], cached by spec text; compile errors are the
//!   request's 400, found before it is queued.
//! - [`matcher`]: the per-request [`ConstraintMatcher`] the sampler holds: masks a logits row,
//!   advances with each sampled token.
//! - [`ahead`]: [`MaskPool`], which prepares a step's masks while its forward pass runs.
//!
//! When the grammar is complete the mask allows only end-of-sequence tokens, so the request ends
//! as any other does at EOS (`finish_reason: "stop"`); `max_tokens` may still cut it first
//! ("length", possibly leaving incomplete JSON).

pub mod ahead;
pub mod compiler;
pub mod matcher;
pub mod spec;
pub mod stats;

pub use ahead::MaskPool;
pub use compiler::{CompiledGrammar, GrammarCompiler};
pub use matcher::{apply_mask, ConstraintMatcher};
pub use spec::ConstraintSpec;
pub use stats::GrammarStats;
