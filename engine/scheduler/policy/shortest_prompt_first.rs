//! Waiting requests with the shortest prompts are admitted first (ties by arrival): lowers mean
//! time to first token when prompt lengths vary, and may starve long prompts under heavy load.

use std::cmp::Ordering;

use super::super::sequence::SeqState;
use super::Policy;

pub struct ShortestPromptFirst;

impl Policy for ShortestPromptFirst {
    fn compare_waiting(&self, a: &SeqState, b: &SeqState) -> Ordering {
        (a.num_prompt, a.arrival_order).cmp(&(b.num_prompt, b.arrival_order))
    }
}
