//! The web monitor: a page and its ES modules, embedded in the binary and
//! served at `/monitor/`. It signs in with a public API token and reads
//! only the public API and the WebSocket contract, like any third-party
//! client. Every response carries a Content-Security-Policy without
//! `unsafe-inline`: scripts and styles come from these files only.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::error::ApiError;

/// The policy of every monitor response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; \
frame-ancestors 'none'";

/// The embedded files: (name, media type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../monitor/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../monitor/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/app.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/dom.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/api.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/live.js"),
    ),
    (
        "renders.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/renders.js"),
    ),
    (
        "render.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/render.js"),
    ),
    (
        "grid.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/grid.js"),
    ),
    (
        "nodes.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/nodes.js"),
    ),
    (
        "tenant.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../monitor/tenant.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../monitor/favicon.svg"),
    ),
];

/// The monitor's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/monitor/") }))
        .route("/monitor", get(|| async { Redirect::to("/monitor/") }))
        .route("/monitor/", get(index))
        .route("/monitor/{file}", get(asset))
}

fn etags() -> &'static Vec<String> {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, bytes)| format!("\"{}\"", &hex::encode(Sha256::digest(bytes))[..32]))
            .collect()
    })
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let (_, media_type, bytes) = ASSETS[index];
    let etag = &etags()[index];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, media_type)], bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidated each time (cheap: 304), so a new binary's files show at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    response
}

async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let index = ASSETS
        .iter()
        .position(|(name, _, _)| *name == file)
        .ok_or(ApiError::NotFound)?;
    Ok(serve(index, &headers))
}

/// The names of the embedded files (for tests).
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(name, _, _)| *name)
}
