//! Authenticating reseller requests, as `contracts/rest/reseller-api.openapi.yaml`
//! says: the signature verified from the headers (the key's secret opened
//! from the vault), the key and its user checked active in the owner's
//! identity stream on every request (so a revocation holds on every
//! instance from its next request), the operation's scope (the contract's
//! `x-scope`) among the key's, the nonce spent (in the store, so a copy
//! replayed to another instance is refused too), and the body checked
//! against its signed SHA-256: read whole for JSON operations, checked as
//! it streams for uploads. A refused request changes nothing.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use contracts::reseller_signing::{self as signing, ApiKeySecret, SignedParts, headers};
use domain::identity::{Role, Scope};
use domain::{ApiKeyId, TenantId};
use eventstore::Actor;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::ApiError;
use crate::public::auth::{Caller, ResellerCaller};

/// The operation whose body is streamed (an upload), not read whole.
const STREAMED: &str = "uploadFile";

/// A verified reseller request.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The key.
    pub api_key_id: ApiKeyId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The signed body digest.
    pub content_sha256: String,
}

fn header<'a>(parts: &'a Parts, name: &'static str) -> Result<&'a str, ApiError> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized(
            "missing or unreadable signing header",
        ))
}

fn scope_named(name: &str) -> Option<Scope> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// Checks the signature, the key, its user and the scope; spends the
/// nonce. Returns the caller the handler will see.
async fn verify(state: &AppState, parts: &Parts) -> Result<(Caller, Signed, bool), ApiError> {
    let (operation, _) = contracts::reseller_api::route(parts.method.as_str(), parts.uri.path())
        .ok_or(ApiError::NotFound)?;
    let scope_name = operation.spec()["x-scope"].as_str().unwrap_or("");
    let needed = scope_named(scope_name).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "the reseller contract gives {} no known scope",
            operation.id
        ))
    })?;
    let api_key = header(parts, headers::API_KEY)?;
    let timestamp: i64 = header(parts, headers::TIMESTAMP)?
        .parse()
        .map_err(|_| ApiError::Unauthorized("timestamp is not a number"))?;
    let nonce = header(parts, headers::NONCE)?;
    let content_sha256 = header(parts, headers::CONTENT_SHA256)?;
    let signature = header(parts, headers::SIGNATURE)?;
    let signed = SignedParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        api_key,
        timestamp,
        nonce,
        content_sha256,
    };
    signing::check_form(&signed, signature).map_err(refusal)?;
    let key_id = uuid::Uuid::parse_str(api_key).map_err(|_| unknown())?;
    let row = state
        .store
        .api_key_secret(key_id, &state.vault)
        .await?
        .ok_or_else(unknown)?;
    let secret = std::str::from_utf8(&row.secret)
        .ok()
        .and_then(|s| ApiKeySecret::parse(s).ok())
        .ok_or_else(unknown)?;
    let now = state.clock.now();
    signing::verify_request(&secret, &signed, signature, now.timestamp()).map_err(refusal)?;
    // The key's state is its owner's stream, read on every request.
    let (identity, _) = crate::users::load(&state.store, row.user_id).await?;
    let api_key_id = ApiKeyId::new(key_id).map_err(|_| unknown())?;
    let key = identity
        .api_key(api_key_id)
        .filter(|k| identity.is_active() && k.is_active_at(now))
        .filter(|k| k.issued.tenant_id.as_uuid() == row.tenant_id)
        .filter(|k| {
            k.issued.key_hash.as_str() == hex::encode(Sha256::digest(secret.expose().as_bytes()))
        })
        .ok_or_else(unknown)?;
    if !key.issued.scopes.contains(&needed) {
        return Err(ApiError::MissingScope(leak_scope(scope_name)));
    }
    let tenant_id = key.issued.tenant_id;
    state
        .auth
        .limit
        .take(tenant_id.as_uuid())
        .map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    // Spent in the store, so that a copy sent to another instance is
    // refused too; kept until the request's time leaves the window.
    let expires_at = chrono::DateTime::from_timestamp(timestamp, 0).unwrap_or(now)
        + chrono::Duration::seconds(signing::WINDOW_SECONDS + 1);
    let fresh = state
        .store
        .spend_nonce(&format!("api-key:{api_key}"), nonce, now, expires_at)
        .await?;
    if !fresh {
        return Err(ApiError::Unauthorized("nonce already used"));
    }
    let caller = Caller {
        user_id: row.user_id,
        tenant_id,
        // A key acts within its scopes only, never with its user's farm
        // role (an operator's key still sees its own tenant only).
        role: Role::Member,
    };
    Ok((
        caller,
        Signed {
            api_key_id,
            tenant_id,
            content_sha256: content_sha256.to_string(),
        },
        operation.id == STREAMED,
    ))
}

/// The contract's scope names, as static strings for the error.
fn leak_scope(name: &str) -> &'static str {
    [
        "renders:read",
        "renders:write",
        "files:read",
        "files:write",
        "billing:read",
        "audit:read",
    ]
    .into_iter()
    .find(|s| *s == name)
    .unwrap_or("unknown")
}

fn refusal(e: signing::SignatureError) -> ApiError {
    match e {
        signing::SignatureError::Stale => ApiError::Unauthorized("timestamp outside the window"),
        signing::SignatureError::Malformed(_) => ApiError::Unauthorized("malformed signing header"),
        _ => ApiError::Unauthorized("signature does not match"),
    }
}

fn unknown() -> ApiError {
    ApiError::Unauthorized("unknown or inactive API key")
}

/// A streamed body whose bytes did not hash to the signed digest.
#[derive(Debug, thiserror::Error)]
#[error("the body does not match its signed digest")]
pub struct DigestMismatch;

/// `body`, failing at its end unless its bytes hash to `expected`.
fn checked_stream(body: Body, expected: String) -> Body {
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let feed = hasher.clone();
    let data = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            feed.lock().unwrap_or_else(|e| e.into_inner()).update(bytes);
        }
        chunk.map_err(axum::BoxError::from)
    });
    let end = futures_util::stream::once(async move {
        let digest = std::mem::take(&mut *hasher.lock().unwrap_or_else(|e| e.into_inner()));
        if hex::encode(digest.finalize()) == expected {
            None
        } else {
            Some(Err::<Bytes, axum::BoxError>(Box::new(DigestMismatch)))
        }
    })
    .filter_map(std::future::ready);
    Body::from_stream(data.chain(end))
}

/// The reseller API's middleware: authenticates, then runs the handler as
/// the key (its events' actor), a `POST` through [`super::idempotency`].
pub async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let (caller, signed, streamed) = verify(&state, &parts).await?;
    let body = if streamed {
        checked_stream(body, signed.content_sha256.clone())
    } else {
        let limit = crate::public::JSON_LIMIT;
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let bytes = http_body_util::Limited::new(body, limit as usize)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::BadRequest {
                        code: "invalid_body",
                        message: "the body could not be read".into(),
                        details: serde_json::json!({}),
                    }
                }
            })?
            .to_bytes();
        if signing::content_sha256(&bytes) != signed.content_sha256 {
            return Err(ApiError::Unauthorized("the body does not match its digest"));
        }
        Body::from(bytes)
    };
    parts.extensions.insert(ResellerCaller(caller));
    let actor = Actor::ApiKey {
        id: signed.api_key_id.as_uuid(),
    };
    let request = Request::from_parts(parts, body);
    let run = async move {
        if request.method() == axum::http::Method::POST {
            super::idempotency::once(&state, &signed, request, next).await
        } else {
            Ok(next.run(request).await)
        }
    };
    orchestrator::trace::acting_as(actor, run).await
}
