//! A forced call's answer read as it arrives. With `tool_choice` "required" or a named function
//! the answer is constrained to `{"name": N, "arguments": A}` (with parallel calls, a non-empty
//! array of them; see `forced.rs`), so a stream can send each call's name as soon as it is
//! complete and its arguments piece by piece, as OpenAI streams them, rather than the whole call
//! once the answer ends. The arguments go out as the model wrote them (the whole-answer path
//! re-serialises them compactly); they concatenate to the same JSON value.
//!
//! The scanner follows the shape the grammar gives (name, then arguments, an object); text of
//! another shape stops it, and what it has not sent is left to the whole-answer parse.

/// What a piece of a forced answer decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForcedEvent {
    /// A call of the named function begins.
    Start(String),
    /// The next piece of the current call's arguments.
    Arguments(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before a call, between calls or after the last: whitespace, `[`, `,`, `]`.
    Between,
    /// Inside a call object, before its arguments' value: the text since `{`.
    Head(String),
    /// Before the arguments' first character (whitespace is skipped).
    ArgsStart,
    /// Inside the arguments' object: bracket depth, inside a string, after a backslash.
    Args { depth: u32, in_str: bool, esc: bool },
    /// After the arguments, up to the call object's `}`.
    Tail,
    /// Text of another shape: nothing more is decided here.
    Off,
}

/// Longest call head (`"name": "…", "arguments":`) waited for before giving up.
const MAX_HEAD: usize = 4096;

/// Scans a forced answer for calls and their arguments.
#[derive(Debug, Clone)]
pub struct ForcedCallScanner {
    state: State,
    /// Calls started.
    calls: usize,
}

impl Default for ForcedCallScanner {
    fn default() -> Self {
        ForcedCallScanner {
            state: State::Between,
            calls: 0,
        }
    }
}

impl ForcedCallScanner {
    /// What `text`, the answer's next piece, decides.
    pub fn push(&mut self, text: &str) -> Vec<ForcedEvent> {
        let mut out = Vec::new();
        let mut args = String::new();
        for c in text.chars() {
            self.step(c, &mut args, &mut out);
        }
        flush(&mut args, &mut out);
        out
    }

    /// Whether it stopped on text of another shape.
    pub fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Whether any call was started.
    pub fn started(&self) -> bool {
        self.calls > 0
    }

    fn step(&mut self, c: char, args: &mut String, out: &mut Vec<ForcedEvent>) {
        self.state = match std::mem::replace(&mut self.state, State::Off) {
            State::Between => match c {
                '{' => State::Head(String::new()),
                '[' | ',' | ']' => State::Between,
                c if c.is_whitespace() => State::Between,
                _ => State::Off,
            },
            State::Head(mut head) => {
                head.push(c);
                match (c == ':').then(|| call_name(&head)).flatten() {
                    Some(Some(name)) => {
                        flush(args, out);
                        out.push(ForcedEvent::Start(name));
                        self.calls += 1;
                        State::ArgsStart
                    }
                    Some(None) => State::Off,
                    None if head.len() > MAX_HEAD || c == '}' => State::Off,
                    None => State::Head(head),
                }
            }
            State::ArgsStart => match c {
                '{' => {
                    args.push(c);
                    State::Args {
                        depth: 1,
                        in_str: false,
                        esc: false,
                    }
                }
                c if c.is_whitespace() => State::ArgsStart,
                _ => State::Off,
            },
            State::Args { depth, in_str, esc } => {
                args.push(c);
                match (in_str, esc, c) {
                    (true, true, _) => State::Args {
                        depth,
                        in_str,
                        esc: false,
                    },
                    (true, false, '\\') => State::Args {
                        depth,
                        in_str,
                        esc: true,
                    },
                    (true, false, '"') | (false, _, '"') => State::Args {
                        depth,
                        in_str: !in_str,
                        esc: false,
                    },
                    (false, _, '{' | '[') => State::Args {
                        depth: depth + 1,
                        in_str,
                        esc,
                    },
                    (false, _, '}' | ']') if depth == 1 => State::Tail,
                    (false, _, '}' | ']') => State::Args {
                        depth: depth - 1,
                        in_str,
                        esc,
                    },
                    _ => State::Args { depth, in_str, esc },
                }
            }
            State::Tail => match c {
                '}' => State::Between,
                c if c.is_whitespace() => State::Tail,
                _ => State::Off,
            },
            State::Off => State::Off,
        };
    }
}

