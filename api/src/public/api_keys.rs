//! `/v1/api-keys`: the reseller API's keys (see `crate::reseller`). A
//! tenant's admins issue keys to themselves, each with its scopes and an
//! optional expiry, and revoke any key of their tenant. The secret is in
//! the issuing answer only; the log holds the key's id, prefix and hash.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::identity::{ApiKey, Role, Scope};
use domain::{ApiKeyId, Note, UserId};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::{body, field, id};
use crate::app::AppState;
use crate::error::ApiError;
use crate::users::UserError;

/// `POST /v1/api-keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    scopes: Vec<Scope>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// `DELETE /v1/api-keys/{id}` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The optional revocation body: none, or JSON in the contract's error
/// body when it does not parse.
fn revoke_body(bytes: &[u8]) -> Result<RevokeBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(RevokeBody::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::BadRequest {
                code: "malformed_json",
                message: e.to_string(),
                details: json!({}),
            }
        } else {
            ApiError::Unprocessable {
                code: "invalid_body",
                message: e.to_string(),
                details: json!({}),
            }
        }
    })
}

fn admin(caller: &Caller) -> Result<(), ApiError> {
    match caller.role {
        Role::Admin => Ok(()),
        _ => Err(ApiError::Forbidden),
    }
}

fn refused(e: UserError) -> ApiError {
    match e {
        UserError::Invalid(v) => field(v.field, &v.reason),
        UserError::Domain(domain::DomainError::Validation(v)) => field(v.field, &v.reason),
        UserError::Domain(domain::DomainError::InvalidTransition { .. }) => {
            ApiError::Unprocessable {
                code: "api_key_revoked",
                message: "the key is already revoked".into(),
                details: json!({}),
            }
        }
        UserError::Domain(d) => ApiError::Domain(d),
        UserError::Store(s) => s.into(),
    }
}

fn item(key: &ApiKey) -> Value {
    let i = &key.issued;
    json!({
        "id": i.api_key_id,
        "prefix": i.prefix,
        "scopes": i.scopes,
        "expires_at": i.expires_at.map(projections::time),
        "issued_at": projections::time(i.issued_at),
        "revoked_at": key.revoked_at.map(projections::time),
    })
}

/// `POST /v1/api-keys`: a new key for the calling admin; its secret is in
/// this answer only.
pub async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    request: Result<Json<IssueBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin(&caller)?;
    let b = body(request)?;
    if b.scopes.contains(&Scope::AuditRead) {
        return Err(field(
            "scopes",
            "audit:read is not a scope of the reseller API",
        ));
    }
    let user = UserId::new(caller.user_id).map_err(|_| ApiError::Forbidden)?;
    let at = state.clock.now();
    let issued = crate::users::issue_api_key(
        &state.store,
        &state.vault,
        user,
        b.scopes.clone(),
        b.expires_at,
        at,
    )
    .await
    .map_err(refused)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": issued.api_key_id,
            "secret": issued.secret.expose(),
            "prefix": issued.secret.prefix(),
            "scopes": b.scopes,
            "expires_at": b.expires_at.map(projections::time),
            "issued_at": projections::time(at),
            "revoked_at": null,
        })),
    ))
}

/// `GET /v1/api-keys`: the calling admin's keys, revoked ones included
/// (never their secrets).
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let (identity, _) = crate::users::load(&state.store, caller.user_id).await?;
    let items: Vec<Value> = identity.api_keys().map(item).collect();
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /v1/api-keys/{api_key_id}`: the key no longer authenticates,
/// on any instance, from its next request.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    request: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    let api_key_id = ApiKeyId::new(id(&key, "api_key_id")?).map_err(|_| ApiError::NotFound)?;
    let reason = revoke_body(&request)?
        .reason
        .map(Note::parse)
        .transpose()
        .map_err(|e| field("reason", &e.reason))?;
    crate::users::revoke_api_key(
        &state.store,
        &state.vault,
        caller.tenant_id,
        api_key_id,
        reason,
        Actor::User { id: caller.user_id },
        state.clock.now(),
    )
    .await
    .map_err(refused)?
    .ok_or(ApiError::NotFound)?;
    Ok(StatusCode::NO_CONTENT)
}
