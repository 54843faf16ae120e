//! How render nodes sign their requests and how the orchestrator signs the
//! work it hands out, exactly as `rest/node-agent.openapi.yaml` describes it
//! (its worked examples are checked against this code by the tests).
//!
//! Pure: no clock, no randomness, no I/O; time and nonces come from callers.

use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The first line of every signed request's canonical string.
pub const REQUEST_SCHEME: &str = "FLATRENDER-HMAC-SHA256-V1";
/// The prefix of a signed assignment.
pub const ASSIGNMENT_SCHEME: &str = "FLATRENDER-ASSIGNMENT-V1";
/// How far a request's timestamp may be from the server's clock, in seconds.
pub const WINDOW_SECONDS: i64 = 300;

/// The request headers of the scheme.
pub mod headers {
    /// The node's id.
    pub const NODE: &str = "x-flatrender-node";
    /// The id of the secret used.
    pub const KEY_ID: &str = "x-flatrender-key-id";
    /// Unix seconds.
    pub const TIMESTAMP: &str = "x-flatrender-timestamp";
    /// A value used once.
    pub const NONCE: &str = "x-flatrender-nonce";
    /// Lower-case hex SHA-256 of the body (of the empty string without one).
    pub const CONTENT_SHA256: &str = "x-flatrender-content-sha256";
    /// `v1=` and the lower-case hex HMAC-SHA256 of the canonical string.
    pub const SIGNATURE: &str = "x-flatrender-signature";
}

/// A node's shared secret: 32 or more bytes, exchanged as hex. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSecret(Vec<u8>);

impl std::fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecret(**redacted**)")
    }
}

impl NodeSecret {
    /// Wraps secret bytes (at least 32).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SignatureError> {
        if bytes.len() < 32 {
            return Err(SignatureError::Malformed("a secret has at least 32 bytes"));
        }
        Ok(Self(bytes))
    }

    /// Parses the hex form printed by `flatrender node enroll`.
    pub fn from_hex(text: &str) -> Result<Self, SignatureError> {
        let bytes =
            hex::decode(text.trim()).map_err(|_| SignatureError::Malformed("a secret is hex"))?;
        Self::from_bytes(bytes)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        <HmacSha256 as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is missing or malformed.
    #[error("malformed signed request: {0}")]
    Malformed(&'static str),
    /// The timestamp is outside the window.
    #[error("timestamp outside the allowed window")]
    Stale,
    /// The signature does not match.
    #[error("signature does not match")]
    BadSignature,
    /// The nonce was used before within the window.
    #[error("nonce already used")]
    Replay,
}

/// The parts of a request that are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedParts<'a> {
    /// `GET`, `POST`, ... (upper-cased when signed).
    pub method: &'a str,
    /// The path as sent, percent-encoded, without the query.
    pub path: &'a str,
    /// The raw query string as sent, without `?` (empty if none).
    pub query: &'a str,
    /// The node's id, as in its header.
    pub node_id: &'a str,
    /// The key id, as in its header.
    pub key_id: &'a str,
    /// Unix seconds, as in its header.
    pub timestamp: i64,
    /// The nonce, as in its header.
    pub nonce: &'a str,
    /// Lower-case hex SHA-256 of the body.
    pub content_sha256: &'a str,
}

/// Lower-case hex SHA-256 of a body.
pub fn content_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The query with its `&`-separated parameters sorted (byte order of the
/// whole `key=value` text as sent; empty parameters dropped).
pub fn canonical_query(query: &str) -> String {
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_unstable();
    params.join("&")
}

/// The string that is signed: nine lines joined by `\n`.
pub fn canonical_request(parts: &SignedParts<'_>) -> String {
    [
        REQUEST_SCHEME,
        &parts.method.to_ascii_uppercase(),
        parts.path,
        &canonical_query(parts.query),
        parts.node_id,
        parts.key_id,
        &parts.timestamp.to_string(),
        parts.nonce,
        parts.content_sha256,
    ]
    .join("\n")
}

/// The `X-FlatRender-Signature` value for a request.
pub fn sign_request(secret: &NodeSecret, parts: &SignedParts<'_>) -> String {
    let mut mac = secret.mac();
    mac.update(canonical_request(parts).as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) fn check_nonce(nonce: &str) -> Result<(), SignatureError> {
    let ok = (16..=128).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Malformed(
            "a nonce is 16 to 128 of [A-Za-z0-9_-]",
        ))
    }
}

