//! From token ids to streamed text: [`IncrementalDetokenizer`] turns one token at a time into
//! text deltas, [`StopMatcher`] cuts the text at stop strings that may straddle deltas.

use anyhow::Result;

use crate::model::tokenizer::Tokenizer;

/// Prefix windows longer than this many tokens are dropped from the id buffer; they are never
/// decoded again.
const COMPACT_AFTER: usize = 256;

/// Turns a stream of token ids into text deltas that never split a UTF-8 character or a
/// multi-token glyph (prefix/read offsets, as vLLM/TGI do: decode `ids[prefix..]` and
/// `ids[prefix..read]`, emit the difference only when it doesn't end in U+FFFD).
///
/// Why not decode each token alone: byte-level tokenizers split multi-byte characters across
/// tokens (one token alone decodes to U+FFFD), and SentencePiece-style decoders render a token
/// differently at the start of a string (the leading space is stripped). Decoding a small window
/// that starts at the previous emission point (`prefix_offset`) and diffing it against the same
/// window without the new tokens (`..read_offset`) gives exactly the text the new tokens add, in
/// context, at a cost that does not grow with the output: each push decodes only the tokens since
/// the last emission. A window ending in U+FFFD is an incomplete character: hold it back until a
/// later token completes it (or [`IncrementalDetokenizer::flush`] gives up at the end).
#[derive(Debug, Clone, Default)]
pub struct IncrementalDetokenizer {
    /// Context and generated ids from `prefix_offset` on (older ones are dropped).
    ids: Vec<u32>,
    /// Start of the decode window: the end of the text emitted before the last emission.
    prefix_offset: usize,
    /// End of the text emitted so far.
    read_offset: usize,
}

impl IncrementalDetokenizer {
    /// `context`: the last few prompt tokens (so the first generated token decodes with the right
    /// leading space for tokenizers that need it).
    pub fn new(context: &[u32]) -> Self {
        IncrementalDetokenizer {
            ids: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
        }
    }

    /// Adds one token; returns the newly completed text (possibly empty). Special tokens are
    /// skipped, and so are ids outside the vocabulary (as `Tokenizer::decode` does), so the
    /// deltas always add up to `decode(ids, skip_special_tokens = true)`.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        if tok.id_to_token(id).is_none() || tok.is_special(id) {
            return Ok(String::new());
        }
        self.ids.push(id);
        let prefix_text = tok.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let new_text = tok.decode(&self.ids[self.prefix_offset..], true)?;
        if new_text.len() <= prefix_text.len() || new_text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let delta = suffix_after(&new_text, &prefix_text).to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        if self.prefix_offset >= COMPACT_AFTER {
            self.ids.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
        Ok(delta)
    }

    /// Any text still held back (e.g. an incomplete character at the end), for when the stream
    /// ends. Pushing after a flush starts afresh, with nothing held.
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<String> {
        if self.read_offset >= self.ids.len() {
            return Ok(String::new());
        }
        let prefix_text = tok.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let new_text = tok.decode(&self.ids[self.prefix_offset..], true)?;
        let delta = suffix_after(&new_text, &prefix_text).to_string();
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
        Ok(delta)
    }
}

/// The part of `new` after `prefix`. Normally `new` starts with `prefix`; when it does not (the
/// new tokens completed a character the prefix window ended in the middle of, so the prefix's
/// U+FFFD became a real character) it is the part after their longest common prefix, cut on a
/// character boundary.
fn suffix_after<'a>(new: &'a str, prefix: &str) -> &'a str {
    if let Some(rest) = new.strip_prefix(prefix) {
        return rest;
    }
    let common = new
        .char_indices()
        .zip(prefix.chars())
        .find(|&((_, a), b)| a != b)
        .map_or(new.len().min(prefix.len()), |((i, _), _)| i);
    // `common` is a char boundary of `new`: either a char_indices index or a length reached by
    // matching whole chars of both strings.
    new.get(common..).unwrap_or("")
}

