//! Turning accepted tokens into a request's events: detokenize, find stops, emit.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::hooks::EngineHooks;
use crate::engine::request::{Event, FinishReason, RequestId, SamplingParams, TokenLogprob};
use crate::model::detokenizer::{IncrementalDetokenizer, StopMatcher};
use crate::model::tokenizer::Tokenizer;

/// Prompt tokens given to the detokenizer as context for the first generated token.
const DETOKENIZER_CONTEXT: usize = 6;

pub struct RequestOutput {
    id: RequestId,
    pub events: UnboundedSender<Event>,
    params: Arc<SamplingParams>,
    detok: IncrementalDetokenizer,
    stops: StopMatcher,
    /// EOS ids (unless ignore_eos) and the request's stop token ids. A constrained request
    /// always stops at EOS: its grammar allows EOS only once the output is complete.
    stop_ids: Vec<u32>,
}

/// What one token did to its request.
pub struct TokenResult {
    pub event: Event,
    pub finish: Option<FinishReason>,
}

impl RequestOutput {
    pub fn new(
        id: RequestId,
        events: UnboundedSender<Event>,
        params: Arc<SamplingParams>,
        prompt: &[u32],
        eos_ids: &[u32],
    ) -> Self {
        let mut stop_ids = params.stop_token_ids.clone();
        if !params.ignore_eos || params.constraint.is_some() {
            stop_ids.extend_from_slice(eos_ids);
        }
        let context = &prompt[prompt.len().saturating_sub(DETOKENIZER_CONTEXT)..];
        RequestOutput {
            id,
            events,
            detok: IncrementalDetokenizer::new(context),
            stops: StopMatcher::new(&params.stop),
            params,
            stop_ids,
        }
    }

    /// Handles the request's `num_output`-th generated token (1-based), `total` tokens in all.
    pub fn on_token(
        &mut self,
        tok: &Tokenizer,
        hooks: &dyn EngineHooks,
        token: u32,
        logprob: Option<TokenLogprob>,
        (num_output, total): (usize, usize),
        max_context: usize,
    ) -> anyhow::Result<TokenResult> {
        let mut finish = None;
        let mut text = String::new();
        let mut stop_string_hit = false;
        if self.stop_ids.contains(&token) {
            finish = Some(FinishReason::Stop);
        } else {
            hooks.before_detokenizing(self.id);
            let delta = self.detok.push(tok, token)?;
            let (emit, hit) = self.stops.push(&delta);
            text = emit;
            stop_string_hit = hit;
        }
        if stop_string_hit {
            finish = Some(FinishReason::Stop);
        } else if finish.is_none() && (num_output >= self.params.max_tokens || total >= max_context)
        {
            finish = Some(FinishReason::Length);
        }
        if finish.is_some() && !stop_string_hit {
            // Ending for another reason than a stop string: release what was held back
            // (an unfinished character, a possible start of a stop string).
            let tail = self.detok.flush(tok)?;
            let (emit, hit) = self.stops.push(&tail);
            text.push_str(&emit);
            if !hit {
                text.push_str(&self.stops.flush());
            }
        }
        let logprobs = logprob.into_iter().collect();
        Ok(TokenResult {
            event: Event::Tokens {
                ids: vec![token],
                text,
                logprobs,
            },
            finish,
        })
    }
}
