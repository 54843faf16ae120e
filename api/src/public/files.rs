//! `/v1/files`: scene uploads (streamed, checked at upload, deduplicated by
//! content within a tenant), metadata and download.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::file::UploadKind;
use domain::{ContentType, FileCommand, FileId, FileName, Sha256Digest};
use http_body_util::BodyExt;
use projections::FileRow;
use projections::query::{Param, rows};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::Caller;
use super::renders::{BLEND, SCENE_JSON, attachment};
use super::{id, query, read_failed};
use crate::app::AppState;
use crate::error::ApiError;
use crate::files::FileError;

/// The largest builtin (JSON) scene: it is parsed whole at upload.
const MAX_JSON_SCENE: u64 = 16 * 1024 * 1024;

/// `POST /v1/files?name=<file name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadParams {
    name: String,
}

fn file_json(f: &FileRow) -> Value {
    json!({
        "id": f.file_id,
        "kind": f.kind,
        "name": f.name,
        "content_type": f.content_type,
        "size_bytes": f.size_bytes,
        "sha256": f.sha256,
        "render_id": f.render_id,
        "frame": f.frame,
        "created_at": f.created_at,
    })
}

fn not_a_scene(message: &str) -> ApiError {
    ApiError::Unprocessable {
        code: "not_a_scene",
        message: message.to_string(),
        details: json!({ "field": "name" }),
    }
}

/// `POST /v1/files?name=scene.json` with the bytes as the body: a scene,
/// streamed to the blob store and checked before it is recorded — a
/// `.json` builtin scene must parse, a `.blend` must start with Blender's
/// header. The same bytes uploaded again by the tenant are the same file
/// (200 instead of 201).
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<UploadParams>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.may_change()?;
    let p = query(params)?;
    let name = FileName::parse(p.name.clone()).map_err(|e| super::field("name", &e.reason))?;
    let lower = p.name.to_lowercase();
    let content_type = if lower.ends_with(".json") {
        SCENE_JSON
    } else if lower.ends_with(".blend") {
        BLEND
    } else {
        return Err(not_a_scene(
            "a scene is a builtin scene (.json) or a Blender file (.blend)",
        ));
    };
    let limit = state.blobs.max_bytes();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = request.into_body();
    let mut writer = state
        .blobs
        .writer()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| crate::node_auth::body_error(&e))?;
        if let Ok(data) = frame.into_data() {
            writer.write(&data).await.map_err(|e| match e {
                FileError::TooLarge { limit, .. } => ApiError::PayloadTooLarge { limit },
                other => ApiError::Internal(other.into()),
            })?;
        }
    }
    let temp = writer
        .finish()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    if temp.size_bytes() == 0 {
        return Err(not_a_scene("the file is empty"));
    }
    let path = temp.path().to_path_buf();
    let size = temp.size_bytes();
    let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
        if content_type == SCENE_JSON {
            if size > MAX_JSON_SCENE {
                return Err(format!("a builtin scene is at most {MAX_JSON_SCENE} bytes"));
            }
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            crate::submission::check_scene("builtin", &bytes).map_err(|e| e.to_string())
        } else {
            use std::io::Read;
            let mut head = [0u8; 8];
            let mut file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            let n = file.read(&mut head).map_err(|e| e.to_string())?;
            crate::submission::check_scene("blender", &head[..n]).map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    check.map_err(|m| not_a_scene(&m))?;
    let sha256 = temp.sha256().to_string();
    // The tenant's file of the same content, if it has one.
    let same = rows::<FileRow>(
        &state.store,
        "tenant_id = $1 AND sha256 = $2 AND kind = 'scene' AND content_type = $3 AND deleted_at IS NULL ORDER BY created_at, file_id LIMIT 1",
        &[
            Param::Text(caller.tenant_id.to_string()),
            Param::Text(sha256.clone()),
            Param::Text(content_type.to_string()),
        ],
    )
    .await
    .map_err(read_failed)?;
    if let Some(existing) = same.first() {
        drop(temp);
        return Ok((StatusCode::OK, Json(file_json(existing))).into_response());
    }
    let stored = temp
        .store()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let file_id = FileId::new(Uuid::new_v4()).map_err(|e| ApiError::Internal(e.into()))?;
    let at = state.clock.now();
    state
        .orchestrator
        .record_upload(
            file_id,
            FileCommand::Upload {
                file_id,
                tenant_id: caller.tenant_id,
                kind: UploadKind::Scene,
                name: name.clone(),
                content_type: ContentType::parse(content_type)
                    .map_err(|e| ApiError::Internal(e.into()))?,
                size_bytes: stored.size_bytes,
                sha256: Sha256Digest::parse(stored.sha256.clone())
                    .map_err(|e| ApiError::Internal(e.into()))?,
                at,
            },
        )
        .await?;
    let row = FileRow {
        file_id: file_id.to_string(),
        tenant_id: caller.tenant_id.to_string(),
        kind: "scene".into(),
        name: name.as_str().into(),
        content_type: content_type.into(),
        size_bytes: stored.size_bytes as i64,
        sha256: stored.sha256,
        created_at: projections::time(at),
        ..FileRow::default()
    };
    Ok((StatusCode::CREATED, Json(file_json(&row))).into_response())
}

async fn owned(state: &AppState, caller: &Caller, file: &str) -> Result<FileRow, ApiError> {
    let file = id(file, "file_id")?;
    rows::<FileRow>(
        &state.store,
        "tenant_id = $1 AND file_id = $2 AND deleted_at IS NULL",
        &[
            Param::Text(caller.tenant_id.to_string()),
            Param::Text(file.to_string()),
        ],
    )
    .await
    .map_err(read_failed)?
    .into_iter()
    .next()
    .ok_or(ApiError::NotFound)
}

/// `GET /v1/files/{id}`.
pub async fn metadata(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(file_json(&owned(&state, &caller, &file).await?)))
}

/// `GET /v1/files/{id}/content`: the bytes, streamed.
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let f = owned(&state, &caller, &file).await?;
    stream_blob(&state, &f.sha256, &f.content_type, &f.name).await
}

/// Streams a stored blob, checked against its digest as it goes.
pub(crate) async fn stream_blob(
    state: &AppState,
    sha256: &str,
    content_type: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let (size, stream) = state
        .blobs
        .read_stream(sha256)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .ok_or(ApiError::NotFound)?;
    Ok(attachment(
        content_type,
        size,
        name,
        Body::from_stream(stream),
    ))
}
