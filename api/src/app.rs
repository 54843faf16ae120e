//! The HTTP application: state and routes.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use eventstore::{AnyStore, EventStore};
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
}

/// All routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
