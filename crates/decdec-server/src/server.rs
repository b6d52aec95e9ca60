//! The HTTP layer: routes, request admission, SSE streaming and JSON responses. It knows nothing
//! about model internals: it tokenizes, queues a job for the engine thread and relays its events.

use crate::api::{self, Endpoint, ParsedRequest, PromptInput, ResponseMeta};
use crate::error::ApiError;
use crate::metrics::{Metrics, MetricsInfo};
use crate::worker::{self, Event, Job, PushError, Queue};
use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use decdec_model::generate::{GenerateParams, GenerationOutput};
use decdec_model::{Engine, Tokenizer};
use futures::StreamExt;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::oneshot;

/// Settings of one server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The name clients must send as `model`.
    pub model_name: String,
    /// Requests allowed to wait behind the running one; more get 429. At least 1.
    pub max_queue: usize,
    /// Largest accepted request body in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Error-compensation k_chunk per projection group (qkv, o, gate-up, down) as configured on the
    /// engine's model; `None` = not configured. Only reported (/metrics); the engine applies it.
    pub k_chunk: Option<[usize; 4]>,
    /// When set, `/v1/*` requires `Authorization: Bearer <api_key>` (health and metrics stay open).
    pub api_key: Option<String>,
}

impl ServerOptions {
    pub fn new(model_name: impl Into<String>) -> Self {
        ServerOptions {
            model_name: model_name.into(),
            max_queue: 64,
            max_body_bytes: 4 << 20,
            k_chunk: None,
            api_key: None,
        }
    }
}

struct AppState {
    opts: ServerOptions,
    tokenizer: Arc<Tokenizer>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    max_seq_len: usize,
    vocab_size: usize,
    created: u64,
}

type Shared = Arc<AppState>;

/// A running server. Dropping it without [`ServerHandle::shutdown`] leaves it running until the
/// process exits.
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    worker: Option<std::thread::JoinHandle<()>>,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

impl ServerHandle {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stop accepting connections, let open ones finish, drain the queue and stop the engine thread.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = (&mut self.http).await;
        self.queue.close();
        if let Some(w) = self.worker.take() {
            tokio::task::spawn_blocking(move || w.join())
                .await
                .context("joining the engine thread")?
                .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
        }
        served
            .context("the HTTP task failed")?
            .context("the HTTP server failed")?;
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Bind `addr` and serve in the background of the current tokio runtime.
pub async fn start(
    engine: Box<dyn Engine>,
    tokenizer: Tokenizer,
    opts: ServerOptions,
    addr: SocketAddr,
) -> Result<ServerHandle> {
    if opts.max_queue == 0 {
        anyhow::bail!("--max-queue must be at least 1");
    }
    if opts.model_name.is_empty() {
        anyhow::bail!("the served model name is empty");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let tokenizer = Arc::new(tokenizer);
    let queue = Arc::new(Queue::new(opts.max_queue));
    let metrics = Arc::new(Metrics::new(MetricsInfo {
        model: opts.model_name.clone(),
        backend: engine.backend().to_string(),
        queue_capacity: opts.max_queue,
        k_chunk: opts.k_chunk,
    }));
    let state = Arc::new(AppState {
        max_seq_len: engine.max_seq_len(),
        vocab_size: engine.config().vocab_size,
        tokenizer: tokenizer.clone(),
        queue: queue.clone(),
        metrics: metrics.clone(),
        created: unix_now(),
        opts,
    });
    let worker = worker::spawn(engine, tokenizer, queue.clone(), metrics.clone())
        .context("cannot start the engine thread")?;
    let app = router(state);
    let (tx, rx) = oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Ok(ServerHandle {
        addr,
        shutdown: Some(tx),
        http,
        worker: Some(worker),
        queue,
        metrics,
    })
}

fn router(state: Shared) -> Router {
    let limit = state.opts.max_body_bytes;
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Byte comparison whose time does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_api_key(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.opts.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| same_secret(g.as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

async fn chat_completions(
    State(st): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle_generation(st, Endpoint::Chat, body).await
}

async fn completions(State(st): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    handle_generation(st, Endpoint::Completions, body).await
}

fn model_object(st: &AppState) -> Value {
    json!({
        "id": st.opts.model_name,
        "object": "model",
        "created": st.created,
        "owned_by": "decdec",
        "max_model_len": st.max_seq_len,
    })
}

async fn list_models(State(st): State<Shared>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&st)]}))
}

