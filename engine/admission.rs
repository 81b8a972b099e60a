//! Whether a request may be queued: the one place its size and the queue are checked.
//!
//! Each rule is its own function because the engine applies them where the facts are known: the
//! context as the request arrives (the server, then [`EngineHandle::submit`]), the queue as a
//! handle reserves its place, the cache on the engine thread, which owns the block allocator.
//! [`Admission::check`] applies all three, in that order, for a caller that knows everything at
//! once (the simulator).
//!
//! [`EngineHandle::submit`]: super::EngineHandle::submit

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Its prompt plus `max_tokens` exceeds the model's context.
    #[error(
        "this model's maximum context length is {max_context} tokens; the request asks for \
         {total} ({prompt_tokens} in the prompt + {max_tokens} to generate)"
    )]
    ContextLength {
        max_context: usize,
        /// Prompt plus `max_tokens` (saturating).
        total: usize,
        prompt_tokens: usize,
        max_tokens: usize,
    },
    /// It needs more KV-cache blocks than the whole cache has, so it could never run.
    #[error("the request needs {blocks_needed} KV-cache blocks but the cache has {capacity}")]
    TooLarge {
        blocks_needed: usize,
        capacity: usize,
    },
    /// `waiting` requests already wait for admission, as many as the queue takes.
    #[error("the request queue is full ({waiting} waiting)")]
    QueueFull { waiting: usize },
}

/// Prompt plus generated tokens must fit the model's context.
pub fn check_context(
    prompt_tokens: usize,
    max_tokens: usize,
    max_context: usize,
) -> Result<(), Rejection> {
    let total = prompt_tokens.saturating_add(max_tokens);
    if total > max_context {
        return Err(Rejection::ContextLength {
            max_context,
            total,
            prompt_tokens,
            max_tokens,
        });
    }
    Ok(())
}

/// Prompt plus generated tokens must fit the whole KV cache (`num_blocks` of `block_size`).
pub fn check_cache(
    prompt_tokens: usize,
    max_tokens: usize,
    block_size: usize,
    num_blocks: usize,
) -> Result<(), Rejection> {
    let blocks_needed = prompt_tokens
        .saturating_add(max_tokens)
        .div_ceil(block_size);
    if blocks_needed > num_blocks {
        return Err(Rejection::TooLarge {
            blocks_needed,
            capacity: num_blocks,
        });
    }
    Ok(())
}

/// A new request may wait only while fewer than `max_queue` already do.
pub fn check_queue(waiting: usize, max_queue: usize) -> Result<(), Rejection> {
    if waiting >= max_queue {
        return Err(Rejection::QueueFull { waiting });
    }
    Ok(())
}

/// Every limit a request is admitted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Prompt plus generated tokens may not exceed this.
    pub max_context: usize,
    pub block_size: usize,
    /// KV-cache blocks in all.
    pub num_blocks: usize,
    /// Most requests waiting for their first admission.
    pub max_queue: usize,
}

impl Admission {
    /// Whether a request of `prompt_tokens` + `max_tokens` may join `waiting` queued requests;
    /// the first rule it breaks, in the engine's order, if not.
    pub fn check(
        &self,
        prompt_tokens: usize,
        max_tokens: usize,
        waiting: usize,
    ) -> Result<(), Rejection> {
        check_context(prompt_tokens, max_tokens, self.max_context)?;
        check_queue(waiting, self.max_queue)?;
        check_cache(prompt_tokens, max_tokens, self.block_size, self.num_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_counts_prompt_and_generated_tokens() {
        assert_eq!(check_context(200, 56, 256), Ok(()));
        let e = check_context(200, 57, 256).unwrap_err();
        assert_eq!(
            e,
            Rejection::ContextLength {
                max_context: 256,
                total: 257,
                prompt_tokens: 200,
                max_tokens: 57
            }
        );
        assert_eq!(
            e.to_string(),
            "this model's maximum context length is 256 tokens; the request asks for 257 \
             (200 in the prompt + 57 to generate)"
        );
        assert!(check_context(1, usize::MAX, 256).is_err(), "no overflow");
    }

    #[test]
    fn the_cache_must_hold_the_whole_request() {
        // 4 blocks of 16 tokens hold 64.
        assert_eq!(check_cache(60, 4, 16, 4), Ok(()));
        let e = check_cache(60, 5, 16, 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the request needs 5 KV-cache blocks but the cache has 4"
        );
        assert!(check_cache(1, usize::MAX, 16, 4).is_err(), "no overflow");
    }

    #[test]
    fn the_queue_takes_up_to_its_bound() {
        assert_eq!(check_queue(2, 3), Ok(()));
        assert_eq!(check_queue(3, 3), Err(Rejection::QueueFull { waiting: 3 }));
        assert_eq!(
            Rejection::QueueFull { waiting: 3 }.to_string(),
            "the request queue is full (3 waiting)"
        );
    }

    #[test]
    fn all_rules_apply_in_the_engines_order() {
        let a = Admission {
            max_context: 100,
            block_size: 16,
            num_blocks: 2,
            max_queue: 1,
        };
        assert_eq!(a.check(10, 10, 0), Ok(()));
        assert!(matches!(
            a.check(90, 20, 5),
            Err(Rejection::ContextLength { .. })
        ));
        assert!(matches!(
            a.check(40, 20, 1),
            Err(Rejection::QueueFull { .. })
        ));
        assert!(matches!(
            a.check(40, 20, 0),
            Err(Rejection::TooLarge { .. })
        ));
    }
}
