//! The HTTP side of `harmaug serve`: axum on a small tokio runtime. Routes, body limits, the
//! API key, CORS, per-request timeouts and graceful shutdown live here; scoring happens on the
//! model workers behind the queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use harmaug_core::GuardInput;
use http_body_util::BodyExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, oneshot};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::api::{self, ApiError, ModerationResponse, ModerationResult};
use super::metrics::Metrics;
use super::queue::{BatchQueue, Job, JobScores, PushError};

/// What the HTTP side needs to know, fixed at start.
pub struct HttpSettings {
    /// SHA-256 of the API key: compared in constant time, and of equal length whatever was sent.
    pub api_key_digest: Option<[u8; 32]>,
    pub max_body_bytes: usize,
    pub max_inputs: usize,
    /// From the request's arrival to its answer; past it the caller gets a 504.
    pub request_timeout: Duration,
    pub threshold: f32,
    /// The model name answered when a request names none (and listed by `/v1/models`).
    pub model_id: String,
    pub log_inputs: bool,
    pub cors_origins: Vec<HeaderValue>,
}

/// Shared by every handler and the model workers.
pub struct AppState {
    pub queue: BatchQueue,
    pub metrics: Metrics,
    pub settings: HttpSettings,
    /// Label names, set once the model is loaded, when each label is reported as a category.
    pub labels: OnceLock<Option<Vec<String>>>,
    /// Asks the HTTP server to shut down (the model failed to load).
    stop: Notify,
    next_id: AtomicU64,
    started: u64,
}

impl AppState {
    pub fn new(settings: HttpSettings, queue: BatchQueue) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            queue,
            metrics: Metrics::default(),
            settings,
            labels: OnceLock::new(),
            stop: Notify::new(),
            next_id: AtomicU64::new(0),
            started,
        }
    }

    pub fn stop(&self) {
        self.stop.notify_one();
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.settings.api_key_digest else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let digest = given.map(|key| Sha256::digest(key.as_bytes()));
        if digest.is_some_and(|digest| bool::from(digest.as_slice().ct_eq(expected))) {
            return Ok(());
        }
        let message = match given {
            None => "missing API key: send `Authorization: Bearer KEY`",
            Some(_) => "incorrect API key",
        };
        Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
                .with_code("invalid_api_key"),
        )
    }

    /// Queues `inputs` for the model workers and waits for their scores.
    async fn score(
        &self,
        inputs: Vec<GuardInput>,
        arrived: Instant,
    ) -> Result<JobScores, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .push(Job { inputs, reply })
            .map_err(|e| match e {
                PushError::Full => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    "the server's queue is full; retry after a moment",
                )
                .with_code("rate_limit_exceeded")
                .retry_after(1),
                PushError::Closed => shutting_down(),
            })?;
        let left = self
            .settings
            .request_timeout
            .saturating_sub(arrived.elapsed());
        match tokio::time::timeout(left, answer).await {
            Ok(Ok(Ok(scores))) => Ok(scores),
            Ok(Ok(Err(message))) => Err(server_error(message)),
            Ok(Err(_)) => Err(shutting_down()),
            Err(_) => Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "the request was not scored within the server's request timeout",
            )),
        }
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "the server is shutting down",
    )
    .retry_after(1)
}

fn server_error(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
}

/// Serves on `listener` until SIGINT/SIGTERM or [`AppState::stop`], lets the requests in
/// flight finish, then closes the queue so that the workers drain it and stop.
pub fn serve(listener: std::net::TcpListener, state: Arc<AppState>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("harmaug-http")
        .enable_all()
        .build()
        .context("starting the async runtime");
    let served = runtime.and_then(|runtime| {
        runtime.block_on(async {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, router(state.clone()))
                .with_graceful_shutdown(shutdown_signal(state.clone()))
                .await
                .context("serving HTTP")
        })
    });
    state.queue.close();
    served
}

async fn shutdown_signal(state: Arc<AppState>) {
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => terminate.recv().await,
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<Option<()>>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
        _ = state.stop.notified() => {}
    }
    tracing::info!("shutting down: answering the requests in flight, then exiting");
}

fn router(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/v1/moderations", post(moderations))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe));
    let origins = &state.settings.cors_origins;
    let router = if origins.is_empty() {
        router
    } else {
        router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins.iter().cloned()))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        )
    };
    router.with_state(state)
}

/// Counts every answer by status and latency; logs server errors.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    state
        .metrics
        .count_request(status.as_u16(), started.elapsed());
    // 503 (loading, shutting down) is expected; a 500 or 504 is worth a look.
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(path, status = status.as_u16(), "request failed");
    } else {
        tracing::debug!(
            path,
            status = status.as_u16(),
            ms = started.elapsed().as_millis() as u64
        );
    }
    response
}

async fn moderations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ModerationResponse>, ApiError> {
    let arrived = Instant::now();
    state.authorize(&headers)?;
    if !state.metrics.is_ready() {
        return Err(not_ready());
    }
    let settings = &state.settings;
    let body = tokio::time::timeout(settings.request_timeout, read_body(body, settings))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the body arrived too slowly",
            )
        })??;
    let request = api::parse_request(&body, settings.max_inputs)?;
    if settings.log_inputs {
        tracing::info!(inputs = ?request.inputs, "moderation request");
    }
    let scored = state.score(request.inputs, arrived).await?;
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let names = state.labels.get().and_then(Option::as_deref);
    let results =
        scored
            .scores
            .iter()
            .zip(&scored.label_probabilities)
            .map(|(&score, probabilities)| {
                let labels = names.map(|n| (n, probabilities.as_slice()));
                ModerationResult::new(score, settings.threshold, labels)
            });
    Ok(Json(ModerationResponse {
        id: format!("modr-{:x}-{id}", state.started),
        model: request.model.unwrap_or_else(|| settings.model_id.clone()),
        results: results.collect(),
    }))
}

/// The body, at most `max_body_bytes` (413 past it). An over-long body is still read, and
/// dropped, up to [`DRAIN_BYTES`], so that a client still sending gets the 413 instead of a
/// reset connection; memory stays bounded by the limit either way.
async fn read_body(mut body: Body, settings: &HttpSettings) -> Result<Bytes, ApiError> {
    let limit = settings.max_body_bytes as u64;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the body is larger than this server's limit of {limit} bytes"),
        )
    };
    if HttpBody::size_hint(&body).lower() > DRAIN_BYTES.max(limit) {
        return Err(too_large());
    }
    let mut kept = Vec::new();
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("reading the body: {error}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len() as u64;
        if seen <= limit {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_BYTES.max(limit) {
            break;
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

/// How much of an over-long body is read (and dropped) before answering 413.
const DRAIN_BYTES: u64 = 64 << 20;

fn not_ready() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "the model is still loading",
    )
    .with_code("model_not_ready")
    .retry_after(1)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if state.metrics.is_ready() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = state.authorize(&headers) {
        return error.into_response();
    }
    Json(json!({"object": "list", "data": [{
        "id": state.settings.model_id,
        "object": "model",
        "created": state.started,
        "owned_by": "harmaug",
    }]}))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(state.queue.depth());
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}
