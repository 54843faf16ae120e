//! One frame's output: `GET /v1/renders/{id}/frames/{frame}` (the PNG) and
//! `…/frames/{frame}/thumbnail` (at most 256 pixels on a side, generated
//! once per output and cached beside the blobs by the output's SHA-256).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use projections::query::{Param, rows};
use projections::{FileRow, FrameRow};

use super::auth::Caller;
use super::read_failed;
use super::renders::owned;
use crate::app::AppState;
use crate::error::ApiError;

/// The longest side of a thumbnail.
pub const THUMBNAIL_SIDE: usize = 256;

/// The SHA-256 of a frame's current output (404 for a frame without one).
async fn output_of(
    state: &AppState,
    caller: &Caller,
    render: &str,
    frame: &str,
) -> Result<(i64, String), ApiError> {
    let r = owned(state, caller, render).await?;
    let frame: i64 = frame.parse().map_err(|_| ApiError::NotFound)?;
    let found = rows::<FrameRow>(
        &state.store,
        "tenant_id = $1 AND render_id = $2 AND frame = $3",
        &[
            Param::Text(r.tenant_id.clone()),
            Param::Text(r.render_id.clone()),
            Param::Int(frame),
        ],
    )
    .await
    .map_err(read_failed)?;
    let f = found.first().ok_or(ApiError::NotFound)?;
    let file = rows::<FileRow>(
        &state.store,
        "tenant_id = $1 AND file_id = $2",
        &[
            Param::Text(r.tenant_id.clone()),
            Param::Text(f.file_id.clone()),
        ],
    )
    .await
    .map_err(read_failed)?;
    let file = file.first().ok_or(ApiError::NotFound)?;
    Ok((frame, file.sha256.clone()))
}

/// `GET /v1/renders/{id}/frames/{frame}`: the frame's current output as
/// `image/png`, streamed and checked against its digest.
pub async fn frame(
    State(state): State<AppState>,
    caller: Caller,
    Path((render, frame)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (frame, sha256) = output_of(&state, &caller, &render, &frame).await?;
    super::files::stream_blob(
        &state,
        &sha256,
        "image/png",
        &format!("frame_{frame:04}.png"),
    )
    .await
}

/// `GET /v1/renders/{id}/frames/{frame}/thumbnail`: the frame scaled to at
/// most [`THUMBNAIL_SIDE`] pixels on a side, as `image/png`.
pub async fn thumbnail(
    State(state): State<AppState>,
    caller: Caller,
    Path((render, frame)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, sha256) = output_of(&state, &caller, &render, &frame).await?;
    // The digest names the content: a cached thumbnail never goes stale.
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a stored digest is not hex"
        )));
    }
    let dir = state.blobs.root().join("thumbnails");
    let path = dir.join(format!("{sha256}-{THUMBNAIL_SIDE}.png"));
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let original = state
                .blobs
                .get(&sha256)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?
                .ok_or(ApiError::NotFound)?;
            let bytes = tokio::task::spawn_blocking(move || {
                crate::contact_sheet::thumbnail(&original, THUMBNAIL_SIDE)
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(ApiError::Internal)?;
            // Written whole, then renamed: a reader never sees half a file.
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            let tmp = dir.join(format!("{sha256}.{}.tmp", uuid::Uuid::new_v4()));
            tokio::fs::write(&tmp, &bytes)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            bytes
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_string()),
            (header::ETAG, format!("\"{sha256}-{THUMBNAIL_SIDE}\"")),
            (header::CACHE_CONTROL, "private, max-age=86400".to_string()),
        ],
        bytes,
    )
        .into_response())
}
