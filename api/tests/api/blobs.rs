//! Blobs shared between instances: with object storage configured, a scene
//! uploaded through one instance and a frame a node stored through it
//! download through another instance, whose own directory never held them.
//! Against the S3-compatible server `.ci/run` starts
//! (`FLATRENDER_TEST_S3_URL`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use uuid::Uuid;

use crate::public::{Api, frame_done, started_task};

/// The test S3 bucket under a new prefix (required in CI).
fn s3() -> Option<Arc<dyn object_store::ObjectStore>> {
    match std::env::var("FLATRENDER_TEST_S3_URL") {
        Ok(url) if !url.is_empty() => {
            let url = format!("{}/api-test-{}", url.trim_end_matches('/'), Uuid::new_v4());
            Some(api::files::object_storage(&url).expect("the test S3 URL"))
        }
        _ if std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("FLATRENDER_REQUIRE_SERVICES=1 but FLATRENDER_TEST_S3_URL is not set")
        }
        _ => {
            eprintln!("!!! SKIPPED: FLATRENDER_TEST_S3_URL is not set; shared blobs did not run");
            None
        }
    }
}

async fn get(state: &api::AppState, token: &str, path: &str) -> (StatusCode, Vec<u8>) {
    let request = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = api::router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    (
        status,
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { files_under(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test]
async fn a_scene_and_a_frame_stored_through_one_instance_download_through_another() {
    let Some(remote) = s3() else { return };
    let mut api = Api::new().await;
    api.state.blobs = api.state.blobs.clone().with_remote(remote.clone());
    api.state.blobs.ready().await.unwrap();
    // The second instance: the same database and object storage, its own
    // directory.
    let dir_two = std::env::temp_dir().join(format!("flatrender-two-{}", Uuid::new_v4()));
    let store = eventstore::AnyStore::Sqlite(
        eventstore::SqliteStore::open(&api.dir.join("events.sqlite"))
            .await
            .unwrap(),
    );
    let blobs = api::files::BlobStore::open(&dir_two.join("blobs"), 1024 * 1024)
        .await
        .unwrap()
        .with_remote(remote);
    let two = api::AppState::open(
        store,
        blobs,
        Arc::new(eventstore::SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap()
    .with_auth(api.state.auth.clone());
    // Through one: a scene upload and a frame a node rendered.
    let (scene, render, task, lease) = started_task(&api).await;
    let png = crate::png_of(16, 8);
    let frame = task.frames.start;
    let sha = frame_done(&api, lease, frame, &png).await;
    api.catch_up().await;
    // Through two: the same bytes.
    let token = api.token(api.a);
    let (status, bytes) = get(&two, &token, &format!("/v1/files/{scene}/content")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, node_agent::renderer::builtin::DEMO_SCENE.as_bytes());
    let (status, bytes) = get(
        &two,
        &token,
        &format!("/v1/renders/{render}/frames/{frame}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, png);
    assert_eq!(two.blobs.get(&sha).await.unwrap(), Some(png.clone()));
    // Neither instance's directory holds a blob (temporaries are gone).
    assert_eq!(files_under(&dir_two.join("blobs").join(&sha[..2])), 0);
    assert_eq!(files_under(&api.dir.join("blobs").join(&sha[..2])), 0);
    assert_eq!(files_under(&api.dir.join("blobs").join("tmp")), 0);
    // Another tenant still cannot read it through either.
    let other = api.token(api.b);
    let (status, _) = get(&two, &other, &format!("/v1/files/{scene}/content")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(dir_two);
}
