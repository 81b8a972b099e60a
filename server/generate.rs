//! The driver both generation endpoints share: read and validate the body, tokenize (off the
//! async threads), check the context length, submit `n` engine requests, then either collect them
//! into one JSON response or stream them as server-sent events. Only the wire format differs
//! between the endpoints: the driver is generic over [`WireFormat`], which `completions.rs` and
//! `chat.rs` implement.
//!
//! Cancellation: each engine request is owned by a small forwarding task that drops it (which
//! aborts it in the engine) as soon as the consumer is gone — the handler future (non-streaming;
//! hyper drops it when the client disconnects) or the SSE body (streaming).

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

use crate::engine::handle::{RequestStream, SubmitError};
use crate::engine::request::{
    Event, FinishReason, Request as EngineRequest, RequestMetrics, TokenLogprob, Usage,
};

use super::body::read_json;
use super::error::ApiError;
use super::job::{Choice, Job};
use super::metrics::Metrics;
use super::openai::{new_id, now_unix};
use super::panic::catch_unwind;
use super::prompt::prompt_ids;
use super::sse::{self, Body, DONE};
use super::state::{ActiveGuard, AppState};
use super::tools::output::ChatOutput;
use super::validate::{
    check_context, validate, Endpoint, Input, Limits, Prompt, ValidRequest, ValidationError,
};
use super::wire::WireFormat;

/// Answers one request to the endpoint whose wire format is `W`.
pub async fn handle<W: WireFormat>(
    req: Request<Incoming>,
    state: Arc<AppState>,
) -> Result<Response<Body>, ApiError> {
    let received = Instant::now();
    let guard = state
        .enter()
        .ok_or_else(|| ApiError::unavailable("the server is shutting down"))?;
    let body = read_json(req, state.cfg.max_body_bytes, state.cfg.body_read_timeout).await?;
    let limits = Limits {
        vocab_size: state.handle.model().vocab_size,
    };
    let valid = validate(&body, W::ENDPOINT, limits)?;
    if let Some(m) = &valid.model {
        if m != state.model_name() {
            return Err(ApiError::model_not_found(m));
        }
    }
    // Templates and tokenizers are CPU work proportional to the (4 MiB-bounded) input.
    let st = state.clone();
    let (valid, prompt_ids) = tokio::task::spawn_blocking(move || prepare::<W>(&st, valid))
        .await
        .map_err(|e| ApiError::internal(format!("preparing the prompt failed: {e}")))??;
    let job = Job {
        id: new_id(W::ID_PREFIX),
        created: now_unix(),
        model: state.model_name().to_string(),
        n: valid.n,
        want_logprobs: valid.want_logprobs,
        include_usage: valid.include_usage,
        prompt_tokens: prompt_ids.len(),
        received,
        tokenizer: state.tokenizer.clone(),
        chat_output: chat_output(&state, &valid, &prompt_ids),
    };
    let events = submit_all(&state, &valid, prompt_ids)?;
    if valid.stream {
        Ok(stream::<W>(state, job, events, guard))
    } else {
        collect::<W>(&state, &job, events).await
    }
}

/// The reader of chat answers for reasoning and tool calls, if they need one.
fn chat_output(state: &AppState, valid: &ValidRequest, prompt_ids: &[u32]) -> Option<ChatOutput> {
    if valid.endpoint != Endpoint::Chat {
        return None;
    }
    let support = &state.output_support;
    ChatOutput::new(
        support,
        valid.tools.as_ref(),
        &state.tokenizer,
        prompt_ids,
        valid.n,
    )
}