/// Whether `text` is lower-case hex digits only (and not empty).
pub(crate) fn is_lower_hex(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `text` is a UUID in its one signed spelling: lower-case,
/// hyphenated (`8c5d1f5e-3b0a-4c55-9a53-0d6b6f1e2a77`).
pub(crate) fn is_lower_uuid(text: &str) -> bool {
    text.len() == 36
        && text.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && text.split('-').all(is_lower_hex)
}

/// Checks a request's signature and timestamp (constant-time comparison).
/// The nonce must still be checked against a [`NonceCache`] afterwards.
/// Every header must be in the one form the contract gives it (ids and hex
/// in lower case): a signature over another spelling is refused as
/// malformed.
pub fn verify_request(
    secret: &NodeSecret,
    parts: &SignedParts<'_>,
    signature: &str,
    now_unix: i64,
) -> Result<(), SignatureError> {
    check_nonce(parts.nonce)?;
    if !is_lower_uuid(parts.node_id) || !is_lower_uuid(parts.key_id) {
        return Err(SignatureError::Malformed(
            "node and key ids are lower-case hyphenated UUIDs",
        ));
    }
    if parts.content_sha256.len() != 64 || !is_lower_hex(parts.content_sha256) {
        return Err(SignatureError::Malformed(
            "content sha256 is 64 lower-case hex digits",
        ));
    }
    let given = signature
        .strip_prefix("v1=")
        .filter(|h| h.len() == 64 && is_lower_hex(h))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed(
            "signature is v1=<64 lower-case hex digits>",
        ))?;
    if (now_unix - parts.timestamp).abs() > WINDOW_SECONDS {
        return Err(SignatureError::Stale);
    }
    let mut mac = secret.mac();
    mac.update(canonical_request(parts).as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::BadSignature)
}

/// Nonces seen within the window, per node; refuses a second use.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: HashMap<(String, String), i64>,
    order: VecDeque<(i64, String, String)>,
}

impl NonceCache {
    /// Records the nonce of a verified request, or refuses it as a replay.
    /// Entries older than the window are forgotten (their timestamps would
    /// be refused as stale anyway).
    pub fn check_and_insert(
        &mut self,
        node_id: &str,
        nonce: &str,
        timestamp: i64,
        now_unix: i64,
    ) -> Result<(), SignatureError> {
        while let Some((at, _, _)) = self.order.front() {
            if *at >= now_unix - 2 * WINDOW_SECONDS {
                break;
            }
            if let Some((_, node, nonce)) = self.order.pop_front() {
                self.seen.remove(&(node, nonce));
            }
        }
        let key = (node_id.to_string(), nonce.to_string());
        if self.seen.contains_key(&key) {
            return Err(SignatureError::Replay);
        }
        self.seen.insert(key, timestamp);
        self.order
            .push_back((now_unix, node_id.to_string(), nonce.to_string()));
        Ok(())
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

pub use crate::canonical::canonical_json;

fn assignment_bytes(assignment: &serde_json::Value) -> Vec<u8> {
    let mut unsigned = assignment.clone();
    if let Some(map) = unsigned.as_object_mut() {
        map.remove("orchestrator_signature");
    }
    format!("{ASSIGNMENT_SCHEME}\n{}", canonical_json(&unsigned)).into_bytes()
}

/// The `orchestrator_signature` of an assignment (the field itself, if
/// present, is left out of what is signed).
pub fn sign_assignment(secret: &NodeSecret, assignment: &serde_json::Value) -> String {
    let mut mac = secret.mac();
    mac.update(&assignment_bytes(assignment));
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks an assignment's `orchestrator_signature` (constant-time).
pub fn verify_assignment(
    secret: &NodeSecret,
    assignment: &serde_json::Value,
) -> Result<(), SignatureError> {
    let given = assignment
        .get("orchestrator_signature")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| s.strip_prefix("v1="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed(
            "orchestrator_signature is v1=<hex>",
        ))?;
    let mut mac = secret.mac();
    mac.update(&assignment_bytes(assignment));
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::BadSignature)
}
