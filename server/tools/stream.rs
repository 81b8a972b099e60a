//! Tool calls found in text that arrives in pieces. Text that cannot be part of a call goes out
//! at once; a possible start of a call (a marker's prefix, or an answer opening with JSON in the
//! whole-answer syntaxes) is held until it is decided. A whole answer is read by pushing it at
//! once, so streamed and whole answers split the same way.
//!
//! Content whitespace: leading and trailing whitespace of the content is dropped, and a
//! whitespace run is held until text follows it (so the newlines between calls are not content).

use super::forced_stream::{ForcedCallScanner, ForcedEvent};
use super::reasoning::held_prefix_len;
use super::syntax::{ParsedCall, ToolSyntax, HERMES_END, HERMES_START};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Content(String),
    Call(ParsedCall),
    /// A streamed forced call begins ([`ToolCallStream::streaming`]): its function's name.
    CallStart(String),
    /// The next piece of the streamed call's arguments.
    CallArguments(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace seen yet.
    Start,
    /// Ordinary text.
    Text,
    /// Inside `<tool_call>`, waiting for `</tool_call>`.
    Block,
    /// A call region that runs to the end of the answer.
    Tail,
}

pub struct ToolCallStream {
    syntax: ToolSyntax,
    tools: Vec<String>,
    mode: Mode,
    buf: String,
    pending_ws: String,
    content_started: bool,
    /// Forced calls streamed as they arrive, and how much of `buf` it has read.
    forced: Option<(ForcedCallScanner, usize)>,
}

impl ToolCallStream {
    /// Parses `syntax` for calls of the functions named `tools`.
    pub fn new(syntax: ToolSyntax, tools: Vec<String>) -> Self {
        ToolCallStream {
            syntax,
            tools,
            mode: Mode::Start,
            buf: String::new(),
            pending_ws: String::new(),
            content_started: false,
            forced: None,
        }
    }

    /// [`new`](Self::new) for a stream: a forced call's name goes out as soon as it is known and
    /// its arguments piece by piece ([`Piece::CallStart`], [`Piece::CallArguments`]) rather than
    /// as one [`Piece::Call`] at the end.
    pub fn streaming(syntax: ToolSyntax, tools: Vec<String>) -> Self {
        let mut s = Self::new(syntax, tools);
        if syntax == ToolSyntax::ForcedJson {
            s.forced = Some((ForcedCallScanner::default(), 0));
        }
        s
    }

