//! The HTTP application: state and routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use contracts::node_signing::NonceCache;
use eventstore::{AnyStore, Clock, EventStore};
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
    /// When each node was last heard from (heartbeats are not events).
    pub liveness: Arc<Mutex<HashMap<uuid::Uuid, DateTime<Utc>>>>,
}

impl AppState {
    /// State over a store and blob store, with empty caches.
    pub fn new(store: AnyStore, blobs: BlobStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            blobs,
            clock,
            nonces: Arc::default(),
            liveness: Arc::default(),
        }
    }
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/agent/register", post(crate::node_api::register))
        .route("/v1/agent/heartbeat", post(crate::node_api::heartbeat))
        .route("/v1/agent/files/{sha256}", get(crate::node_api::download))
        .fallback(not_found)
        .with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the event store answers.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.stream_version(uuid::Uuid::nil()).await?;
    Ok(Json(json!({ "status": "ready" })))
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}