async fn get_model(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    if id == st.opts.model_name {
        Json(model_object(&st)).into_response()
    } else {
        let mut e = ApiError::unknown_model(&id, &st.opts.model_name);
        e.status = StatusCode::NOT_FOUND;
        e.into_response()
    }
}

async fn health(State(st): State<Shared>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "model": st.opts.model_name,
        "queue_depth": st.queue.depth(),
        "queue_capacity": st.queue.capacity(),
        "running": st.queue.running(),
    }))
}

async fn metrics(State(st): State<Shared>) -> Response {
    let text = st.metrics.render(st.queue.depth(), st.queue.running());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Token ids for a parsed request, or a 400 naming the prompt field.
fn tokenize(st: &AppState, req: &ParsedRequest) -> Result<Vec<u32>, ApiError> {
    let (param, ids) = match &req.prompt {
        PromptInput::Chat(messages) => {
            let text = st
                .tokenizer
                .apply_chat_template(messages, true)
                .map_err(|e| ApiError::invalid(Some("messages"), format!("{e:#}")))?;
            // Templates spell out their special tokens; the plain fallback transcript gets the
            // tokenizer's own BOS rule.
            let add_special = st.tokenizer.chat_template.is_none();
            let ids = st
                .tokenizer
                .encode(&text, add_special)
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            ("messages", ids)
        }
        PromptInput::Text(t) => {
            let ids = st
                .tokenizer
                .encode(t, true)
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            ("prompt", ids)
        }
        PromptInput::Tokens(ids) => ("prompt", ids.clone()),
    };
    if ids.is_empty() {
        return Err(ApiError::invalid(
            Some(param),
            "the prompt encodes to no tokens",
        ));
    }
    // One position must stay free for the first generated token.
    if ids.len() >= st.max_seq_len {
        return Err(ApiError::invalid(
            Some(param),
            format!(
                "the prompt has {} tokens; this model's context holds {} (including the reply)",
                ids.len(),
                st.max_seq_len
            ),
        )
        .with_code("context_length_exceeded"));
    }
    Ok(ids)
}

fn reject(st: &AppState, endpoint: Endpoint, e: ApiError) -> Response {
    let outcome = match e.status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::TOO_MANY_REQUESTS => "queue_full",
        s if s.is_client_error() => "bad_request",
        _ => "error",
    };
    st.metrics.record_outcome(endpoint.label(), outcome);
    e.into_response()
}

async fn handle_generation(
    st: Shared,
    endpoint: Endpoint,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let e = if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(st.opts.max_body_bytes)
            } else {
                ApiError::invalid(
                    None,
                    format!("cannot read the request body: {}", rej.body_text()),
                )
            };
            return reject(&st, endpoint, e);
        }
    };
    let req = match api::parse_request(endpoint, &body, &st.opts.model_name, st.vocab_size) {
        Ok(r) => r,
        Err(e) => return reject(&st, endpoint, e),
    };
    let prompt = match tokenize(&st, &req) {
        Ok(p) => p,
        Err(e) => return reject(&st, endpoint, e),
    };
    let room = st.max_seq_len - prompt.len();
    let params = GenerateParams {
        max_tokens: req.max_tokens.unwrap_or(room).min(room),
        sampling: req.sampling.clone(),
        stop: req.stop.clone(),
    };
    let (tx, rx) = unbounded_channel();
    let job = Job {
        prompt,
        params,
        events: tx,
        enqueued: Instant::now(),
        endpoint: endpoint.label(),
    };
    match st.queue.push(job) {
        Ok(()) => {}
        Err(PushError::Full) => {
            return reject(&st, endpoint, ApiError::queue_full(st.queue.capacity()))
        }
        Err(PushError::Closed) => {
            return reject(
                &st,
                endpoint,
                ApiError::unavailable("the server is shutting down"),
            )
        }
    }
    let meta = ResponseMeta {
        id: format!(
            "{}-{:016x}",
            match endpoint {
                Endpoint::Chat => "chatcmpl",
                Endpoint::Completions => "cmpl",
            },
            rand::random::<u64>()
        ),
        created: unix_now(),
        model: st.opts.model_name.clone(),
        endpoint,
    };
    if req.stream {
        stream_response(meta, rx, req.include_usage)
    } else {
        full_response(meta, rx).await
    }
}