/// The prompt's token ids and `params.max_tokens` decided from them.
fn prepare<W: WireFormat>(
    state: &AppState,
    mut valid: ValidRequest,
) -> Result<(ValidRequest, Vec<u32>), ApiError> {
    let text_bytes = match &valid.input {
        Input::Prompt(Prompt::Text(t)) => t.len(),
        Input::Prompt(Prompt::Ids(_)) => 0,
        Input::Messages(m) => m
            .iter()
            .filter_map(|m| m["content"].as_str())
            .map(str::len)
            .sum(),
    };
    if text_bytes > state.max_text_bytes {
        return Err(ValidationError::TextTooLong {
            max_context: state.handle.model().max_context,
            bytes: text_bytes,
            max_bytes: state.max_text_bytes,
            input: W::INPUT,
        }
        .into());
    }
    let ids = prompt_ids(state, &valid.input, &valid.template, valid.tools.as_ref())?;
    if ids.is_empty() {
        return Err(ValidationError::Empty(W::INPUT).into());
    }
    let max_context = state.handle.model().max_context;
    let max_tokens = valid
        .max_tokens
        .unwrap_or_else(|| W::default_max_tokens(ids.len(), max_context));
    check_context(ids.len(), max_tokens, max_context, valid.endpoint)?;
    valid.params.max_tokens = max_tokens;
    if let Some(c) = &valid.constraint {
        let invalid = |why: String| ValidationError::Invalid {
            param: c.param.to_string(),
            why,
        };
        let compiler = state
            .grammars()
            .map_err(|e| invalid(format!("structured outputs are unavailable: {e}")))?;
        let grammar = compiler
            .compile(&c.spec)
            .map_err(|e| invalid(format!("cannot be enforced: {e}")))?;
        valid.params.constraint = Some(grammar);
        for _ in 0..valid.n {
            state.grammar_stats.request_constrained();
        }
    }
    Ok((valid, ids))
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull(waiting) => ApiError::queue_full(waiting),
        SubmitError::ShuttingDown => ApiError::unavailable("the server is shutting down"),
        SubmitError::EngineDead(why) => {
            ApiError::unavailable(format!("the engine has stopped: {why}"))
        }
        SubmitError::Invalid(why) => ApiError::bad_request(why, None),
    }
}

type Events = mpsc::UnboundedReceiver<(usize, Event)>;

/// Submits the `n` choices (choice `i` seeded `seed + i`) and merges their events. If one
/// submission fails the ones before it are dropped, which aborts them.
fn submit_all(
    state: &AppState,
    valid: &ValidRequest,
    prompt_ids: Vec<u32>,
) -> Result<Events, ApiError> {
    let mut streams = Vec::with_capacity(valid.n);
    for i in 0..valid.n {
        let mut params = valid.params.clone();
        params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
        let mut request = EngineRequest::new(prompt_ids.clone(), params);
        request.priority = valid.priority;
        request.client = valid.user.as_deref().map(Arc::from);
        request.ttft_slo = valid.ttft_slo;
        streams.push(state.handle.submit(request).map_err(submit_error)?);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    for (i, s) in streams.into_iter().enumerate() {
        tokio::spawn(forward(i, s, tx.clone()));
    }
    Ok(rx)
}

/// Moves one request's events to the merged channel; returns (dropping the stream, so aborting
/// the request) as soon as nobody listens any more.
async fn forward(
    index: usize,
    mut stream: RequestStream,
    tx: mpsc::UnboundedSender<(usize, Event)>,
) {
    loop {
        let ev = tokio::select! {
            _ = tx.closed() => return,
            ev = stream.recv() => ev,
        };
        let ev = ev.unwrap_or_else(|| Event::Finished {
            reason: FinishReason::Error("the engine stopped before the request finished".into()),
            usage: Usage::default(),
            metrics: RequestMetrics::default(),
        });
        let last = matches!(ev, Event::Finished { .. });
        if tx.send((index, ev)).is_err() || last {
            return;
        }
    }
}

/// Counts a client disconnect if dropped before [`disarm`](Self::disarm).
struct DisconnectGuard<'a>(Option<&'a Metrics>);

impl DisconnectGuard<'_> {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for DisconnectGuard<'_> {
    fn drop(&mut self) {
        if let Some(metrics) = self.0 {
            metrics.client_disconnected();
        }
    }
}

/// The error for a request that ended in `FinishReason::Error(why)`: 503 when the engine has
/// died (the request may succeed elsewhere or after a restart), 500 otherwise.
fn generation_error(state: &AppState, why: &str) -> ApiError {
    if state.handle.is_alive() {
        ApiError::internal(format!("generation failed: {why}"))
    } else {
        ApiError::unavailable(format!("generation failed: {why}"))
    }
}

/// The error event ending a stream whose request failed: 503 for a refusal (the request may
/// succeed when the server is less loaded), 500 otherwise; `None` for a normal finish.
fn stream_error(reason: &FinishReason) -> Option<ApiError> {
    match reason {
        FinishReason::Refused(why) => Some(ApiError::unavailable(why.clone())),
        FinishReason::Error(why) => Some(ApiError::internal(format!("generation failed: {why}"))),
        _ => None,
    }
}

