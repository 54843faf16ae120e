//! The HTTP application: state and routes.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use contracts::node_signing::NonceCache;
use eventstore::{AnyStore, Clock, EventStore};
use orchestrator::Orchestrator;
use serde_json::json;

use crate::error::ApiError;
use crate::files::BlobStore;

/// What every handler can reach; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The event store.
    pub store: AnyStore,
    /// Uploaded scenes and rendered outputs.
    pub blobs: BlobStore,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Nonces of signed node requests within the window.
    pub nonces: Arc<Mutex<NonceCache>>,
    /// The scheduler (leases, liveness, charging).
    pub orchestrator: Orchestrator,
    /// How public callers are authenticated and rate limited.
    pub auth: Arc<crate::public::auth::Auth>,
    /// Messages for WebSocket clients.
    pub live: crate::live::Live,
    /// Task attempts' logs (in the blob storage's `logs/`).
    pub logs: crate::task_logs::TaskLogs,
    /// The relay to RabbitMQ, when configured.
    pub broker: Option<Arc<crate::broker::Broker>>,
    /// Request latencies and the `/metrics` endpoint's token.
    pub metrics: crate::metrics::Metrics,
    /// Seals and opens node secrets at rest (the configured master key;
    /// a random one until [`AppState::with_vault`]).
    pub vault: Arc<eventstore::Vault>,
    /// How webhooks are registered and delivered.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// The webhook dispatcher, when running (its counts for `/metrics`).
    pub dispatcher: Option<crate::webhooks::Dispatcher>,
}

impl AppState {
    /// State over a store and blob store: builds the scheduler's view from
    /// the log.
    pub async fn open(
        store: AnyStore,
        blobs: BlobStore,
        clock: Arc<dyn Clock>,
        config: orchestrator::Config,
    ) -> Result<Self, orchestrator::OrchestratorError> {
        let orchestrator = Orchestrator::open(store.clone(), clock.clone(), config).await?;
        let live = crate::live::Live::spawn(store.clone(), orchestrator.position().await);
        let logs = crate::task_logs::TaskLogs::new(
            &blobs.root().join("logs"),
            crate::task_logs::TaskLogs::DEFAULT_CAP,
        );
        Ok(Self {
            live,
            logs,
            store,
            blobs,
            clock,
            nonces: Arc::default(),
            broker: None,
            metrics: crate::metrics::Metrics::default(),
            webhooks: crate::webhooks::WebhookConfig::default(),
            dispatcher: None,
            vault: Arc::new(eventstore::Vault::new(
                eventstore::MasterKey::ephemeral()
                    .map_err(|e| orchestrator::OrchestratorError::Store(e.into()))?,
            )),
            orchestrator,
            auth: crate::public::auth::Auth::new(
                crate::public::auth::Jwt::unusable(),
                crate::public::auth::RateLimit::default(),
            ),
        })
    }

    /// The same state with each task attempt's log capped at `cap` bytes.
    pub fn with_log_cap(mut self, cap: u64) -> Self {
        self.logs = crate::task_logs::TaskLogs::new(&self.blobs.root().join("logs"), cap);
        self
    }

    /// The same state with the configured master key.
    pub fn with_vault(mut self, vault: eventstore::Vault) -> Self {
        self.vault = Arc::new(vault);
        self
    }

    /// The same state with webhooks delivered as `config` says, and its
    /// dispatcher (not yet running: [`crate::webhooks::Dispatcher::run`]).
    pub fn with_webhooks(mut self, config: crate::webhooks::WebhookConfig) -> Self {
        self.dispatcher = Some(crate::webhooks::Dispatcher::new(
            self.store.clone(),
            self.vault.clone(),
            config.clone(),
        ));
        self.webhooks = config;
        self
    }

    /// The same state with `/metrics` behind a bearer token.
    pub fn with_metrics_token(mut self, token: Option<String>) -> Self {
        self.metrics = crate::metrics::Metrics::new(token);
        self
    }

    /// The same state with a relay to RabbitMQ (checked by `/readyz`).
    pub fn with_broker(mut self, broker: Arc<crate::broker::Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The same state with the public API's authentication.
    pub fn with_auth(mut self, auth: Arc<crate::public::auth::Auth>) -> Self {
        self.auth = auth;
        self
    }
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/v1/agent/register", post(crate::node_api::register))
        .route("/v1/agent/heartbeat", post(crate::node_api::heartbeat))
        .route("/v1/agent/claim", post(crate::node_api::claim))
        .route(
            "/v1/agent/tasks/{task_id}/progress",
            post(crate::node_api::progress),
        )
        .route(
            "/v1/agent/tasks/{task_id}/logs",
            post(crate::node_api::logs),
        )
        .route(
            "/v1/agent/tasks/{task_id}/complete",
            post(crate::node_api::complete),
        )
        .route(
            "/v1/agent/tasks/{task_id}/fail",
            post(crate::node_api::fail),
        )
        .route(
            "/v1/agent/tasks/{task_id}/release",
            post(crate::node_api::release),
        )
        .route(
            "/v1/agent/outputs/{task_id}/{frame}",
            put(crate::node_api::upload_output),
        )
        .route("/v1/agent/files/{sha256}", get(crate::node_api::download))
        .merge(crate::public::routes())
        .merge(crate::reseller::routes(&state))
        .merge(crate::monitor::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(axum::middleware::from_fn(traced))
        .with_state(state)
}

/// The response header that tells a client its request's trace id.
pub const TRACE_HEADER: &str = "x-trace-id";

/// Gives every request a trace id: the trace id of a valid W3C
/// `traceparent` header, else a new random one. It is in the request's log
/// span, in the metadata of every event the request causes, in its error
/// body and in the `X-Trace-Id` response header.
pub async fn traced(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let trace_id = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(w3c_trace_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = orchestrator::trace::scope(trace_id.clone(), next.run(request))
        .instrument(span)
        .await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert(TRACE_HEADER, value);
    }
    response
}

/// The trace id of a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`,
/// lower case, not all zeros), or `None`.
pub fn w3c_trace_id(header: &str) -> Option<String> {
    let parts: Vec<&str> = header.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [version, trace, parent, flags]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0') =>
        {
            Some((*trace).to_string())
        }
        _ => None,
    }
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The longest readiness waits for the event store.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Readiness: the event store answers and has every migration of this
/// binary applied, the object storage answers when blobs live there, and
/// the broker answers when a relay is configured (503 while not).
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    // A store that hangs (a network partition) is as unready as one that
    // refuses.
    tokio::time::timeout(READY_TIMEOUT, state.store.stream_version(uuid::Uuid::nil()))
        .await
        .map_err(|_| {
            ApiError::Unavailable(anyhow::anyhow!("the event store did not answer in time"))
        })?
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let missing = tokio::time::timeout(READY_TIMEOUT, state.store.missing_migrations())
        .await
        .map_err(|_| {
            ApiError::Unavailable(anyhow::anyhow!("the migrations could not be read in time"))
        })?
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    if !missing.is_empty() {
        return Err(ApiError::Unavailable(anyhow::anyhow!(
            "migrations not applied: {missing:?}"
        )));
    }
    tokio::time::timeout(READY_TIMEOUT, state.blobs.ready())
        .await
        .map_err(|_| {
            ApiError::Unavailable(anyhow::anyhow!("the blob storage did not answer in time"))
        })?
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    if let Some(broker) = &state.broker {
        broker
            .ready()
            .await
            .map_err(|e| ApiError::Unavailable(anyhow::anyhow!(e)))?;
    }
    Ok(Json(json!({ "status": "ready" })))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
