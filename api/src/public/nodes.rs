//! `/v1/nodes`: the farm's render nodes, for operators (role `operator`):
//! status, capabilities, current task, last seen; drain, enable, disable.
//! Every other role gets 403: nodes belong to the farm, not to a tenant.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use domain::{NodeCommand, NodeId};
use eventstore::Actor;
use projections::query::{Param, count, rows};
use projections::{NodeRow, Row};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::{Page, field, id, page_of, query, read_failed};
use crate::app::AppState;
use crate::error::ApiError;

/// `GET /v1/nodes?status=&page=&page_size=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    page: Option<u32>,
    page_size: Option<u32>,
}

/// The statuses a node row can have.
const STATUSES: [&str; 5] = ["online", "offline", "draining", "disabled", "deregistered"];

async fn item(state: &AppState, n: &NodeRow) -> Value {
    let last_seen = match n.node_id.parse().ok().and_then(|u| NodeId::new(u).ok()) {
        Some(node) => state.orchestrator.last_seen(node).await,
        None => None,
    };
    let last_seen = last_seen
        .map(projections::time)
        .unwrap_or_else(|| n.last_event_at.clone());
    json!({
        "id": n.node_id,
        "name": n.name,
        "status": n.status,
        "connectivity": n.connectivity,
        "availability": n.availability,
        "capabilities": serde_json::from_str::<Value>(&n.capabilities).unwrap_or(Value::Null),
        "current_task_id": n.current_task_id,
        "current_render_id": n.current_render_id,
        "registered_at": n.registered_at,
        "last_seen_at": last_seen,
    })
}

/// `GET /v1/nodes`: every node, by name.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.operates()?;
    let p = query(params)?;
    let paging = Page::checked(p.page, p.page_size)?;
    let (mut filter, mut params) = ("1 = 1".to_string(), Vec::new());
    if let Some(status) = &p.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(field("status", "one of the node statuses"));
        }
        filter = "status = $1".into();
        params.push(Param::Text(status.clone()));
    }
    let total = count(&state.store, NodeRow::TABLE.name, &filter, &params)
        .await
        .map_err(read_failed)?;
    let (_, size, offset) = paging;
    let found = rows::<NodeRow>(
        &state.store,
        &format!("{filter} ORDER BY name, node_id LIMIT {size} OFFSET {offset}"),
        &params,
    )
    .await
    .map_err(read_failed)?;
    let mut items = Vec::with_capacity(found.len());
    for n in &found {
        items.push(item(&state, n).await);
    }
    Ok(Json(page_of(items, paging, total)))
}

/// What an operator does to a node.
#[derive(Debug, Clone, Copy)]
enum Action {
    Drain,
    Enable,
    Disable,
}

async fn act(
    state: &AppState,
    caller: &Caller,
    node: &str,
    action: Action,
) -> Result<Json<Value>, ApiError> {
    caller.operates()?;
    let node_id = NodeId::new(id(node, "node_id")?).map_err(|_| ApiError::NotFound)?;
    let actor = Actor::User { id: caller.user_id };
    state
        .orchestrator
        .operate_node(node_id, actor, |at| match action {
            Action::Drain => NodeCommand::Drain { at },
            Action::Enable => NodeCommand::Enable { at },
            Action::Disable => NodeCommand::Disable { reason: None, at },
        })
        .await?;
    Ok(Json(json!({ "id": node_id.to_string(), "accepted": true })))
}

/// `POST /v1/nodes/{id}/drain`: finishes its tasks, gets no new ones.
pub async fn drain(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
) -> Result<Json<Value>, ApiError> {
    act(&state, &caller, &node, Action::Drain).await
}

/// `POST /v1/nodes/{id}/enable`: may get work again.
pub async fn enable(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
) -> Result<Json<Value>, ApiError> {
    act(&state, &caller, &node, Action::Enable).await
}

/// `POST /v1/nodes/{id}/disable`: out of scheduling.
pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
) -> Result<Json<Value>, ApiError> {
    act(&state, &caller, &node, Action::Disable).await
}
