//! `GET /v1/renders/{id}/archive`: every frame's current output in one
//! `tar` (ustar) stream, read blob by blob, never the whole set in memory.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use projections::query::{Param, rows};
use projections::{FileRow, FrameRow};

use super::auth::Caller;
use super::read_failed;
use crate::app::AppState;
use crate::error::ApiError;

const BLOCK: usize = 512;

/// The ustar header of a regular file.
fn header(name: &str, size: u64, mtime: i64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let put = |h: &mut [u8; BLOCK], at: usize, bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut h, 0, &name.as_bytes()[..name.len().min(100)]);
    put(&mut h, 100, b"0000644\0");
    put(&mut h, 108, b"0000000\0");
    put(&mut h, 116, b"0000000\0");
    put(&mut h, 124, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, format!("{:011o}\0", mtime.max(0)).as_bytes());
    put(&mut h, 148, b"        ");
    h[156] = b'0';
    put(&mut h, 257, b"ustar\0");
    put(&mut h, 263, b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

fn padding(size: u64) -> usize {
    (BLOCK - (size as usize % BLOCK)) % BLOCK
}

/// `GET /v1/renders/{id}/archive`: `frame_0001.png`, … in frame order.
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
) -> Result<Response, ApiError> {
    let r = super::renders::owned(&state, &caller, &render).await?;
    let tenant = Param::Text(r.tenant_id.clone());
    let frames = rows::<FrameRow>(
        &state.store,
        "tenant_id = $1 AND render_id = $2 ORDER BY frame",
        &[tenant.clone(), Param::Text(r.render_id.clone())],
    )
    .await
    .map_err(read_failed)?;
    let files = rows::<FileRow>(
        &state.store,
        "tenant_id = $1 AND render_id = $2 AND kind = 'output'",
        &[tenant, Param::Text(r.render_id.clone())],
    )
    .await
    .map_err(read_failed)?;
    let mut entries = Vec::with_capacity(frames.len());
    for f in &frames {
        let file = files
            .iter()
            .find(|x| x.file_id == f.file_id)
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("frame {} has no file row", f.frame))
            })?;
        let mtime =
            chrono::DateTime::parse_from_rfc3339(&f.finished_at).map_or(0, |t| t.timestamp());
        entries.push((
            format!("frame_{:04}.png", f.frame),
            file.sha256.clone(),
            file.size_bytes as u64,
            mtime,
        ));
    }
    let length: u64 = entries
        .iter()
        .map(|(_, _, size, _)| BLOCK as u64 + size + padding(*size) as u64)
        .sum::<u64>()
        + 2 * BLOCK as u64;
    // A bounded channel: the writer waits for a slow client instead of
    // reading ahead.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let blobs = state.blobs.clone();
    tokio::spawn(async move {
        for (name, sha, size, mtime) in entries {
            if tx
                .send(Ok(Bytes::copy_from_slice(&header(&name, size, mtime))))
                .await
                .is_err()
            {
                return;
            }
            let stream = match blobs.read_stream(&sha).await {
                Ok(Some((_, stream))) => stream,
                Ok(None) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(format!("{name} is missing"))))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut stream = stream;
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
            if tx
                .send(Ok(Bytes::from(vec![0u8; padding(size)])))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from(vec![0u8; 2 * BLOCK]))).await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.tar\"", r.render_id),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