fn flush(args: &mut String, out: &mut Vec<ForcedEvent>) {
    if !args.is_empty() {
        out.push(ForcedEvent::Arguments(std::mem::take(args)));
    }
}

/// For a call head ending in `:`: `Some(Some(name))` when it is `"name": "…", "arguments":`,
/// `Some(None)` when it reached `"arguments":` in another shape, `None` before that (the `:` of
/// another key, or inside the name).
fn call_name(head: &str) -> Option<Option<String>> {
    let before = head.strip_suffix(':')?.trim_end();
    if !before.ends_with("\"arguments\"") {
        return None;
    }
    // `{` + head + `0}` parses once the head is whole.
    let probe = format!("{{{head}0}}");
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(&probe) else {
        return None;
    };
    let name = fields
        .get("name")
        .and_then(|v| v.as_str())
        .map(String::from);
    Some(name.filter(|_| fields.len() == 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `text` pushed in pieces of `n` chars, arguments merged per call.
    fn scan(text: &str, n: usize) -> (Vec<(String, String)>, bool) {
        let mut s = ForcedCallScanner::default();
        let chars: Vec<char> = text.chars().collect();
        let mut calls: Vec<(String, String)> = Vec::new();
        for piece in chars.chunks(n) {
            for e in s.push(&piece.iter().collect::<String>()) {
                match e {
                    ForcedEvent::Start(name) => calls.push((name, String::new())),
                    ForcedEvent::Arguments(a) => calls.last_mut().unwrap().1.push_str(&a),
                }
            }
        }
        (calls, s.is_off())
    }

    #[test]
    fn one_call_streams_its_name_then_its_arguments() {
        let text =
            r#"{"name": "get_weather", "arguments": {"city": "Zü\"rich}", "days": [1, {"x": 2}]}}"#;
        for n in [1, 2, 5, 200] {
            let (calls, off) = scan(text, n);
            assert!(!off, "pieces of {n}");
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].0, "get_weather");
            let args: serde_json::Value = serde_json::from_str(&calls[0].1).unwrap();
            assert_eq!(args["city"], "Zü\"rich}");
            assert_eq!(args["days"][1]["x"], 2);
        }
    }

    #[test]
    fn parallel_calls_in_an_array() {
        let text = "[{\"name\":\"add\",\"arguments\":{\"a\":1}} ,\n {\"name\": \"add\", \"arguments\": {}}]";
        let (calls, off) = scan(text, 3);
        assert!(!off);
        let want = [("add", "{\"a\":1}"), ("add", "{}")];
        let got: Vec<(&str, &str)> = calls.iter().map(|c| (&*c.0, &*c.1)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn arguments_arrive_before_the_call_ends() {
        let mut s = ForcedCallScanner::default();
        assert_eq!(s.push("{\"name\": \"a"), vec![]);
        assert_eq!(
            s.push("dd\", \"arguments\": {\"a\""),
            vec![
                ForcedEvent::Start("add".into()),
                ForcedEvent::Arguments("{\"a\"".into())
            ]
        );
        assert!(s.started());
        assert_eq!(s.push(": 1"), vec![ForcedEvent::Arguments(": 1".into())]);
    }

    #[test]
    fn other_shapes_stop_the_scanner() {
        for text in [
            "plain text",
            r#"{"arguments": {}, "name": "add"}"#,
            r#"{"name": "add", "extra": 1, "arguments": {}}"#,
            r#"{"name": "add", "arguments": 5}"#,
        ] {
            let (_, off) = scan(text, 4);
            assert!(off, "{text}");
        }
        // A colon inside the name is not the end of the head.
        let (calls, off) = scan(r#"{"name": "a:b", "arguments": {}}"#, 1);
        assert!(!off);
        assert_eq!(calls, [("a:b".to_string(), "{}".to_string())]);
    }
}
