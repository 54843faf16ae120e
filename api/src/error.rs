//! The one place errors become HTTP responses: the contract's error body
//! `{"error": {"code", "message", "details", "trace_id"}}`. Internal details
//! are logged with the trace id, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use uuid::Uuid;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is out of bounds.
    #[error("{message}")]
    BadRequest {
        /// A stable code, e.g. `invalid_frame_range`.
        code: &'static str,
        /// For people.
        message: String,
        /// Structured details (field names, limits).
        details: serde_json::Value,
    },
    /// Missing or wrong credentials, signature, timestamp or nonce.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Authenticated, but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// An API key without the scope an operation needs.
    #[error("missing scope {0}")]
    MissingScope(&'static str),
    /// No such resource (for this tenant).
    #[error("not found")]
    NotFound,
    /// A concurrency conflict; retrying may succeed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A retry of a request that is still being answered.
    #[error("idempotency key in progress")]
    InProgress,
    /// A business rule refused the command.
    #[error(transparent)]
    Domain(#[from] domain::DomainError),
    /// Well-formed, but its content is refused (e.g. an uploaded frame that
    /// does not decode).
    #[error("{message}")]
    Unprocessable {
        /// A stable code, e.g. `invalid_output`.
        code: &'static str,
        /// For people.
        message: String,
        /// Structured details.
        details: serde_json::Value,
    },
    /// A body over its size limit (declared or counted).
    #[error("payload too large")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The client stopped sending the body; the connection is closed.
    #[error("request timeout")]
    RequestTimeout,
    /// The body is not of a media type the route takes.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The tenant sent more requests than its rate allows.
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds until a request is accepted again.
        retry_after: u64,
    },
    /// The route exists, but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A dependency (the event store) does not answer; retrying later may
    /// succeed.
    #[error("unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    /// Anything unexpected; logged, answered with a generic 500 body.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<eventstore::StoreError> for ApiError {
    fn from(e: eventstore::StoreError) -> Self {
        match e {
            eventstore::StoreError::WrongExpectedVersion { .. } => {
                Self::Conflict("the resource changed; retry".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<orchestrator::OrchestratorError> for ApiError {
    fn from(e: orchestrator::OrchestratorError) -> Self {
        use orchestrator::OrchestratorError as O;
        match e {
            O::Domain(d) => Self::Domain(d),
            O::Store(s) => s.into(),
            O::UnknownNode => Self::Unprocessable {
                code: "not_registered",
                message: "the node has not registered; register first".into(),
                details: json!({}),
            },
            O::NotFound(_) => Self::NotFound,
            O::Invalid(message) => Self::BadRequest {
                code: "invalid_request",
                message,
                details: json!({}),
            },
            O::Contention => Self::Conflict("too many concurrent changes; retry".into()),
            O::Storage(message) => Self::Internal(anyhow::anyhow!(message)),
            O::InvalidDependency(message) => Self::Unprocessable {
                code: "invalid_dependency",
                message,
                details: json!({ "field": "depends_on" }),
            },
            O::InvalidOutput(message) => Self::Unprocessable {
                code: "invalid_output",
                message,
                details: json!({}),
            },
        }
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, serde_json::Value) {
        match self {
            Self::BadRequest {
                code,
                message,
                details,
            } => (
                StatusCode::BAD_REQUEST,
                code,
                message.clone(),
                details.clone(),
            ),
            Self::Unauthorized(why) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                (*why).to_string(),
                json!({}),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "not allowed".into(),
                json!({}),
            ),
            Self::MissingScope(scope) => (
                StatusCode::FORBIDDEN,
                "missing_scope",
                format!("the API key lacks the scope {scope}"),
                json!({ "scope": scope }),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such resource".into(),
                json!({}),
            ),
            Self::InProgress => (
                StatusCode::CONFLICT,
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still being answered; retry".into(),
                json!({ "header": "Idempotency-Key" }),
            ),
            Self::Conflict(message) => {
                (StatusCode::CONFLICT, "conflict", message.clone(), json!({}))
            }
            Self::Domain(e) => (
                match e {
                    domain::DomainError::StaleLease { .. }
                    | domain::DomainError::FramesMissing { .. } => StatusCode::CONFLICT,
                    domain::DomainError::NotFound { .. } => StatusCode::NOT_FOUND,
                    domain::DomainError::Validation(_) => StatusCode::BAD_REQUEST,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                },
                e.code(),
                e.to_string(),
                json!({}),
            ),
            Self::Unprocessable {
                code,
                message,
                details,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                message.clone(),
                details.clone(),
            ),
            Self::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over the limit of {limit} bytes"),
                json!({ "limit_bytes": limit }),
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the body did not arrive in time".into(),
                json!({}),
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json".into(),
                json!({}),
            ),
            Self::TooManyRequests { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {retry_after} s"),
                json!({ "retry_after_seconds": retry_after }),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method".into(),
                json!({}),
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the service is not ready; retry later".into(),
                json!({}),
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "an internal error occurred".into(),
                json!({}),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request's (see `app::traced`), so that the body, the log line
        // and the events of the request share it.
        let trace_id =
            orchestrator::trace::current().unwrap_or_else(|| Uuid::new_v4().simple().to_string());
        let (status, code, message, details) = self.parts();
        if status.is_server_error() {
            tracing::error!(%trace_id, error = ?self, "request failed");
        } else {
            tracing::info!(%trace_id, %code, "request refused");
        }
        let body = json!({ "error": { "code": code, "message": message, "details": details, "trace_id": trace_id } });
        let mut response = (status, Json(body)).into_response();
        // A body that was refused before (or while) it was read is left
        // unread: the connection cannot carry another request.
        if let Self::TooManyRequests { retry_after } = &self
            && let Ok(value) = axum::http::HeaderValue::from_str(&retry_after.to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        if matches!(self, Self::PayloadTooLarge { .. } | Self::RequestTimeout) {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
