//! A chat answer read for reasoning and tool calls: per choice, the reasoning splitter feeds the
//! tool-call parser, and what comes out becomes the message (whole answers) or deltas (streams).

use std::sync::Mutex;

use crate::model::tokenizer::Tokenizer;
use crate::server::openai::{Delta, FunctionCallDelta, ToolCall, ToolCallDelta};

use super::reasoning::{Part, ReasoningStream};
use super::request::{ToolChoice, ToolRequest};
use super::stream::{Piece, ToolCallStream};
use super::support::{prompt_opens_think, ModelOutputSupport};
use super::syntax::{ParsedCall, ToolSyntax};

/// What one choice's answer yields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Reasoning(String),
    Content(String),
    /// The choice's `index`-th call.
    Call {
        index: usize,
        call: ParsedCall,
    },
    /// The choice's `index`-th call begins (a streamed forced call): the function's name.
    CallStart {
        index: usize,
        name: String,
    },
    /// The next piece of the `index`-th call's arguments.
    CallArguments {
        index: usize,
        text: String,
    },
}

/// How to read one request's answers.
#[derive(Debug, Clone)]
struct Plan {
    /// `Some(opened_in_prompt)` when the answer is split into reasoning and answer.
    reasoning: Option<bool>,
    /// The call syntax and the offered tools' names, when calls are parsed.
    tools: Option<(ToolSyntax, Vec<String>)>,
    parallel: bool,
}

/// One request's answer reader, with a streaming state per choice.
pub struct ChatOutput {
    plan: Plan,
    choices: Mutex<Vec<ChoiceReader>>,
}

impl ChatOutput {
    /// `None` when answers are plain text: no reasoning split and no tools to call.
    pub fn new(
        support: &ModelOutputSupport,
        tools: Option<&ToolRequest>,
        tok: &Tokenizer,
        prompt_ids: &[u32],
        n: usize,
    ) -> Option<Self> {
        let calls = tools.filter(|t| t.choice != ToolChoice::None);
        let plan = Plan {
            reasoning: support
                .reasoning
                .then(|| prompt_opens_think(tok, prompt_ids)),
            tools: calls.map(|t| {
                let syntax = if t.choice.forces_call() {
                    ToolSyntax::ForcedJson
                } else {
                    support.syntax
                };
                (syntax, t.tools.iter().map(|f| f.name.clone()).collect())
            }),
            parallel: calls.is_none_or(|t| t.parallel),
        };
        Self::with_plan(plan, n)
    }

    fn with_plan(plan: Plan, n: usize) -> Option<Self> {
        if plan.reasoning.is_none() && plan.tools.is_none() {
            return None;
        }
        let choices = (0..n).map(|_| ChoiceReader::new(&plan, true)).collect();
        Some(ChatOutput {
            plan,
            choices: Mutex::new(choices),
        })
    }

    /// What `text`, the next piece of choice `index`, decides.
    pub fn push(&self, index: usize, text: &str) -> Vec<Out> {
        self.with_choice(index, |c| c.push(text))
    }

    /// The rest of choice `index` at its end, and whether it called any tool.
    pub fn finish(&self, index: usize) -> (Vec<Out>, bool) {
        self.with_choice(index, |c| {
            let out = c.finish();
            (out, c.calls > 0)
        })
    }

    fn with_choice<T>(&self, index: usize, f: impl FnOnce(&mut ChoiceReader) -> T) -> T {
        let mut choices = self.choices.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut choices[index])
    }

    /// A whole answer as a message.
    pub fn message(&self, text: &str) -> ParsedMessage {
        let mut reader = ChoiceReader::new(&self.plan, false);
        let mut outs = reader.push(text);
        outs.extend(reader.finish());
        let mut m = ParsedMessage::default();
        for o in outs {
            match o {
                Out::Reasoning(t) => m.reasoning.get_or_insert_with(String::new).push_str(&t),
                Out::Content(t) => m.content.get_or_insert_with(String::new).push_str(&t),
                Out::Call { call, .. } => m.tool_calls.push(tool_call(call)),
                // Only streams start calls before they are whole.
                Out::CallStart { .. } | Out::CallArguments { .. } => {}
            }
        }
        m
    }
}

/// A whole answer's parts: `None`/empty where it has none.
#[derive(Debug, Default)]
pub struct ParsedMessage {
    pub content: Option<String>,
    pub reasoning: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

struct ChoiceReader {
    reasoning: Option<ReasoningStream>,
    tools: Option<ToolCallStream>,
    parallel: bool,
    calls: usize,
    /// The streamed call whose arguments are arriving: `Some(index)`, or `None` while a call
    /// `parallel_tool_calls: false` drops is.
    streamed: Option<usize>,
}

impl ChoiceReader {
    /// `streaming`: forced calls go out piece by piece ([`ToolCallStream::streaming`]).
    fn new(plan: &Plan, streaming: bool) -> Self {
        let tools = plan.tools.clone().map(|(syntax, names)| {
            if streaming {
                ToolCallStream::streaming(syntax, names)
            } else {
                ToolCallStream::new(syntax, names)
            }
        });
        ChoiceReader {
            reasoning: plan.reasoning.map(ReasoningStream::new),
            tools,
            parallel: plan.parallel,
            calls: 0,
            streamed: None,
        }
    }