/// Finds stop strings across delta boundaries; holds back text that may be the start of a stop
/// string.
///
/// Held back is exactly the longest suffix of the text so far that is a proper prefix of some
/// stop string, so at most (longest stop − 1) bytes, always whole characters, and text that turns
/// out not to start a stop string is released as soon as that is known. When several stop strings
/// complete within the same delta, the one that starts earliest wins; a stop string completed by
/// an earlier delta wins over one that would only complete later (generation stops at the first
/// stop string seen, as in vLLM).
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    /// Non-empty stop strings.
    stops: Vec<String>,
    /// Length in bytes of the longest stop string.
    longest: usize,
    /// Text received but not yet emitted (a possible start of a stop string).
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty strings are ignored (they would match before any text).
    pub fn new(stops: &[String]) -> Self {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        StopMatcher {
            stops,
            longest,
            held: String::new(),
            stopped: false,
        }
    }

    /// Feeds a delta; returns (text safe to emit now, whether a stop string was found). On a
    /// match, the returned text ends right before the stop string, and nothing after it is ever
    /// emitted.
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        if self.stops.is_empty() {
            return (delta.to_string(), false);
        }
        self.held.push_str(delta);
        let first_match = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(start) = first_match {
            self.held.truncate(start);
            self.stopped = true;
            return (std::mem::take(&mut self.held), true);
        }
        let keep_from = self.partial_match_start();
        let rest = self.held.split_off(keep_from);
        (std::mem::replace(&mut self.held, rest), false)
    }

    /// The held-back text when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Whether a stop string was found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Where the longest suffix of `held` that is a proper prefix of a stop string starts
    /// (`held.len()` when there is none). Only the last `longest - 1` bytes can qualify.
    fn partial_match_start(&self) -> usize {
        let len = self.held.len();
        let first = len.saturating_sub(self.longest.saturating_sub(1));
        (first..len)
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;
    use std::sync::OnceLock;

    /// The tiny byte-level BPE tokenizer (512 tokens: 256 bytes, 252 merges, 4 special).
    fn tiny() -> &'static Tokenizer {
        static TOK: OnceLock<Tokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/tiny-llama");
            Tokenizer::from_hf_dir(&dir).expect("tiny tokenizer loads")
        })
    }

    /// All deltas of streaming `ids` after `context`, then the flush.
    fn stream(tok: &Tokenizer, context: &[u32], ids: &[u32]) -> (Vec<String>, String) {
        let mut d = IncrementalDetokenizer::new(context);
        let deltas = ids.iter().map(|&id| d.push(tok, id).unwrap()).collect();
        (deltas, d.flush(tok).unwrap())
    }

    /// Streams `ids` and checks the deltas against the one-shot decode.
    fn check_stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
        let (deltas, rest) = stream(tok, &[], ids);
        let whole = tok.decode(ids, true).unwrap();
        let joined = deltas.concat() + &rest;
        assert_eq!(joined, whole, "ids {ids:?}");
        for d in &deltas {
            assert!(
                !d.ends_with('\u{FFFD}'),
                "delta {d:?} ends in U+FFFD (ids {ids:?})"
            );
        }
        deltas
    }

    const TEXTS: &[&str] = &[
        "Hello world",
        "The quick brown fox jumps over the lazy dog.",
        "héllo wörld, ça va?",
        "日本語のテキストです",
        "emoji 😀🎉 and a family 👨‍👩‍👧 ok",
        "flags 🇫🇷🇯🇵, math ∑∫√ and ✓",
        "  leading and trailing spaces  ",
        "newlines\n\nand\ttabs",
        "",
    ];

    #[test]
    fn deltas_add_up_to_the_full_decode() {
        let tok = tiny();
        for text in TEXTS {
            let ids = tok.encode(text, false).unwrap();
            let deltas = check_stream(tok, &ids);
            assert_eq!(deltas.concat() + "", tok.decode(&ids, true).unwrap());
        }
    }

    #[test]
    fn multi_byte_characters_are_held_until_complete() {
        let tok = tiny();
        let ids = tok.encode("a😀b", false).unwrap();
        // The tiny vocabulary has no emoji merges: 😀 is four byte tokens.
        assert!(ids.len() >= 5, "{ids:?}");
        let deltas = check_stream(tok, &ids);
        assert!(deltas.iter().any(String::is_empty));
        assert!(deltas.contains(&"😀".to_string()), "{deltas:?}");
        // Cut mid-character: the flush gives up and returns the lossy rest.
        let (deltas, rest) = stream(tok, &[], &ids[..3]);
        assert_eq!(deltas.concat(), "a");
        assert_eq!(rest, tok.decode(&ids[1..3], true).unwrap());
        assert!(rest.contains('\u{FFFD}'));
    }

    #[test]
    fn special_and_unknown_ids_are_skipped() {
        let tok = tiny();
        let mut ids = tok.encode("Hi there", false).unwrap();
        ids.insert(1, 2); // <|im_end|>
        ids.insert(0, 3); // <|begin_of_text|>
        ids.push(0); // <|endoftext|>
        ids.push(100_000); // not in the vocabulary
        ids.push(u32::MAX);
        let deltas = check_stream(tok, &ids);
        assert_eq!(deltas.concat(), "Hi there");
        assert!(tok.is_special(0) && !tok.is_special(100) && !tok.is_special(u32::MAX));
        assert!(tok.id_to_token(100_000).is_none());
    }

    #[test]
    fn context_is_not_emitted() {
        let tok = tiny();
        let prompt = tok.encode("Once upon a", false).unwrap();
        let all = tok.encode("Once upon a time there was", false).unwrap();
        assert_eq!(
            all[..prompt.len()],
            prompt[..],
            "prompt tokenizes as a prefix"
        );
        let (deltas, rest) = stream(tok, &prompt, &all[prompt.len()..]);
        assert_eq!(deltas.concat() + &rest, " time there was");
    }

    #[test]
    fn long_streams_compact_the_window() {
        let tok = tiny();
        let text = "lorem ipsum dolor sit amet ✓ 😀 ".repeat(40);
        let ids = tok.encode(&text, false).unwrap();
        assert!(ids.len() > 2 * COMPACT_AFTER);
        let mut d = IncrementalDetokenizer::new(&[]);
        let mut out = String::new();
        for &id in &ids {
            out += &d.push(tok, id).unwrap();
            assert!(
                d.ids.len() <= COMPACT_AFTER + 8,
                "window grew to {}",
                d.ids.len()
            );
        }
        out += &d.flush(tok).unwrap();
        assert_eq!(out, text);
    }

    #[test]
    fn smollm2_deltas_add_up() {
        let path = crate::model::default_model::default_model_path();
        if !path.exists() {
            eprintln!("skipped: SmolLM2 not found at {}", path.display());
            return;
        }
        let tok = crate::model::loader::ModelSource::open(&path)
            .unwrap()
            .tokenizer;
        for text in TEXTS {
            let ids = tok.encode(text, false).unwrap();
            check_stream(&tok, &ids);
        }
        let prompt = tok
            .encode(
                "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                false,
            )
            .unwrap();
        let answer = tok.encode("Hello! 😀 How can I help?", false).unwrap();
        let (deltas, rest) = stream(&tok, &prompt[prompt.len() - 5..], &answer);
        assert_eq!(deltas.concat() + &rest, "Hello! 😀 How can I help?");
    }

    proptest! {
        #[test]
        fn random_ids_stream_like_the_full_decode(ids in proptest::collection::vec(0u32..520, 0..48)) {
            // 0..4 are special, 512..520 are outside the vocabulary.
            check_stream(tiny(), &ids);
        }

        #[test]
        fn random_byte_tokens_stream_like_the_full_decode(
            ids in proptest::collection::vec(4u32..260, 0..32)
        ) {
            // Single-byte tokens only: lots of broken and completed UTF-8 sequences.
            check_stream(tiny(), &ids);
        }
    }

    // --- StopMatcher ---

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// Feeds `deltas`, returns everything emitted (flushing when no stop was found) and whether a
    /// stop string was found.
    fn feed(m: &mut StopMatcher, deltas: &[&str]) -> (String, bool) {
        let mut out = String::new();
        for d in deltas {
            let (text, stop) = m.push(d);
            out += &text;
            if stop {
                assert_eq!(m.flush(), "");
                return (out, true);
            }
        }
        out += &m.flush();
        (out, false)
    }

    #[test]
    fn stop_spanning_deltas_is_cut() {
        let mut m = matcher(&["o w"]);
        assert_eq!(m.push("Hel"), ("Hel".to_string(), false));
        assert_eq!(m.push("lo wor"), ("l".to_string(), true));
        assert_eq!(m.push("ld"), (String::new(), true));
        assert!(m.stopped());
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn stop_at_the_very_start() {
        assert_eq!(
            feed(&mut matcher(&["Stop"]), &["Stop", " here"]),
            (String::new(), true)
        );
        assert_eq!(
            feed(&mut matcher(&["Stop"]), &["St", "op!"]),
            (String::new(), true)
        );
    }

    #[test]
    fn earliest_stop_wins() {
        assert_eq!(
            feed(&mut matcher(&["world", "lo"]), &["hello world"]),
            ("hel".into(), true)
        );
        assert_eq!(
            feed(&mut matcher(&["lo", "hell"]), &["he", "llo"]),
            ("".into(), true)
        );
        // A stop completed by an earlier delta wins over one that would complete later.
        assert_eq!(
            feed(&mut matcher(&["bcde", "c"]), &["ab", "c", "de"]),
            ("ab".into(), true)
        );
    }

    #[test]
    fn failed_partial_match_is_released() {
        let mut m = matcher(&["abc"]);
        assert_eq!(m.push("xab"), ("x".to_string(), false));
        assert_eq!(m.push("d"), ("abd".to_string(), false));
        assert_eq!(m.push("a"), (String::new(), false));
        assert_eq!(m.flush(), "a");
        // No stop strings: everything passes straight through; empty ones are ignored.
        assert_eq!(feed(&mut matcher(&[]), &["a", "b"]), ("ab".into(), false));
        assert_eq!(feed(&mut matcher(&[""]), &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn multi_byte_characters_around_held_text() {
        let mut m = matcher(&["日本!"]);
        assert_eq!(m.push("今日"), ("今".to_string(), false));
        assert_eq!(m.push("本?"), ("日本?".to_string(), false));
        assert_eq!(
            feed(&mut matcher(&["日本!"]), &["今日", "本", "!x"]),
            ("今".into(), true)
        );
        let mut m = matcher(&["😀x"]);
        assert_eq!(m.push("a😀"), ("a".to_string(), false));
        assert_eq!(m.push("y"), ("😀y".to_string(), false));
        // A stop whose first character is multi-byte and shares a leading byte with the text's.
        let mut m = matcher(&["é!"]);
        assert_eq!(m.push("è"), ("è".to_string(), false));
        assert_eq!(m.push("é"), (String::new(), false));
        assert_eq!(m.push("!"), (String::new(), true));
    }

    proptest! {
        #[test]
        fn stop_matcher_agrees_with_a_naive_scan(
            text in "[ab😀é]{0,24}",
            cuts in proptest::collection::vec(0usize..30, 0..8),
            stops in proptest::collection::vec("[ab😀é]{1,4}", 0..4),
        ) {
            // Split `text` at the given char positions into deltas.
            let chars: Vec<char> = text.chars().collect();
            let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(chars.len())).collect();
            bounds.push(0);
            bounds.push(chars.len());
            bounds.sort_unstable();
            bounds.dedup();
            let deltas: Vec<String> = bounds
                .windows(2)
                .map(|w| chars[w[0]..w[1]].iter().collect())
                .collect();
            // Reference: after each delta, the first stop (by start) contained in the text so
            // far ends everything.
            let mut want = (text.clone(), false);
            let mut so_far = String::new();
            for d in &deltas {
                so_far += d;
                if let Some(start) = stops.iter().filter_map(|s| so_far.find(s.as_str())).min() {
                    want = (so_far[..start].to_string(), true);
                    break;
                }
            }
            let mut m = StopMatcher::new(&stops);
            let longest = stops.iter().map(String::len).max().unwrap_or(0);
            let (mut out, mut fed, mut stopped) = (String::new(), 0, false);
            for d in &deltas {
                let (t, s) = m.push(d);
                out += &t;
                fed += d.len();
                if s {
                    stopped = true;
                    break;
                }
                prop_assert!(fed - out.len() < longest.max(1), "held back {} bytes", fed - out.len());
            }
            out += &m.flush();
            prop_assert_eq!((out, stopped), want);
        }
    }
}