    /// What `text` decides.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        self.advance(false, &mut out);
        out
    }

    /// The rest, at the end of the answer: held text is content unless it parses as calls.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        self.advance(true, &mut out);
        out
    }

    fn advance(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        loop {
            match self.mode {
                Mode::Start => {
                    let s = self.buf.trim_start();
                    let Some(&first) = s.as_bytes().first() else {
                        if at_end {
                            self.buf.clear();
                        }
                        return;
                    };
                    if self.syntax.whole_answer_starts_with(first) {
                        self.mode = Mode::Tail;
                    } else if !at_end && self.marker_prefix_len(s) == s.len() {
                        return;
                    } else {
                        self.mode = Mode::Text;
                    }
                }
                Mode::Text => {
                    if let Some((i, marker)) = self.first_marker() {
                        let before = self.buf[..i].to_string();
                        self.content(&before, out);
                        if self.syntax.region_runs_to_end() {
                            self.buf.drain(..i);
                            self.mode = Mode::Tail;
                        } else {
                            self.buf.drain(..i + marker.len());
                            self.mode = Mode::Block;
                        }
                        continue;
                    }
                    let keep = if at_end {
                        0
                    } else {
                        self.marker_prefix_len(&self.buf)
                    };
                    let emit: String = self.buf.drain(..self.buf.len() - keep).collect();
                    self.content(&emit, out);
                    return;
                }
                Mode::Block => {
                    if let Some(j) = self.buf.find(HERMES_END) {
                        let body: String = self.buf.drain(..j + HERMES_END.len()).collect();
                        let region = format!("{HERMES_START}{body}");
                        self.region(&region, out);
                        self.mode = Mode::Text;
                        continue;
                    }
                    if at_end {
                        let region = format!("{HERMES_START}{}", std::mem::take(&mut self.buf));
                        self.region(&region, out);
                    }
                    return;
                }
                Mode::Tail => {
                    if self.stream_forced(at_end, out) {
                        return;
                    }
                    if at_end {
                        let region = std::mem::take(&mut self.buf);
                        self.region(&region, out);
                    }
                    return;
                }
            }
        }
    }

    /// Feeds a forced answer's new text to the scanner; whether it decided the text (else, at
    /// the end, the region is parsed whole, as without streaming: the answer had another shape
    /// and no call went out).
    fn stream_forced(&mut self, at_end: bool, out: &mut Vec<Piece>) -> bool {
        let Some((scanner, read)) = &mut self.forced else {
            return false;
        };
        for e in scanner.push(&self.buf[*read..]) {
            out.push(match e {
                ForcedEvent::Start(name) => Piece::CallStart(name),
                ForcedEvent::Arguments(a) => Piece::CallArguments(a),
            });
        }
        *read = self.buf.len();
        if scanner.started() {
            if at_end {
                self.buf.clear();
            }
            return true;
        }
        !at_end && !scanner.is_off()
    }

    /// A call region: its calls, or itself as content.
    fn region(&mut self, region: &str, out: &mut Vec<Piece>) {
        match self.syntax.parse_region(region, &self.tools) {
            Some(calls) => out.extend(calls.into_iter().map(Piece::Call)),
            None => self.content(region, out),
        }
    }

    /// The earliest marker in the buffer and where it starts.
    fn first_marker(&self) -> Option<(usize, &'static str)> {
        self.syntax
            .markers()
            .iter()
            .filter_map(|m| self.buf.find(m).map(|i| (i, *m)))
            .min_by_key(|&(i, _)| i)
    }

    /// The length of the longest end of `s` that a marker starts with (a marker that may be
    /// arriving).
    fn marker_prefix_len(&self, s: &str) -> usize {
        let markers = self.syntax.markers().iter();
        markers.map(|m| held_prefix_len(s, m)).max().unwrap_or(0)
    }

    fn content(&mut self, text: &str, out: &mut Vec<Piece>) {
        let text = if self.content_started {
            text
        } else {
            text.trim_start()
        };
        let body = text.trim_end();
        if body.is_empty() {
            self.pending_ws.push_str(text);
            return;
        }
        let mut piece = std::mem::take(&mut self.pending_ws);
        piece.push_str(body);
        self.pending_ws.push_str(&text[body.len()..]);
        self.content_started = true;
        match out.last_mut() {
            Some(Piece::Content(last)) => last.push_str(&piece),
            _ => out.push(Piece::Content(piece)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<String> {
        vec!["get_weather".into(), "add".into()]
    }

    /// (content, calls) of `text` pushed whole.
    fn whole(syntax: ToolSyntax, text: &str) -> (String, Vec<ParsedCall>) {
        let mut s = ToolCallStream::new(syntax, tools());
        let mut pieces = s.push(text);
        pieces.extend(s.finish());
        collect(pieces)
    }

    fn collect(pieces: Vec<Piece>) -> (String, Vec<ParsedCall>) {
        let mut content = String::new();
        let mut calls = Vec::new();
        for p in pieces {
            match p {
                Piece::Content(c) => content.push_str(&c),
                Piece::Call(c) => calls.push(c),
                Piece::CallStart(_) | Piece::CallArguments(_) => {
                    panic!("a stream made by `new` sent a call in pieces")
                }
            }
        }
        (content, calls)
    }

    /// Streams `text` split at every char boundary into two pieces, and one char at a time, and
    /// checks each agrees with the whole answer.
    fn streams_like_whole(syntax: ToolSyntax, text: &str) -> (String, Vec<ParsedCall>) {
        let want = whole(syntax, text);
        let cuts: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &cut in &cuts {
            let mut s = ToolCallStream::new(syntax, tools());
            let mut pieces = s.push(&text[..cut]);
            pieces.extend(s.push(&text[cut..]));
            pieces.extend(s.finish());
            assert_eq!(collect(pieces), want, "{syntax:?} cut at {cut} of {text:?}");
        }
        let mut s = ToolCallStream::new(syntax, tools());
        let mut pieces = Vec::new();
        for w in cuts.windows(2) {
            pieces.extend(s.push(&text[w[0]..w[1]]));
        }
        pieces.extend(s.finish());
        assert_eq!(collect(pieces), want, "{syntax:?} char by char: {text:?}");
        want
    }

    fn call(name: &str, args: &str) -> ParsedCall {
        ParsedCall {
            name: name.into(),
            arguments: args.into(),
        }
    }

    #[test]
    fn hermes_calls_among_text() {
        let text = "Let me check. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\"}}\n</tool_call>\n<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}}</tool_call>\n";
        let (content, calls) = streams_like_whole(ToolSyntax::Hermes, text);
        assert_eq!(content, "Let me check.");
        assert_eq!(
            calls,
            vec![
                call("get_weather", r#"{"city":"Zürich"}"#),
                call("add", r#"{"a":1}"#)
            ]
        );
    }

    #[test]
    fn hermes_bad_blocks_stay_content() {
        let bad_json = "<tool_call>{\"name\": \"add\", \"arguments\": {</tool_call> ok";
        let (content, calls) = streams_like_whole(ToolSyntax::Hermes, bad_json);
        assert!(calls.is_empty());
        assert_eq!(content, bad_json);
        let unknown = "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>";
        assert_eq!(streams_like_whole(ToolSyntax::Hermes, unknown).0, unknown);
        let unterminated = "a <tool_call>{\"name\": \"add\"";
        assert_eq!(
            streams_like_whole(ToolSyntax::Hermes, unterminated).0,
            unterminated
        );
        let cut_marker = "text ending in <tool_ca";
        assert_eq!(
            streams_like_whole(ToolSyntax::Hermes, cut_marker).0,
            cut_marker
        );
    }

    #[test]
    fn an_unterminated_but_complete_hermes_call_is_a_call() {
        let text = "<tool_call>{\"name\": \"add\", \"arguments\": {}}";
        let (content, calls) = streams_like_whole(ToolSyntax::Hermes, text);
        assert_eq!((content.as_str(), calls), ("", vec![call("add", "{}")]));
    }

    #[test]
    fn plain_text_passes_through() {
        for syntax in [
            ToolSyntax::Hermes,
            ToolSyntax::Llama3Json,
            ToolSyntax::Mistral,
        ] {
            let (content, calls) = streams_like_whole(syntax, "  The answer is <b>42</b> [1].\n");
            assert_eq!(content, "The answer is <b>42</b> [1].", "{syntax:?}");
            assert!(calls.is_empty());
        }
    }

    #[test]
    fn llama3_whole_answer_json() {
        let text = " {\"name\": \"add\", \"parameters\": {\"a\": 1}}";
        let (content, calls) = streams_like_whole(ToolSyntax::Llama3Json, text);
        assert_eq!(
            (content.as_str(), calls),
            ("", vec![call("add", r#"{"a":1}"#)])
        );
        let tagged = "<|python_tag|>{\"name\": \"add\", \"parameters\": {}}";
        assert_eq!(
            streams_like_whole(ToolSyntax::Llama3Json, tagged).1.len(),
            1
        );
        let not_a_call = "{\"answer\": 42}";
        let (content, calls) = streams_like_whole(ToolSyntax::Llama3Json, not_a_call);
        assert_eq!((content.as_str(), calls.len()), (not_a_call, 0));
    }

    #[test]
    fn mistral_calls_after_text_and_whole() {
        let text = "Sure. [TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1}}, {\"name\": \"add\", \"arguments\": {\"a\": 2}}]";
        let (content, calls) = streams_like_whole(ToolSyntax::Mistral, text);
        assert_eq!(content, "Sure.");
        assert_eq!(calls.len(), 2);
        let newer = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Oslo\"}";
        assert_eq!(
            streams_like_whole(ToolSyntax::Mistral, newer).1,
            vec![call("get_weather", r#"{"city":"Oslo"}"#)]
        );
        let unknown = "[{\"name\": \"nope\", \"arguments\": {}}]";
        assert_eq!(streams_like_whole(ToolSyntax::Mistral, unknown).0, unknown);
    }

    /// A streamed forced answer: (name, arguments) per call from the pieces, pushed `n` chars at
    /// a time, and any content.
    fn streamed_forced(text: &str, n: usize) -> (String, Vec<(String, String)>) {
        let mut s = ToolCallStream::streaming(ToolSyntax::ForcedJson, tools());
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        for piece in chars.chunks(n) {
            pieces.extend(s.push(&piece.iter().collect::<String>()));
        }
        pieces.extend(s.finish());
        let (mut content, mut calls) = (String::new(), Vec::<(String, String)>::new());
        for p in pieces {
            match p {
                Piece::Content(c) => content.push_str(&c),
                Piece::Call(c) => calls.push((c.name, c.arguments)),
                Piece::CallStart(name) => calls.push((name, String::new())),
                Piece::CallArguments(a) => calls.last_mut().unwrap().1.push_str(&a),
            }
        }
        (content, calls)
    }

    #[test]
    fn forced_calls_stream_in_pieces_that_make_the_whole_calls() {
        let text = r#"[{"name": "add", "arguments": {"a": 1, "b": [2, 3]}}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]"#;
        let (_, whole_calls) = whole(ToolSyntax::ForcedJson, text);
        for n in [1, 4, 1000] {
            let (content, calls) = streamed_forced(text, n);
            assert_eq!(content, "");
            assert_eq!(calls.len(), whole_calls.len());
            for ((name, args), want) in calls.iter().zip(&whole_calls) {
                assert_eq!(name, &want.name);
                let got: serde_json::Value = serde_json::from_str(args).unwrap();
                let want: serde_json::Value = serde_json::from_str(&want.arguments).unwrap();
                assert_eq!(got, want, "pieces of {n}");
            }
        }
        // The arguments go out before the answer ends.
        let mut s = ToolCallStream::streaming(ToolSyntax::ForcedJson, tools());
        let early = s.push(r#"{"name": "add", "arguments": {"a": "#);
        assert_eq!(
            early,
            vec![
                Piece::CallStart("add".into()),
                Piece::CallArguments("{\"a\": ".into())
            ]
        );
    }

    #[test]
    fn a_forced_answer_of_another_shape_is_read_whole() {
        for text in ["not json at all", r#"{"answer": 42}"#] {
            assert_eq!(
                streamed_forced(text, 3),
                (text.to_string(), vec![]),
                "{text}"
            );
        }
    }

    #[test]
    fn text_before_a_marker_streams_before_the_answer_ends() {
        let mut s = ToolCallStream::new(ToolSyntax::Hermes, tools());
        assert_eq!(s.push("Hello <tool"), vec![Piece::Content("Hello".into())]);
        assert_eq!(s.push("_call>{\"name\": \"add\"}"), vec![]);
        assert_eq!(s.push("</tool_call>"), vec![Piece::Call(call("add", "{}"))]);
        assert_eq!(s.push(" after"), vec![Piece::Content("  after".into())]);
    }
}