async fn collect<W: WireFormat>(
    state: &AppState,
    job: &Job,
    mut events: Events,
) -> Result<Response<Body>, ApiError> {
    let metrics = &state.metrics;
    let mut disconnect = DisconnectGuard(Some(metrics));
    let mut choices: Vec<Choice> = (0..job.n).map(|_| Choice::default()).collect();
    let mut done = 0;
    while done < job.n {
        let Some((i, ev)) = events.recv().await else {
            disconnect.disarm();
            return Err(ApiError::internal(
                "the engine stopped before the request finished",
            ));
        };
        choices[i].apply(metrics, job, &ev);
        if let Event::Finished { reason, .. } = ev {
            match reason {
                FinishReason::Error(why) => {
                    disconnect.disarm();
                    return Err(generation_error(state, &why));
                }
                FinishReason::Refused(why) => {
                    disconnect.disarm();
                    return Err(ApiError::unavailable(why));
                }
                _ => {}
            }
            done += 1;
        }
    }
    disconnect.disarm();
    Ok(W::response(job, &choices))
}

fn stream<W: WireFormat>(
    state: Arc<AppState>,
    job: Job,
    events: Events,
    guard: ActiveGuard,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _active = guard;
        let fallback = tx.clone();
        if catch_unwind(pump::<W>(&state.metrics, &job, events, tx))
            .await
            .is_none()
        {
            let e = ApiError::internal("the server failed while streaming");
            let _ = fallback.send(sse::raw_event(&e.to_json())).await;
            let _ = fallback.send(Bytes::from_static(DONE)).await;
        }
    });
    let mut resp = Response::new(sse::channel(rx));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Writes the SSE stream; returns early (dropping `events`, which aborts the requests) when the
