//! `Idempotency-Key` on every reseller `POST`: the key is reserved in the
//! store before the handler runs (so a retry to another instance sees it),
//! the answer kept once answered, and a retry of the same request (method,
//! path, query, signed body digest) answered with it, changing nothing.
//! Answers a retry could change are not kept: 5xx, 401 (a body that did
//! not match its digest), 408, 409 and 429; their key is freed.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eventstore::{IdempotencyBegin, StoredAnswer};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::auth::Signed;
use crate::app::AppState;
use crate::error::ApiError;

/// The header telling a client an answer is a kept one.
pub const REPLAYED: &str = "idempotent-replayed";

/// The largest answer kept (the answers of `POST`s are small JSON).
const MAX_KEPT: usize = 1024 * 1024;

fn request_hash(request: &Request, signed: &Signed) -> String {
    let query = contracts::reseller_signing::canonical_query(request.uri().query().unwrap_or(""));
    hex::encode(
        Sha256::new()
            .chain_update(request.method().as_str())
            .chain_update(b"\n")
            .chain_update(request.uri().path())
            .chain_update(b"\n")
            .chain_update(query)
            .chain_update(b"\n")
            .chain_update(&signed.content_sha256)
            .finalize(),
    )
}

fn kept(status: StatusCode) -> bool {
    !(status.is_server_error()
        || matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::CONFLICT
                | StatusCode::TOO_MANY_REQUESTS
        ))
}

fn answer(stored: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(stored.body)).into_response();
    if let Some(value) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Runs a `POST` at most once per key and request.
pub async fn once(
    state: &AppState,
    signed: &Signed,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = crate::public::renders::idempotency_key(request.headers())?.ok_or_else(|| {
        ApiError::BadRequest {
            code: "idempotency_key_required",
            message: "every POST of the reseller API needs an Idempotency-Key header".into(),
            details: json!({ "header": "Idempotency-Key" }),
        }
    })?;
    let tenant = signed.tenant_id.as_uuid();
    let hash = request_hash(&request, signed);
    let now = state.clock.now();
    match state
        .store
        .idempotency_begin(tenant, &key, &hash, now)
        .await?
    {
        IdempotencyBegin::Run => {}
        IdempotencyBegin::Answered(stored) => return Ok(answer(stored)),
        IdempotencyBegin::InProgress => return Err(ApiError::InProgress),
        IdempotencyBegin::Reused => {
            return Err(ApiError::Unprocessable {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used for a different request".into(),
                details: json!({ "header": "Idempotency-Key" }),
            });
        }
    }
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    if !kept(parts.status) {
        state.store.idempotency_abandon(tenant, &key).await?;
        return Ok(Response::from_parts(parts, body));
    }
    let bytes = match axum::body::to_bytes(body, MAX_KEPT).await {
        Ok(bytes) => bytes,
        Err(e) => {
            state.store.idempotency_abandon(tenant, &key).await?;
            return Err(ApiError::Internal(anyhow::anyhow!(
                "an answer to keep could not be read: {e}"
            )));
        }
    };
    let stored = StoredAnswer {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: bytes.to_vec(),
    };
    state
        .store
        .idempotency_finish(tenant, &key, &stored)
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
