//! Dispatch by path and method: 404 for unknown paths, 405 (with `Allow`) for a known path with
//! the wrong method. Handlers return `Result<Response, ApiError>`; errors become envelopes here.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;

use super::chat::Chat;
use super::completions::Completions;
use super::error::ApiError;
use super::generate;
use super::metrics::CONTENT_TYPE as METRICS_TYPE;
use super::openai::{now_unix, ModelCard, ModelList};
use super::response;
use super::sse::Body;
use super::state::AppState;
use super::tokenize;

const GET: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];

pub async fn route(req: Request<Incoming>, state: Arc<AppState>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let allowed = match path.as_str() {
        "/health" | "/metrics" | "/v1/models" => GET,
        p if p.starts_with("/v1/models/") => GET,
        "/v1/completions" | "/v1/chat/completions" | "/tokenize" | "/detokenize" => POST,
        _ => return response::error(&ApiError::not_found(format!("no route for {path}"))),
    };
    if !allowed.contains(&method) {
        let mut resp = response::error(&ApiError::method_not_allowed(&method, &path));
        let allow = if allowed == POST { "POST" } else { "GET, HEAD" };
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return resp;
    }
    let result = match path.as_str() {
        "/health" => Ok(health(&state)),
        "/metrics" => metrics(&state),
        "/v1/models" => Ok(models(&state)),
        "/v1/completions" => generate::handle::<Completions>(req, state).await,
        "/v1/chat/completions" => generate::handle::<Chat>(req, state).await,
        "/tokenize" => tokenize::tokenize(req, state).await,
        "/detokenize" => tokenize::detokenize(req, state).await,
        p => model(&state, &p["/v1/models/".len()..]),
    };
    result.unwrap_or_else(|e| response::error(&e))
}

/// 200 while serving; 503 while draining or once the engine has died.
fn health(state: &AppState) -> Response<Body> {
    if !state.handle.is_alive() {
        response::error(&ApiError::unavailable("the engine has stopped"))
    } else if state.is_draining() {
        response::error(&ApiError::unavailable("the server is shutting down"))
    } else {
        response::with_type(StatusCode::OK, "text/plain", "ok\n")
    }
}

fn metrics(state: &AppState) -> Result<Response<Body>, ApiError> {
    let text = state
        .metrics
        .render()
        .map_err(|e| ApiError::internal(format!("rendering metrics failed: {e}")))?;
    Ok(response::with_type(StatusCode::OK, METRICS_TYPE, text))
}

fn card(state: &AppState) -> ModelCard {
    ModelCard {
        id: state.model_name().to_string(),
        object: "model",
        created: now_unix(),
        owned_by: "tandem",
        max_model_len: state.handle.model().max_context,
    }
}

fn models(state: &AppState) -> Response<Body> {
    response::json(
        StatusCode::OK,
        &ModelList {
            object: "list",
            data: vec![card(state)],
        },
    )
}

/// `GET /v1/models/{id}` (the SDK's `models.retrieve`); ids may contain `/`.
fn model(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    if id != state.model_name() {
        return Err(ApiError::model_not_found(id));
    }
    Ok(response::json(StatusCode::OK, &card(state)))
}
