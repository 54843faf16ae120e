//! Authenticating render nodes: every request is checked against the
//! signing scheme of `contracts/rest/node-agent.openapi.yaml` before a
//! handler sees it. A refused request changes nothing.
//!
//! The signature covers the claimed SHA-256 of the body, so it is verified
//! from the headers alone, before any of the body is read; a body declared
//! over its limit is refused (413) before even that. Two extractors: a
//! [`SignedNode`] for the JSON endpoints, whose body (at most
//! [`MAX_SIGNED_BODY`]) is read into memory, and a [`SignedUpload`] for
//! rendered frames, whose body is streamed into a temporary file.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use contracts::node_signing::{self, NodeSecret, SignedParts, headers};
use http_body_util::BodyExt;
use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::files::{FileError, TempBlob};

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

/// An upload whose signature and timestamp verified; its body is not read
/// yet. [`SignedUpload::receive`] streams it to a temporary file and checks
/// its digest and nonce.
#[derive(Debug)]
pub struct SignedUpload {
    /// The node that signed it.
    pub node_id: Uuid,
    /// The key it signed with.
    pub key_id: Uuid,
    signer: Signer,
    body: Body,
}

/// What the headers proved; the digest and nonce are checked once the body
/// is read.
#[derive(Debug)]
struct Signer {
    node_id: Uuid,
    key_id: Uuid,
    name: String,
    secret: NodeSecret,
    node_text: String,
    nonce: String,
    timestamp: i64,
    claimed_digest: String,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized(
            "missing or unreadable signing header",
        ))
}

/// Refuses a body whose declared length is over `limit`, before reading it.
fn refuse_declared_over(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(ApiError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

/// Why reading a body failed: it stalled (the server's body-read timeout),
/// or the client broke it off.
pub(crate) fn body_error(e: &axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::RequestTimeout;
        }
        if error.is::<crate::reseller::auth::DigestMismatch>() {
            return ApiError::Unauthorized("the body does not match its digest");
        }
        source = error.source();
    }
    ApiError::BadRequest {
        code: "invalid_body",
        message: "the body could not be read".into(),
        details: json!({}),
    }
}

/// Verifies the signing headers (not the body, nor the nonce).
async fn verify_headers(parts: &Parts, state: &AppState) -> Result<Signer, ApiError> {
    let h = &parts.headers;
    let node_text = header(h, headers::NODE)?;
    let key_text = header(h, headers::KEY_ID)?;
    let timestamp: i64 = header(h, headers::TIMESTAMP)?
        .parse()
        .map_err(|_| ApiError::Unauthorized("timestamp is not a number"))?;
    let nonce = header(h, headers::NONCE)?;
    let claimed_digest = header(h, headers::CONTENT_SHA256)?;
    let signature = header(h, headers::SIGNATURE)?;
    let (Ok(node_id), Ok(key_id)) = (Uuid::parse_str(node_text), Uuid::parse_str(key_text)) else {
        return Err(ApiError::Unauthorized("unknown node or key"));
    };
    let key = state
        .store
        .node_key(node_id, key_id, &state.vault)
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
    Ok(Signer {
        node_id,
        key_id,
        name: key.name,
        secret,
        node_text: node_text.to_owned(),
        nonce: nonce.to_owned(),
        timestamp,
        claimed_digest: claimed_digest.to_owned(),
    })
}

impl Signer {
    /// The body read must be the one signed; then the nonce is spent.
    fn accept(&self, state: &AppState, digest: &str) -> Result<(), ApiError> {
        self.check_digest(digest)?;
        self.spend_nonce(state)
    }

    fn check_digest(&self, digest: &str) -> Result<(), ApiError> {
        if digest != self.claimed_digest {
            return Err(ApiError::Unauthorized("the body does not match its digest"));
        }
        Ok(())
    }

    fn spend_nonce(&self, state: &AppState) -> Result<(), ApiError> {
        let now = state.clock.now().timestamp();
        state
            .nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check_and_insert(&self.node_text, &self.nonce, self.timestamp, now)
            .map_err(|_| ApiError::Unauthorized("nonce already used"))
    }
}

impl FromRequest<AppState> for SignedNode {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, mut body) = request.into_parts();
        let limit = MAX_SIGNED_BODY as u64;
        refuse_declared_over(&parts.headers, limit)?;
        let signer = verify_headers(&parts, state).await?;
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| body_error(&e))?;
            if let Ok(data) = frame.into_data() {
                if (bytes.len() + data.len()) as u64 > limit {
                    return Err(ApiError::PayloadTooLarge { limit });
                }
                bytes.extend_from_slice(&data);
            }
        }
        signer.accept(state, &node_signing::content_sha256(&bytes))?;
        Ok(Self {
            node_id: signer.node_id,
            key_id: signer.key_id,
            name: signer.name,
            body: Bytes::from(bytes),
            secret: signer.secret,
        })
    }
}

impl FromRequest<AppState> for SignedUpload {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        refuse_declared_over(&parts.headers, state.blobs.max_bytes())?;
        let signer = verify_headers(&parts, state).await?;
        Ok(Self {
            node_id: signer.node_id,
            key_id: signer.key_id,
            signer,
            body,
        })
    }
}

impl SignedUpload {
    /// Spends the nonce (a replayed upload is refused before a byte of it
    /// is written), streams the body into a temporary file of the blob
    /// store, hashing and counting it (413 over the limit), then checks it
    /// is the body that was signed (401). On every failure, and if the
    /// client goes away, the temporary file is removed.
    pub async fn receive(mut self, state: &AppState) -> Result<TempBlob, ApiError> {
        self.signer.spend_nonce(state)?;
        let mut writer = state.blobs.writer().await.map_err(internal)?;
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| body_error(&e))?;
            if let Ok(data) = frame.into_data() {
                writer.write(&data).await.map_err(|e| match e {
                    FileError::TooLarge { limit, .. } => ApiError::PayloadTooLarge { limit },
                    other => internal(other),
                })?;
            }
        }
        let temp = writer.finish().await.map_err(internal)?;
        self.signer.check_digest(temp.sha256())?;
        Ok(temp)
    }
}

fn internal(e: FileError) -> ApiError {
    ApiError::Internal(e.into())
}
