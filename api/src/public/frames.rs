//! One frame's output: `GET /v1/renders/{id}/frames/{frame}` (the PNG) and
//! `…/frames/{frame}/thumbnail?size=` (at most 128, 256 — the default —,
//! 512 or 1,024 pixels on a side, generated once per output and size and
//! cached beside the blobs by the output's SHA-256).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use projections::query::{Param, rows};
use projections::{FileRow, FrameRow};

use super::auth::Caller;
use super::read_failed;
use super::renders::owned;
use crate::app::AppState;
use crate::error::ApiError;

/// The longest side of a thumbnail, unless `?size=` says otherwise.
pub const THUMBNAIL_SIDE: usize = 256;

/// The sizes `?size=` takes.
pub const THUMBNAIL_SIZES: [usize; 4] = [128, 256, 512, 1024];

/// `?size=`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailParams {
    size: Option<usize>,
}

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
/// most `?size=` ([`THUMBNAIL_SIDE`] by default) pixels on a side, as
/// `image/png`.
pub async fn thumbnail(
    State(state): State<AppState>,
    caller: Caller,
    Path((render, frame)): Path<(String, String)>,
    params: Result<Query<ThumbnailParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let side = super::query(params)?.size.unwrap_or(THUMBNAIL_SIDE);
    if !THUMBNAIL_SIZES.contains(&side) {
        return Err(super::field("size", "one of 128, 256, 512, 1024"));
    }
    let (_, sha256) = output_of(&state, &caller, &render, &frame).await?;
    // The digest names the content: a cached thumbnail never goes stale.
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "a stored digest is not hex"
        )));
    }
    let dir = state.blobs.root().join("thumbnails");
    let path = dir.join(format!("{sha256}-{side}.png"));
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
                crate::contact_sheet::thumbnail(&original, side)
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
            (header::ETAG, format!("\"{sha256}-{side}\"")),
            (header::CACHE_CONTROL, "private, max-age=86400".to_string()),
        ],
        bytes,
    )
        .into_response())
}
