//! What the served model can do with tools and reasoning, decided once at startup from the
//! `--tool-call-parser` / `--reasoning-parser` flags, the chat template and the vocabulary.

use crate::model::chat_template::ChatTemplate;
use crate::model::tokenizer::Tokenizer;

use super::reasoning::{THINK_END, THINK_START};
use super::syntax::ToolSyntax;

/// `--reasoning-parser`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReasoningParser {
    /// `think` when `<think>` and `</think>` are added tokens of the vocabulary.
    #[default]
    Auto,
    /// `<think>…</think>` (Qwen3, DeepSeek-R1, QwQ).
    #[value(alias = "qwen3", alias = "deepseek-r1")]
    Think,
    None,
}

/// The server's output parser settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputParsers {
    /// `--tool-call-parser`; `None` picks one from the template and vocabulary.
    pub tool_call: Option<ToolSyntax>,
    pub reasoning: ReasoningParser,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelOutputSupport {
    /// How the model writes tool calls.
    pub syntax: ToolSyntax,
    /// Whether the chat template renders a `tools` variable (else the fallback prompt is used).
    pub template_uses_tools: bool,
    /// Whether outputs are split into reasoning and answer.
    pub reasoning: bool,
}

impl ModelOutputSupport {
    pub fn detect(cfg: OutputParsers, tok: &Tokenizer, template: Option<&ChatTemplate>) -> Self {
        let added: Vec<String> = tok
            .inner()
            .get_added_tokens_decoder()
            .into_values()
            .map(|t| t.content)
            .collect();
        let has_token = |t: &str| added.iter().any(|a| a == t);
        let template_uses_tools = template.is_some_and(ChatTemplate::uses_tools);
        let syntax = cfg.tool_call.unwrap_or_else(|| {
            ToolSyntax::detect(
                tok.chat_template.as_deref(),
                template_uses_tools,
                &has_token,
            )
        });
        let reasoning = match cfg.reasoning {
            ReasoningParser::Auto => has_token(THINK_START) && has_token(THINK_END),
            ReasoningParser::Think => true,
            ReasoningParser::None => false,
        };
        ModelOutputSupport {
            syntax,
            template_uses_tools,
            reasoning,
        }
    }
}

/// Enough tokens to spell `<think>` and a newline in any vocabulary that has no `<think>` token.
const TAIL_TOKENS: usize = 12;

/// Whether the prompt ends by opening a `<think>` block for the model (its last tokens, decoded
/// with special tokens, end in `<think>`).
pub fn prompt_opens_think(tok: &Tokenizer, prompt_ids: &[u32]) -> bool {
    let tail = &prompt_ids[prompt_ids.len().saturating_sub(TAIL_TOKENS)..];
    tok.decode(tail, false)
        .is_ok_and(|t| t.trim_end().ends_with(THINK_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tiny() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/tiny-llama");
        Tokenizer::from_hf_dir(&dir).unwrap()
    }

    #[test]
    fn the_tiny_chatml_model_gets_the_fallback_and_no_reasoning() {
        let tok = tiny();
        let template = ChatTemplate::new(tok.chat_template.as_deref().unwrap(), "", "").unwrap();
        let s = ModelOutputSupport::detect(OutputParsers::default(), &tok, Some(&template));
        assert_eq!(
            s,
            ModelOutputSupport {
                syntax: ToolSyntax::Hermes,
                template_uses_tools: false,
                reasoning: false
            }
        );
        let forced = OutputParsers {
            tool_call: Some(ToolSyntax::Mistral),
            reasoning: ReasoningParser::Think,
        };
        let s = ModelOutputSupport::detect(forced, &tok, Some(&template));
        assert_eq!((s.syntax, s.reasoning), (ToolSyntax::Mistral, true));
    }

    #[test]
    fn an_opening_think_at_the_prompt_end_is_seen() {
        let tok = tiny();
        let ids = tok.encode("assistant\n<think>\n", false).unwrap();
        assert!(prompt_opens_think(&tok, &ids));
        let ids = tok.encode("assistant\n<think>x</think>\n", false).unwrap();
        assert!(!prompt_opens_think(&tok, &ids));
    }
}
