//! Prompt text for the load generator: random common words (about one token each), and for a
//! trace the same kind of text at its prompt lengths, with shared prefixes sharing their words.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sim::workload::TraceRequest;

const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are",
    "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by",
    "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when",
    "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if",
    "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her",
    "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go",
    "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water",
    "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new",
    "work", "part", "take", "get", "place", "made", "live", "where",
];

/// `n` words drawn from a small common vocabulary: most tokenizers spend about one token each.
pub fn random_words(rng: &mut StdRng, n: usize) -> String {
    words(rng, n).join(" ")
}

fn words(rng: &mut StdRng, n: usize) -> Vec<&'static str> {
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect()
}

/// `r.prompt_len` words for request number `index` of a trace: the group's shared prefix or the
/// blocks its `hash_ids` name come from generators seeded by the group or the block id, so two
/// requests that share them in the trace send the same leading text; the rest is the request's
/// own. (Words, not token ids: the server may not be tandem, and its tokenizer is unknown.)
pub fn trace_prompt(r: &TraceRequest, index: usize) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(r.prompt_len);
    let shared = match r.prefix_group {
        Some(_) => r.prefix_len.min(r.prompt_len),
        None => 0,
    };
    if let Some(group) = r.prefix_group {
        out.extend(words(&mut seeded(0x5EED, group as u64), shared));
    }
    if r.hash_block_len > 0 {
        for (b, id) in r.hash_ids.iter().enumerate() {
            let end = ((b + 1) * r.hash_block_len).min(r.prompt_len);
            if end <= out.len() {
                continue;
            }
            let block = words(&mut seeded(0xB10C, *id), r.hash_block_len);
            let skip = out.len().saturating_sub(b * r.hash_block_len);
            out.extend(&block[skip..end - b * r.hash_block_len]);
        }
    }
    let own = r.prompt_len - out.len();
    out.extend(words(&mut seeded(0xA11CE, index as u64), own));
    out.join(" ")
}

fn seeded(kind: u64, id: u64) -> StdRng {
    StdRng::seed_from_u64(kind << 48 ^ id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_the_asked_number_of_words() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(random_words(&mut rng, 7).split(' ').count(), 7);
    }

    #[test]
    fn trace_prompts_share_the_words_their_blocks_share() {
        let r = |len, ids: &[u64]| TraceRequest {
            prompt_len: len,
            output_len: 1,
            hash_ids: ids.to_vec(),
            hash_block_len: 4,
            ..Default::default()
        };
        let words = |r: &TraceRequest, i| -> Vec<String> {
            trace_prompt(r, i).split(' ').map(str::to_string).collect()
        };
        let a = words(&r(10, &[1, 2, 3]), 0);
        let b = words(&r(12, &[1, 2, 9]), 1);
        let c = words(&r(14, &[1, 2, 3]), 2);
        assert_eq!((a.len(), b.len(), c.len()), (10, 12, 14));
        assert_eq!(a[..8], b[..8]);
        assert_ne!(a[8..10], b[8..10]);
        assert_eq!(a[..], c[..10], "the third block cut at the prompt's end");
        assert_ne!(
            c[12..],
            words(&r(14, &[1, 2, 3]), 3)[12..],
            "tails are per request"
        );
        let grouped = TraceRequest {
            prompt_len: 6,
            output_len: 1,
            prefix_group: Some(7),
            prefix_len: 3,
            ..Default::default()
        };
        let (g, h) = (words(&grouped, 0), words(&grouped, 1));
        assert_eq!(g[..3], h[..3]);
        assert_eq!(g.len(), 6);
    }
}
