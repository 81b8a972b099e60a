//! The batch sizes decode steps are padded to so that a few captured graphs serve every size.

/// The graph batch size for a decode step of `n` sequences when graphs hold at most `max`:
/// 1, 2, 4, 8, then steps of 8 up to 64, then steps of 16 (and `max` itself as the last), or
/// `None` when `n` is 0 or above `max`. Padding costs at most 7 rows up to 64 and 15 above it;
/// the number of graphs stays small (about 20 for 256 sequences).
pub fn graph_batch_size(n: usize, max: usize) -> Option<usize> {
    if n == 0 || n > max {
        return None;
    }
    let bucket = match n {
        1 | 2 => n,
        3..=4 => 4,
        5..=64 => n.next_multiple_of(8),
        _ => n.next_multiple_of(16),
    };
    Some(bucket.min(max))
}

#[cfg(test)]
mod tests {
    use super::graph_batch_size;

    #[test]
    fn buckets_cover_every_size_with_little_padding() {
        let sizes: Vec<_> = (1..=256)
            .map(|n| graph_batch_size(n, 256).unwrap())
            .collect();
        for (n, &b) in (1..=256).zip(&sizes) {
            assert!(b >= n, "{n} -> {b}");
            assert!(b - n < if n <= 64 { 8 } else { 16 }, "{n} -> {b}");
        }
        let mut distinct = sizes.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 4 + 7 + 12, "{distinct:?}");
        assert_eq!(graph_batch_size(0, 256), None);
        assert_eq!(graph_batch_size(257, 256), None);
        // The largest bucket is capped by the capacity.
        assert_eq!(graph_batch_size(97, 100), Some(100));
    }
}