/// client is gone.
async fn pump<W: WireFormat>(
    metrics: &Metrics,
    job: &Job,
    mut events: Events,
    tx: mpsc::Sender<Bytes>,
) {
    let send = |bytes: Bytes| {
        let tx = &tx;
        async move {
            let ok = tx.send(bytes).await.is_ok();
            if !ok {
                metrics.client_disconnected();
            }
            ok
        }
    };
    let mut choices: Vec<Choice> = (0..job.n).map(|_| Choice::default()).collect();
    for i in 0..job.n {
        if let Some(opening) = W::opening_chunk(job, i) {
            if !send(opening).await {
                return;
            }
        }
    }
    let mut done = 0;
    while done < job.n {
        let item = tokio::select! {
            _ = tx.closed() => {
                metrics.client_disconnected();
                return;
            }
            item = events.recv() => item,
        };
        let Some((i, ev)) = item else { break };
        let offset = choices[i].text.len();
        choices[i].apply(metrics, job, &ev);
        let chunk = match &ev {
            Event::Tokens { text, logprobs, .. } => {
                let lps: &[TokenLogprob] = if job.want_logprobs { logprobs } else { &[] };
                if text.is_empty() && lps.is_empty() {
                    continue;
                }
                W::chunk(job, i, text, lps, offset, None)
            }
            Event::Finished { reason, .. } => match stream_error(reason) {
                Some(e) => {
                    let _ = send(sse::raw_event(&e.to_json())).await;
                    let _ = send(Bytes::from_static(DONE)).await;
                    return;
                }
                None => {
                    done += 1;
                    W::chunk(job, i, "", &[], offset, Some(reason))
                }
            },
        };
        // A chat chunk whose text is held back (a possible tool call) has no event yet.
        if chunk.is_empty() {
            continue;
        }
        if !send(chunk).await {
            return;
        }
    }
    if job.include_usage {
        let usage = job.usage(&choices);
        if !send(W::usage_chunk(job, usage)).await {
            return;
        }
    }
    send(Bytes::from_static(DONE)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::request::TokenLogprob;
    use crate::model::tokenizer::Tokenizer;
    use crate::server::chat::Chat;
    use crate::server::completions::Completions;

    fn job(n: usize) -> Job {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/tiny-llama");
        Job {
            id: "x".into(),
            created: 1,
            model: "m".into(),
            n,
            want_logprobs: false,
            include_usage: true,
            prompt_tokens: 3,
            received: Instant::now(),
            tokenizer: Arc::new(Tokenizer::from_hf_dir(&dir).unwrap()),
            chat_output: None,
        }
    }

    fn tokens(text: &str) -> Event {
        let logprobs = vec![TokenLogprob {
            token: 5,
            logprob: -0.5,
            top: vec![],
        }];
        Event::Tokens {
            ids: vec![5],
            text: text.into(),
            logprobs,
        }
    }

    fn finished(reason: FinishReason) -> Event {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 1,
            cached_tokens: 0,
        };
        Event::Finished {
            reason,
            usage,
            metrics: RequestMetrics::default(),
        }
    }

    async fn run<W: WireFormat>(job: &Job, events: Vec<(usize, Event)>) -> Vec<String> {
        let metrics = Metrics::without_engine();
        let (etx, erx) = mpsc::unbounded_channel();
        for e in events {
            etx.send(e).unwrap();
        }
        let (tx, mut rx) = mpsc::channel(64);
        pump::<W>(&metrics, job, erx, tx).await;
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(String::from_utf8(b.to_vec()).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn an_engine_error_after_streaming_began_is_an_error_event_then_done() {
        let job = job(1);
        let out = run::<Completions>(
            &job,
            vec![
                (0, tokens("a")),
                (0, finished(FinishReason::Error("boom".into()))),
            ],
        )
        .await;
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[0].contains("\"text\":\"a\""));
        let err: serde_json::Value =
            serde_json::from_str(out[1].trim().strip_prefix("data: ").unwrap()).unwrap();
        assert!(err["error"]["message"].as_str().unwrap().contains("boom"));
        assert_eq!(out[2], "data: [DONE]\n\n");
    }

    #[tokio::test]
    async fn chat_streams_open_every_choice_with_the_role_and_end_with_usage() {
        let job = job(2);
        let out = run::<Chat>(
            &job,
            vec![
                (1, tokens("b")),
                (0, tokens("a")),
                (1, finished(FinishReason::Stop)),
                (0, finished(FinishReason::Length)),
            ],
        )
        .await;
        assert!(out[0].contains("\"role\":\"assistant\"") && out[0].contains("\"index\":0"));
        assert!(out[1].contains("\"role\":\"assistant\"") && out[1].contains("\"index\":1"));
        assert!(out[2..].iter().all(|e| !e.contains("\"role\"")));
        assert!(out[4].contains("\"finish_reason\":\"stop\""));
        let usage = &out[out.len() - 2];
        assert!(
            usage.contains("\"choices\":[]") && usage.contains("\"completion_tokens\":2"),
            "{usage}"
        );
        assert_eq!(out.last().unwrap(), "data: [DONE]\n\n");
    }

    #[tokio::test]
    async fn held_back_chat_text_sends_no_empty_events() {
        use crate::server::tools::request::parse_tool_fields;
        use crate::server::tools::support::ModelOutputSupport;
        use crate::server::tools::syntax::ToolSyntax;
        let mut job = job(1);
        let body = serde_json::json!({"tools": [{"type": "function", "function": {"name": "f"}}]});
        let tools = parse_tool_fields(body.as_object().unwrap()).unwrap();
        let support = ModelOutputSupport {
            syntax: ToolSyntax::Hermes,
            template_uses_tools: false,
            reasoning: false,
        };
        job.chat_output = ChatOutput::new(&support, tools.as_ref(), &job.tokenizer, &[1], 1);
        let out = run::<Chat>(
            &job,
            vec![
                (0, tokens("<tool_")),
                (0, tokens("call>{\"name\": \"f\"}")),
                (0, tokens("</tool_call>")),
                (0, finished(FinishReason::Stop)),
            ],
        )
        .await;
        assert!(out.iter().all(|e| e.starts_with("data: ")), "{out:?}");
        let calls = out.iter().filter(|e| e.contains("\"tool_calls\"")).count();
        assert_eq!(calls, 2, "the call's opening and arguments: {out:?}");
        assert!(out[out.len() - 3].contains("\"finish_reason\":\"tool_calls\""));
    }

    #[tokio::test]
    async fn a_gone_client_stops_the_pump_and_drops_the_requests() {
        let job = job(1);
        let metrics = Metrics::without_engine();
        let (etx, erx) = mpsc::unbounded_channel::<(usize, Event)>();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            pump::<Completions>(&metrics, &job, erx, tx),
        )
        .await
        .expect("the pump noticed");
        assert!(
            etx.is_closed(),
            "the engine streams' forwarders see the consumer gone"
        );
        assert_eq!(metrics.client_disconnects(), 1);
    }
}
