//! Task attempts' logs: `GET /v1/renders/{render_id}/tasks/{task_id}/attempts`
//! and `…/attempts/{attempt}/log[?tail=N]` (`text/plain`, served as
//! stored: never interpreted).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::{field, id, query};
use crate::app::AppState;
use crate::error::ApiError;
use crate::task_logs::Attempt;

/// The most lines `?tail=` returns.
pub const MAX_TAIL: usize = 100_000;

/// `GET /v1/renders/{render_id}/tasks/{task_id}/attempts`: the attempts
/// of the task that have a log, in order.
pub async fn attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path((render, task)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (render_id, tenant) = super::render_of(&state, &caller, &render).await?;
    let task_id = id(&task, "task_id")?;
    let found = state
        .logs
        .attempts(tenant.as_uuid(), render_id, task_id)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let items: Vec<Value> = found
        .into_iter()
        .map(|(attempt, size)| {
            json!({
                "attempt": attempt,
                "size_bytes": size,
                "log_url": format!("/v1/renders/{render_id}/tasks/{task_id}/attempts/{attempt}/log"),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `?tail=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    tail: Option<usize>,
}

/// `GET /v1/renders/{render_id}/tasks/{task_id}/attempts/{attempt}/log`.
pub async fn log(
    State(state): State<AppState>,
    caller: Caller,
    Path((render, task, attempt)): Path<(String, String, String)>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    if p.tail.is_some_and(|n| !(1..=MAX_TAIL).contains(&n)) {
        return Err(field("tail", "tail is 1 to 100000 lines"));
    }
    let (render_id, tenant) = super::render_of(&state, &caller, &render).await?;
    let task_id = id(&task, "task_id")?;
    let attempt: u32 = attempt
        .parse()
        .ok()
        .filter(|a| *a >= 1)
        .ok_or(ApiError::NotFound)?;
    let text = state
        .logs
        .read(
            Attempt {
                tenant_id: tenant.as_uuid(),
                render_id,
                task_id,
                attempt,
            },
            p.tail,
        )
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .ok_or(ApiError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from(text),
    )
        .into_response())
}
