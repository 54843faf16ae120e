//! How resellers sign their requests, exactly as
//! `rest/reseller-api.openapi.yaml` describes it (its worked example is
//! checked against this code by the tests): the node contract's canonical
//! form with the API key's id in place of the node's and key's ids, under
//! its own scheme name so that a signature of one API is never one of the
//! other.
//!
//! Pure: no clock, no randomness, no I/O; time and nonces come from callers.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use crate::node_signing::{
    NonceCache, SignatureError, WINDOW_SECONDS, canonical_query, content_sha256,
};
use crate::node_signing::{check_nonce, is_lower_hex, is_lower_uuid};

type HmacSha256 = Hmac<Sha256>;

/// The first line of every signed reseller request's canonical string.
pub const SCHEME: &str = "FLATRENDER-RESELLER-HMAC-SHA256-V1";

/// The prefix of every API key secret.
pub const SECRET_PREFIX: &str = "frs_";

/// The request headers of the scheme.
pub mod headers {
    /// The API key's id.
    pub const API_KEY: &str = "x-api-key";
    /// Unix seconds.
    pub const TIMESTAMP: &str = "x-flatrender-timestamp";
    /// A value used once.
    pub const NONCE: &str = "x-flatrender-nonce";
    /// Lower-case hex SHA-256 of the body (of the empty string without one).
    pub const CONTENT_SHA256: &str = "x-flatrender-content-sha256";
    /// `v1=` and the lower-case hex HMAC-SHA256 of the canonical string.
    pub const SIGNATURE: &str = "x-flatrender-signature";
}

/// An API key's secret: `frs_` and 64 lower-case hex digits, shown once
/// when the key is issued; its UTF-8 bytes are the HMAC key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeySecret(**redacted**)")
    }
}

impl ApiKeySecret {
    /// Parses a secret as issued.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let ok = text
            .strip_prefix(SECRET_PREFIX)
            .is_some_and(|hex| hex.len() == 64 && is_lower_hex(hex));
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(SignatureError::Malformed(
                "an API key secret is frs_ and 64 lower-case hex digits",
            ))
        }
    }

    /// The secret of 32 random bytes.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
    }

    /// The secret's text (to show it once, or to seal it).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The public prefix shown in lists: `frs_` and the first 8 digits.
    pub fn prefix(&self) -> &str {
        &self.0[..SECRET_PREFIX.len() + 8]
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(self.0.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

/// The parts of a reseller request that are signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedParts<'a> {
    /// `GET`, `POST`, ... (upper-cased when signed).
    pub method: &'a str,
    /// The path as sent, percent-encoded, without the query.
    pub path: &'a str,
    /// The raw query string as sent, without `?` (empty if none).
    pub query: &'a str,
    /// The API key's id, as in `X-API-Key`.
    pub api_key: &'a str,
    /// Unix seconds, as in its header.
    pub timestamp: i64,
    /// The nonce, as in its header.
    pub nonce: &'a str,
    /// Lower-case hex SHA-256 of the body.
    pub content_sha256: &'a str,
}

/// The string that is signed: eight lines joined by `\n`.
pub fn canonical_request(parts: &SignedParts<'_>) -> String {
    [
        SCHEME,
        &parts.method.to_ascii_uppercase(),
        parts.path,
        &canonical_query(parts.query),
        parts.api_key,
        &parts.timestamp.to_string(),
        parts.nonce,
        parts.content_sha256,
    ]
    .join("\n")
}

/// The `X-FlatRender-Signature` value for a request.
pub fn sign_request(secret: &ApiKeySecret, parts: &SignedParts<'_>) -> String {
    let mut mac = secret.mac();
    mac.update(canonical_request(parts).as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks the form of the signing headers before any key is looked up.
pub fn check_form(parts: &SignedParts<'_>, signature: &str) -> Result<Vec<u8>, SignatureError> {
    check_nonce(parts.nonce)?;
    if !is_lower_uuid(parts.api_key) {
        return Err(SignatureError::Malformed(
            "X-API-Key is the key's id, a lower-case hyphenated UUID",
        ));
    }
    if parts.content_sha256.len() != 64 || !is_lower_hex(parts.content_sha256) {
        return Err(SignatureError::Malformed(
            "content sha256 is 64 lower-case hex digits",
        ));
    }
    signature
        .strip_prefix("v1=")
        .filter(|h| h.len() == 64 && is_lower_hex(h))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed(
            "signature is v1=<64 lower-case hex digits>",
        ))
}

/// Checks a request's signature and timestamp (constant-time comparison).
/// The nonce must still be checked against a [`NonceCache`] afterwards.
pub fn verify_request(
    secret: &ApiKeySecret,
    parts: &SignedParts<'_>,
    signature: &str,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let given = check_form(parts, signature)?;
    if (now_unix - parts.timestamp).abs() > WINDOW_SECONDS {
        return Err(SignatureError::Stale);
    }
    let mut mac = secret.mac();
    mac.update(canonical_request(parts).as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::BadSignature)
}