    fn push(&mut self, text: &str) -> Vec<Out> {
        let parts = match &mut self.reasoning {
            Some(r) => r.push(text),
            None => vec![Part::Answer(text.to_string())],
        };
        self.answer(parts, false)
    }

    fn finish(&mut self) -> Vec<Out> {
        let parts = self.reasoning.as_mut().map(ReasoningStream::finish);
        self.answer(parts.unwrap_or_default(), true)
    }

    fn answer(&mut self, parts: Vec<Part>, at_end: bool) -> Vec<Out> {
        let mut out = Vec::new();
        for p in parts {
            match p {
                Part::Reasoning(t) => out.push(Out::Reasoning(t)),
                Part::Answer(t) => match &mut self.tools {
                    Some(tools) => {
                        let pieces = tools.push(&t);
                        self.pieces(pieces, &mut out);
                    }
                    None => out.push(Out::Content(t)),
                },
            }
        }
        if at_end {
            if let Some(tools) = &mut self.tools {
                let pieces = tools.finish();
                self.pieces(pieces, &mut out);
            }
        }
        out
    }

    fn pieces(&mut self, pieces: Vec<Piece>, out: &mut Vec<Out>) {
        for p in pieces {
            match p {
                Piece::Content(t) => out.push(Out::Content(t)),
                // parallel_tool_calls: false keeps the first call only.
                Piece::Call(_) if !self.parallel && self.calls > 0 => {}
                Piece::Call(call) => {
                    out.push(Out::Call {
                        index: self.calls,
                        call,
                    });
                    self.calls += 1;
                }
                Piece::CallStart(_) if !self.parallel && self.calls > 0 => self.streamed = None,
                Piece::CallStart(name) => {
                    out.push(Out::CallStart {
                        index: self.calls,
                        name,
                    });
                    self.streamed = Some(self.calls);
                    self.calls += 1;
                }
                Piece::CallArguments(text) => {
                    if let Some(index) = self.streamed {
                        out.push(Out::CallArguments { index, text });
                    }
                }
            }
        }
    }
}

/// A fresh call id, `call_` and 24 random hex digits.
fn call_id() -> String {
    format!("call_{:024x}", rand::random::<u128>() >> 32)
}

fn tool_call(call: ParsedCall) -> ToolCall {
    ToolCall {
        id: call_id(),
        kind: "function",
        function: crate::server::openai::FunctionCall {
            name: call.name,
            arguments: call.arguments,
        },
    }
}

/// The stream deltas of one output: a call is two, its id, type and name first, then its
/// arguments; a streamed call is its opening, then a delta per piece of its arguments.
pub fn deltas(out: Out) -> Vec<Delta> {
    let call_delta = |c: ToolCallDelta| Delta {
        tool_calls: Some(vec![c]),
        ..Delta::default()
    };
    match out {
        Out::CallStart { index, name } => vec![call_delta(opening(index, name))],
        Out::CallArguments { index, text } => vec![call_delta(arguments(index, text))],
        Out::Reasoning(t) => vec![Delta {
            reasoning_content: Some(t),
            ..Delta::default()
        }],
        Out::Content(t) => vec![Delta {
            content: Some(t),
            ..Delta::default()
        }],
        Out::Call { index, call } => [opening(index, call.name), arguments(index, call.arguments)]
            .into_iter()
            .map(call_delta)
            .collect(),
    }
}

/// A call's first delta: its id, type and name.
fn opening(index: usize, name: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: Some(call_id()),
        kind: Some("function"),
        function: FunctionCallDelta {
            name: Some(name),
            arguments: String::new(),
        },
    }
}

