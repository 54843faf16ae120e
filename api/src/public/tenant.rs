//! `/v1/tenant`: the caller's tenant, its balance and usage per day.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use projections::UsageRow;
use projections::query::{Param, rows};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::{field, query, read_failed};
use crate::app::AppState;
use crate::error::ApiError;

/// `GET /v1/tenant`: name, status, quota, balance, what was added and
/// charged, running tasks.
pub async fn show(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let t = projections::query::tenant(&state.store, caller.tenant_id.as_uuid())
        .await
        .map_err(read_failed)?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(json!({
        "id": t.tenant_id,
        "name": t.name,
        "status": t.status,
        "weight": t.weight,
        "max_running_tasks": t.max_running_tasks,
        "running_tasks": t.running_tasks,
        "balance_minor": t.balance_minor,
        "added_minor": t.added_minor,
        "charged_minor": t.charged_minor,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    })))
}

/// `GET /v1/tenant/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
}

fn day(name: &str, text: &str) -> Result<String, ApiError> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| field(name, "a day as YYYY-MM-DD"))
}

/// `GET /v1/tenant/usage`: charges, credit added and the balance at the
/// end of each day (UTC) with any of them, oldest first.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let from = p
        .from
        .as_deref()
        .map(|d| day("from", d))
        .transpose()?
        .unwrap_or_default();
    let to =
        p.to.as_deref()
            .map(|d| day("to", d))
            .transpose()?
            .unwrap_or_else(|| "9999-12-31".into());
    let found = rows::<UsageRow>(
        &state.store,
        "tenant_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        &[
            Param::Text(caller.tenant_id.to_string()),
            Param::Text(from),
            Param::Text(to),
        ],
    )
    .await
    .map_err(read_failed)?;
    let items: Vec<Value> = found
        .iter()
        .map(|u| {
            json!({
                "day": u.day,
                "tasks": u.tasks,
                "render_seconds": u.render_seconds,
                "charged_minor": u.charged_minor,
                "uncovered_minor": u.uncovered_minor,
                "added_minor": u.added_minor,
                "balance_minor": u.balance_minor,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}
