//! Authenticating render nodes: every request is checked against the
//! signing scheme of `contracts/rest/node-agent.openapi.yaml` before a
//! handler sees it. A refused request changes nothing.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use contracts::node_signing::{self, NodeSecret, SignedParts, headers};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// The largest body a node may sign (frames are uploaded separately).
pub const MAX_SIGNED_BODY: usize = 1024 * 1024;

/// A request whose signature, timestamp, nonce and body digest verified.
#[derive(Debug)]
pub struct SignedNode {
    /// The node that signed it.
    pub node_id: Uuid,
    /// The key it signed with.
    pub key_id: Uuid,
    /// The operator's name for the node.
    pub name: String,
    /// The body, whose SHA-256 was signed.
    pub body: Bytes,
    /// The node's secret (to sign its assignments); never logged.
    pub secret: NodeSecret,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized(
            "missing or unreadable signing header",
        ))
}

impl FromRequest<AppState> for SignedNode {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let h = &parts.headers;
        let node_text = header(h, headers::NODE)?;
        let key_text = header(h, headers::KEY_ID)?;
        let timestamp: i64 = header(h, headers::TIMESTAMP)?
            .parse()
            .map_err(|_| ApiError::Unauthorized("timestamp is not a number"))?;
        let nonce = header(h, headers::NONCE)?;
        let claimed_digest = header(h, headers::CONTENT_SHA256)?;
        let signature = header(h, headers::SIGNATURE)?;
        let (Ok(node_id), Ok(key_id)) = (Uuid::parse_str(node_text), Uuid::parse_str(key_text))
        else {
            return Err(ApiError::Unauthorized("unknown node or key"));
        };
        let key = state
            .store
            .node_key(node_id, key_id)
            .await?
            .ok_or(ApiError::Unauthorized("unknown node or key"))?;
        let secret = NodeSecret::from_bytes(key.secret.clone())
            .map_err(|_| ApiError::Unauthorized("unknown node or key"))?;
        let signed = SignedParts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            node_id: node_text,
            key_id: key_text,
            timestamp,
            nonce,
            content_sha256: claimed_digest,
        };
        let now = state.clock.now().timestamp();
        node_signing::verify_request(&secret, &signed, signature, now).map_err(|e| match e {
            node_signing::SignatureError::Stale => {
                ApiError::Unauthorized("timestamp outside the window")
            }
            node_signing::SignatureError::Malformed(_) => {
                ApiError::Unauthorized("malformed signing header")
            }
            _ => ApiError::Unauthorized("signature does not match"),
        })?;
        // The signature covers the claimed digest, so the body is read only
        // for a verified signer, and then must match that digest.
        let limit = if parts.uri.path().starts_with("/v1/agent/outputs/") {
            usize::try_from(state.blobs.max_bytes()).unwrap_or(usize::MAX)
        } else {
            MAX_SIGNED_BODY
        };
        let body = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge)?;
        if node_signing::content_sha256(&body) != claimed_digest {
            return Err(ApiError::Unauthorized("the body does not match its digest"));
        }
        state
            .nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check_and_insert(node_text, nonce, timestamp, now)
            .map_err(|_| ApiError::Unauthorized("nonce already used"))?;
        Ok(Self {
            node_id,
            key_id,
            name: key.name,
            body,
            secret,
        })
    }
}
