//! `<think>…</think>` reasoning (Qwen3, DeepSeek-R1, QwQ) split from the answer, as text arrives.
//!
//! The reasoning is what follows an opening `<think>` at the start of the output — or the start
//! of the output itself when the prompt already ends with `<think>` (templates that open the
//! block for the model) — up to `</think>`; without a `</think>` all of it is reasoning (the
//! answer ran out of tokens while thinking). The whitespace after `</think>` is dropped.

pub const THINK_START: &str = "<think>";
pub const THINK_END: &str = "</think>";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Reasoning(String),
    Answer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Deciding whether the output opens with `<think>`.
    Start,
    Reasoning,
    /// After `</think>`, still dropping whitespace.
    AfterReasoning,
    Answer,
}

pub struct ReasoningStream {
    mode: Mode,
    buf: String,
}

impl ReasoningStream {
    /// `opened_in_prompt`: the rendered prompt ends with `<think>`.
    pub fn new(opened_in_prompt: bool) -> Self {
        ReasoningStream {
            mode: if opened_in_prompt {
                Mode::Reasoning
            } else {
                Mode::Start
            },
            buf: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<Part> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        self.advance(false, &mut out);
        out
    }

    pub fn finish(&mut self) -> Vec<Part> {
        let mut out = Vec::new();
        self.advance(true, &mut out);
        out
    }

    fn advance(&mut self, at_end: bool, out: &mut Vec<Part>) {
        loop {
            match self.mode {
                Mode::Start => {
                    let s = self.buf.trim_start();
                    if let Some(rest) = s.strip_prefix(THINK_START) {
                        self.buf = rest.to_string();
                        self.mode = Mode::Reasoning;
                    } else if !at_end && THINK_START.starts_with(s) {
                        return;
                    } else {
                        self.mode = Mode::Answer;
                    }
                }
                Mode::Reasoning => {
                    if let Some(i) = self.buf.find(THINK_END) {
                        let reasoning: String = self.buf.drain(..i).collect();
                        self.buf.drain(..THINK_END.len());
                        push(out, Part::Reasoning(reasoning));
                        self.mode = Mode::AfterReasoning;
                        continue;
                    }
                    let keep = if at_end {
                        0
                    } else {
                        held_prefix_len(&self.buf, THINK_END)
                    };
                    let reasoning: String = self.buf.drain(..self.buf.len() - keep).collect();
                    push(out, Part::Reasoning(reasoning));
                    return;
                }
                Mode::AfterReasoning => {
                    let trimmed = self.buf.trim_start().len();
                    self.buf.drain(..self.buf.len() - trimmed);
                    if self.buf.is_empty() {
                        return;
                    }
                    self.mode = Mode::Answer;
                }
                Mode::Answer => {
                    let answer = std::mem::take(&mut self.buf);
                    push(out, Part::Answer(answer));
                    return;
                }
            }
        }
    }
}

/// Adds a part, merging it into the previous one of the same kind; empty parts are dropped.
fn push(out: &mut Vec<Part>, part: Part) {
    match (out.last_mut(), &part) {
        (_, Part::Reasoning(t) | Part::Answer(t)) if t.is_empty() => {}
        (Some(Part::Reasoning(a)), Part::Reasoning(b))
        | (Some(Part::Answer(a)), Part::Answer(b)) => a.push_str(b),
        _ => out.push(part),
    }
}

/// The length of the longest end of `s` that `marker` starts with.
pub fn held_prefix_len(s: &str, marker: &str) -> usize {
    (1..=marker.len().min(s.len()))
        .rev()
        .find(|&k| s.is_char_boundary(s.len() - k) && marker.starts_with(&s[s.len() - k..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(parts: Vec<Part>) -> (String, String) {
        let (mut r, mut a) = (String::new(), String::new());
        for p in parts {
            match p {
                Part::Reasoning(t) => r.push_str(&t),
                Part::Answer(t) => a.push_str(&t),
            }
        }
        (r, a)
    }

    /// The split of `text` pushed whole, checked against every two-piece split of it.
    fn check(opened: bool, text: &str) -> (String, String) {
        let mut s = ReasoningStream::new(opened);
        let mut parts = s.push(text);
        parts.extend(s.finish());
        let want = split(parts);
        for cut in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let mut s = ReasoningStream::new(opened);
            let mut parts = s.push(&text[..cut]);
            parts.extend(s.push(&text[cut..]));
            parts.extend(s.finish());
            assert_eq!(split(parts), want, "cut at {cut} of {text:?}");
        }
        want
    }

    #[test]
    fn think_blocks_are_split_off() {
        assert_eq!(
            check(false, "<think>\nIt is 2 + 2 → 4.\n</think>\n\nFour."),
            ("\nIt is 2 + 2 → 4.\n".into(), "Four.".into())
        );
        assert_eq!(
            check(true, "Opened by the prompt.</think>Done"),
            ("Opened by the prompt.".into(), "Done".into())
        );
    }

    #[test]
    fn without_a_block_it_is_all_answer_and_unclosed_it_is_all_reasoning() {
        assert_eq!(
            check(false, "Just <think> text"),
            ("".into(), "Just <think> text".into())
        );
        assert_eq!(check(false, "<thin"), ("".into(), "<thin".into()));
        assert_eq!(
            check(false, "<think>still going</thi"),
            ("still going</thi".into(), "".into())
        );
    }

    #[test]
    fn reasoning_streams_before_the_block_closes() {
        let mut s = ReasoningStream::new(false);
        assert_eq!(s.push("<thi"), vec![]);
        assert_eq!(s.push("nk>a</th"), vec![Part::Reasoning("a".into())]);
        assert_eq!(s.push("ink>\n"), vec![]);
        assert_eq!(s.push("b"), vec![Part::Answer("b".into())]);
    }
}
