//! OpenAI's `logit_bias`: a per-token value added to the logit before sampling (±100 in
//! effect bans or forces a token).

/// Adds each `(token, bias)` to `logits`; ids past the row are ignored (validation refuses them).
pub fn apply(bias: &[(u32, f32)], logits: &mut [f32]) {
    for &(id, b) in bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l += b;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bias_is_added_per_token() {
        let mut l = vec![1.0f32, 2.0, 3.0];
        super::apply(&[(0, 100.0), (2, -5.0), (7, 1.0)], &mut l);
        assert_eq!(l, vec![101.0, 2.0, -2.0]);
    }
}
