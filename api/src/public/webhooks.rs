//! `/v1/webhooks`: a tenant's webhook endpoints (see `crate::webhooks`).
//! Registering answers the endpoint's signing secret once; listings show
//! the endpoints as the dispatcher last read the log (a moment after a
//! change, like the read models).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::notification::{EndpointRegistered, NotificationKind};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::{body, field, id};
use crate::app::AppState;
use crate::error::ApiError;
use crate::webhooks::WebhookError;

/// The events an endpoint may ask for, by their names in the API.
const EVENTS: [(&str, NotificationKind); 4] = [
    ("render.completed", NotificationKind::RenderCompleted),
    ("render.failed", NotificationKind::RenderFailed),
    ("render.cancelled", NotificationKind::RenderCancelled),
    ("tenant.credit_low", NotificationKind::CreditLow),
];

fn name_of(kind: NotificationKind) -> &'static str {
    EVENTS
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or("unknown", |(n, _)| n)
}

fn item(r: &EndpointRegistered) -> Value {
    json!({
        "id": r.endpoint_id,
        "url": r.url.as_str(),
        "events": r.kinds.iter().map(|k| name_of(*k)).collect::<Vec<_>>(),
        "created_at": projections::time(r.registered_at),
    })
}

/// `POST /v1/webhooks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    url: String,
    events: Vec<String>,
}

fn refused(e: WebhookError) -> ApiError {
    match e {
        WebhookError::Invalid(message) => ApiError::Unprocessable {
            code: "webhook_url_not_allowed",
            message,
            details: json!({ "field": "url" }),
        },
        WebhookError::NotFound => ApiError::NotFound,
        WebhookError::Domain(d) => ApiError::Domain(d),
        WebhookError::Store(s) => ApiError::Internal(s.into()),
    }
}

/// `POST /v1/webhooks`: registers an endpoint; its secret is in this
/// answer only.
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.may_change()?;
    let b = body(request)?;
    let mut kinds = Vec::new();
    for name in &b.events {
        let kind = EVENTS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| *k)
            .ok_or_else(|| field("events", "unknown event name"))?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(field("events", "name at least one event"));
    }
    if b.url.len() > 2048 {
        return Err(field("url", "at most 2048 characters"));
    }
    let registered = crate::webhooks::register(
        &state.store,
        &state.vault,
        &state.webhooks,
        caller.tenant_id,
        &b.url,
        kinds.clone(),
        Actor::User { id: caller.user_id },
    )
    .await
    .map_err(refused)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": registered.endpoint_id,
            "url": b.url,
            "events": kinds.iter().map(|k| name_of(*k)).collect::<Vec<_>>(),
            "secret": registered.secret,
        })),
    ))
}

/// `GET /v1/webhooks`: the tenant's endpoints (never their secrets).
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let items: Vec<Value> = match &state.dispatcher {
        Some(d) => d
            .endpoints_of(caller.tenant_id)
            .await
            .iter()
            .map(item)
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /v1/webhooks/{webhook_id}`: the endpoint gets nothing more.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.may_change()?;
    let endpoint =
        domain::EndpointId::new(id(&webhook, "webhook_id")?).map_err(|_| ApiError::NotFound)?;
    crate::webhooks::remove(
        &state.store,
        caller.tenant_id,
        endpoint,
        Actor::User { id: caller.user_id },
    )
    .await
    .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}