/// Wait for the whole generation. If this future is dropped (the client went away), the receiver
/// goes with it and the engine stops at its next text delta.
async fn full_response(meta: ResponseMeta, mut rx: UnboundedReceiver<Event>) -> Response {
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta(_) => {}
            Event::Done(out) => {
                let body = api::full_response(
                    &meta,
                    &out.text,
                    out.finish_reason,
                    out.prompt_tokens,
                    out.tokens.len(),
                );
                return Json(body).into_response();
            }
            Event::Failed(msg) => return ApiError::internal(msg).into_response(),
        }
    }
    ApiError::internal("the engine stopped before finishing this request").into_response()
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

const SSE_DONE: &str = "data: [DONE]\n\n";

enum StreamState {
    Opening,
    Streaming,
    Finished,
}

fn final_events(meta: &ResponseMeta, out: &GenerationOutput, include_usage: bool) -> String {
    let mut s = sse(&api::chunk(meta, None, false, Some(out.finish_reason)));
    if include_usage {
        s.push_str(&sse(&api::usage_chunk(
            meta,
            out.prompt_tokens,
            out.tokens.len(),
        )));
    }
    s.push_str(SSE_DONE);
    s
}

fn error_events(msg: String) -> String {
    format!("{}{SSE_DONE}", sse(&ApiError::internal(msg).body()))
}

/// Server-sent events: an opening chunk (chat: the assistant role), one chunk per text delta, a
/// closing chunk with the finish reason, the optional usage chunk, then `data: [DONE]`.
fn stream_response(
    meta: ResponseMeta,
    rx: UnboundedReceiver<Event>,
    include_usage: bool,
) -> Response {
    let stream = futures::stream::unfold((StreamState::Opening, rx), move |(state, mut rx)| {
        let meta = meta.clone();
        async move {
            let text = match state {
                StreamState::Finished => return None,
                StreamState::Opening => {
                    let t = match meta.endpoint {
                        Endpoint::Chat => sse(&api::chunk(&meta, None, true, None)),
                        // Completions have no role; start with the first delta.
                        Endpoint::Completions => String::new(),
                    };
                    return Some((
                        Ok::<_, Infallible>(Bytes::from(t)),
                        (StreamState::Streaming, rx),
                    ));
                }
                StreamState::Streaming => match rx.recv().await {
                    Some(Event::Delta(d)) => {
                        let t = sse(&api::chunk(&meta, Some(&d), false, None));
                        return Some((Ok(Bytes::from(t)), (StreamState::Streaming, rx)));
                    }
                    Some(Event::Done(out)) => final_events(&meta, &out, include_usage),
                    Some(Event::Failed(msg)) => error_events(msg),
                    None => error_events("the engine stopped before finishing this request".into()),
                },
            };
            Some((Ok(Bytes::from(text)), (StreamState::Finished, rx)))
        }
    })
    .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(b) if b.is_empty())));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            ApiError::internal(format!("building the stream response: {e}")).into_response()
        })
}
