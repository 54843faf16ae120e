//! Why a call to the orchestrator failed, told apart as an operator needs
//! it: unreachable (with the cause), answered 5xx, or refused with 4xx and
//! the contract's error code.

use reqwest::StatusCode;

/// Why a call to the orchestrator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the connection failed or broke, or the request timed out.
    #[error("orchestrator unreachable at {url}: {}", describe(.source))]
    Unreachable {
        /// The orchestrator's base URL.
        url: String,
        /// What the HTTP client saw.
        source: reqwest::Error,
    },
    /// The orchestrator (or a proxy in front of it) answered 5xx.
    #[error(
        "orchestrator answered {} {code}: {message} (at {url}{})",
        status.as_u16(),
        trace(trace_id)
    )]
    ServerError {
        /// The orchestrator's base URL.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The contract error body's `code` (or the status's reason when
        /// there was no such body).
        code: String,
        /// Its `message`.
        message: String,
        /// Its `trace_id` (empty when there was none).
        trace_id: String,
    },
    /// The orchestrator refused the request (4xx) with the contract's error
    /// body: bad signature, stale lease, unknown file, …
    #[error(
        "orchestrator refused the request with {} {code}: {message} (at {url}{})",
        status.as_u16(),
        trace(trace_id)
    )]
    Refused {
        /// The orchestrator's base URL.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The error code of the body.
        code: String,
        /// Its message.
        message: String,
        /// Its `trace_id` (empty when there was none).
        trace_id: String,
    },
    /// A successful answer whose body is not what the contract says.
    #[error("orchestrator at {url} sent an unreadable reply: {message}")]
    BadReply {
        /// The orchestrator's base URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// Downloaded bytes do not hash to the digest they were asked by.
    #[error("downloaded file does not match its SHA-256")]
    Integrity,
    /// An assignment whose orchestrator signature does not verify: it is
    /// never run.
    #[error("the assignment's orchestrator signature does not verify")]
    BadAssignmentSignature,
    /// No randomness for a nonce.
    #[error("no randomness available for a nonce")]
    Random,
}

impl ClientError {
    /// Whether the same request may succeed later: the orchestrator was
    /// unreachable, answered 5xx or garbled its reply, asked to be called
    /// again later (408, 429), or met a concurrent change (409 `conflict`).
    /// Any other refusal (401, 404, 409 `stale_lease`, …) stays a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::ServerError { .. } | Self::BadReply { .. } => true,
            Self::Refused { status, code, .. } => {
                *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || (*status == StatusCode::CONFLICT && code == "conflict")
            }
            Self::Integrity | Self::BadAssignmentSignature | Self::Random => false,
        }
    }

    /// The HTTP status of an answered request (5xx or 4xx).
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::ServerError { status, .. } | Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What went wrong on the way: the innermost cause (reqwest's own message
/// only repeats the request URL), and whether it was a timeout or a failed
/// connection.
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut cause = None;
    let mut next = error.source();
    while let Some(source) = next {
        cause = Some(source.to_string());
        next = source.source();
    }
    let cause = cause.unwrap_or_else(|| error.to_string());
    if error.is_timeout() {
        format!("timed out ({cause})")
    } else if error.is_connect() {
        format!("cannot connect ({cause})")
    } else {
        cause
    }
}

fn trace(trace_id: &str) -> String {
    if trace_id.is_empty() {
        String::new()
    } else {
        format!(", trace_id {trace_id}")
    }
}

/// The contract's error body `{"error": {code, message, details, trace_id}}`
/// of a refused request, or the status's reason and the start of whatever
/// came instead (a proxy's page).
pub(super) fn error_body(status: StatusCode, body: &[u8]) -> (String, String, String) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let error = &value["error"];
    if let Some(code) = error["code"].as_str() {
        return (
            code.to_string(),
            error["message"].as_str().unwrap_or("").to_string(),
            error["trace_id"].as_str().unwrap_or("").to_string(),
        );
    }
    let code = status
        .canonical_reason()
        .unwrap_or("unknown")
        .to_ascii_lowercase()
        .replace(' ', "_");
    let text: String = String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    let message = if text.is_empty() {
        "(no error body)".to_string()
    } else {
        text
    };
    (code, message, String::new())
}