/// A piece of a call's arguments.
fn arguments(index: usize, text: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: FunctionCallDelta {
            name: None,
            arguments: text,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(reasoning: Option<bool>, syntax: Option<ToolSyntax>, parallel: bool) -> ChatOutput {
        let names = vec!["get_weather".to_string(), "add".to_string()];
        let plan = Plan {
            reasoning,
            tools: syntax.map(|s| (s, names)),
            parallel,
        };
        ChatOutput::with_plan(plan, 1).unwrap()
    }

    const TWO_CALLS: &str = "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}}</tool_call>\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}</tool_call>";

    #[test]
    fn a_message_holds_the_calls_and_null_content() {
        let m = output(None, Some(ToolSyntax::Hermes), true).message(TWO_CALLS);
        assert_eq!(m.content, None);
        assert_eq!(m.reasoning, None);
        let calls: Vec<(&str, &str)> = m
            .tool_calls
            .iter()
            .map(|c| (c.function.name.as_str(), c.function.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [("add", "{\"a\":1}"), ("get_weather", "{\"city\":\"Rome\"}")]
        );
        assert!(m
            .tool_calls
            .iter()
            .all(|c| c.id.starts_with("call_") && c.kind == "function"));
        assert_ne!(m.tool_calls[0].id, m.tool_calls[1].id);
    }

    #[test]
    fn parallel_off_keeps_the_first_call() {
        let m = output(None, Some(ToolSyntax::Hermes), false).message(TWO_CALLS);
        assert_eq!(m.tool_calls.len(), 1);
        assert_eq!(m.tool_calls[0].function.name, "add");
    }

    #[test]
    fn reasoning_comes_first_and_calls_are_read_after_it() {
        let text = "<think>maybe <tool_call>{\"name\": \"add\"}</tool_call>?</think>\n\nSure.<tool_call>{\"name\": \"add\"}</tool_call>";
        let m = output(Some(false), Some(ToolSyntax::Hermes), true).message(text);
        assert_eq!(
            m.reasoning.as_deref(),
            Some("maybe <tool_call>{\"name\": \"add\"}</tool_call>?")
        );
        assert_eq!(m.content.as_deref(), Some("Sure."));
        assert_eq!(m.tool_calls.len(), 1);
    }

    #[test]
    fn streamed_outputs_number_the_calls_and_say_a_tool_was_called() {
        let out = output(Some(false), Some(ToolSyntax::Hermes), true);
        let mut all = Vec::new();
        for piece in [
            "<think>hm</think>",
            "Ok",
            " <tool_call>{\"name\": \"add\"}</tool_call>",
            TWO_CALLS,
        ] {
            all.extend(out.push(0, piece));
        }
        let (rest, called) = out.finish(0);
        all.extend(rest);
        assert!(called);
        let indices: Vec<usize> = all
            .iter()
            .filter_map(|o| match o {
                Out::Call { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(indices, [0, 1, 2]);
        assert_eq!(all[0], Out::Reasoning("hm".into()));
        assert_eq!(all[1], Out::Content("Ok".into()));
    }

    #[test]
    fn a_streamed_forced_call_goes_out_in_pieces_and_parallel_off_keeps_the_first() {
        let text =
            r#"[{"name": "add", "arguments": {"a": 1}}, {"name": "add", "arguments": {"a": 2}}]"#;
        for parallel in [true, false] {
            let out = output(None, Some(ToolSyntax::ForcedJson), parallel);
            let mut all = Vec::new();
            for c in text.chars() {
                all.extend(out.push(0, &c.to_string()));
            }
            let (rest, called) = out.finish(0);
            all.extend(rest);
            assert!(called);
            let deltas: Vec<serde_json::Value> = all
                .into_iter()
                .flat_map(deltas)
                .map(|d| serde_json::to_value(d).unwrap())
                .collect();
            assert!(deltas.len() > 4, "arguments in several pieces");
            let mut args = vec![String::new(); 2];
            let mut names = Vec::new();
            for d in &deltas {
                let c = &d["tool_calls"][0];
                let i = c["index"].as_u64().unwrap() as usize;
                if let Some(name) = c["function"]["name"].as_str() {
                    assert!(c["id"].as_str().unwrap().starts_with("call_"));
                    names.push((i, name.to_string()));
                }
                args[i].push_str(c["function"]["arguments"].as_str().unwrap());
            }
            let want_calls = if parallel { 2 } else { 1 };
            assert_eq!(names.len(), want_calls, "parallel {parallel}");
            for (i, a) in args.iter().take(want_calls).enumerate() {
                let v: serde_json::Value = serde_json::from_str(a).unwrap();
                assert_eq!(v["a"], i + 1);
            }
            if !parallel {
                assert_eq!(args[1], "", "the dropped call's arguments");
            }
        }
    }

    #[test]
    fn a_call_is_two_deltas_whose_arguments_are_json() {
        let call = ParsedCall {
            name: "add".into(),
            arguments: "{\"a\":1}".into(),
        };
        let d = deltas(Out::Call { index: 3, call });
        let v: Vec<serde_json::Value> =
            d.iter().map(|d| serde_json::to_value(d).unwrap()).collect();
        let first = &v[0]["tool_calls"][0];
        assert_eq!(first["index"], 3);
        assert_eq!(first["type"], "function");
        assert_eq!(first["function"]["name"], "add");
        assert!(first["id"].as_str().unwrap().starts_with("call_"));
        let second = &v[1]["tool_calls"][0];
        assert!(second.get("id").is_none() && second["function"].get("name").is_none());
        let args = format!(
            "{}{}",
            first["function"]["arguments"].as_str().unwrap(),
            second["function"]["arguments"].as_str().unwrap()
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&args).unwrap()["a"],
            1
        );
    }
}
