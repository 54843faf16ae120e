//! What an outside tester got accepted, refused over the wire: a node
//! (the real agent's signed client) reports frames without their outputs,
//! with another frame's, another job's or a never-stored output, completes
//! a task with no frames, uploads before starting. Each gets the contract's
//! error body and the store's event count does not move.

use std::sync::Arc;

use axum::http::StatusCode;
use eventstore::{AnyStore, RecordedEvent, SqliteStore, SystemClock};
use node_agent::client::{AgentClient, ClientError};
use uuid::Uuid;

struct Farm {
    state: api::AppState,
    url: String,
    _serve: tokio::task::JoinHandle<()>,
}

async fn farm() -> Farm {
    let dir = std::env::temp_dir().join(format!("flatrender-refusals-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.join("events.sqlite")).await.unwrap());
    let blobs = api::files::BlobStore::open(&dir.join("blobs"), 1 << 24)
        .await
        .unwrap();
    let state = api::AppState::open(
        store,
        blobs,
        Arc::new(SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = api::router(state.clone());
    let serve = tokio::spawn(async move {
        api::server::serve(
            listener,
            app,
            api::server::ServerLimits::default(),
            std::future::pending(),
        )
        .await
        .unwrap();
    });
    Farm {
        state,
        url,
        _serve: serve,
    }
}

impl Farm {
    async fn node(&self, name: &str) -> AgentClient {
        let e = api::enroll::enrol(
            &self.state.store,
            &self.state.vault,
            name,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        let secret = contracts::node_signing::NodeSecret::from_hex(&e.secret_hex).unwrap();
        let client = AgentClient::new(&self.url, e.node_id, e.key_id, secret);
        client
            .register(&serde_json::json!({
                "cores": 4,
                "memory_bytes": 8_589_934_592u64,
                "gpus": [],
                "renderers": [{ "name": "builtin", "version": "1" }],
                "tags": [],
                "node_class": "standard",
            }))
            .await
            .unwrap();
        client
    }

    async fn render(&self, frames: u32, chunk: u32, size: Option<(u32, u32)>) -> domain::JobId {
        let orch = &self.state.orchestrator;
        let tenant = api::seed::tenant(orch, "Studio", 1, 10, 1_000_000)
            .await
            .unwrap();
        crate::demo_render(orch, &self.state.blobs, tenant, frames, chunk, size).await
    }

    async fn events(&self) -> Vec<RecordedEvent> {
        crate::log(&self.state.store).await
    }
}

/// The status and contract error code of a refusal.
fn refused(result: Result<impl std::fmt::Debug, ClientError>) -> (StatusCode, String) {
    let error = result.expect_err("the server accepted it");
    let status = error.status().expect("an HTTP answer");
    let text = error.to_string();
    assert!(
        !text.contains("Some(") && !text.contains("None"),
        "a message with debug formatting: {text}"
    );
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_without_this_leases_output_of_each_frame_are_refused_and_record_nothing() {
    let farm = farm().await;
    let node = farm.node("render-01").await;
    let other = farm.node("render-02").await;
    farm.render(2, 2, Some((8, 4))).await;
    let a = node.claim(0).await.unwrap().expect("a task");
    let lease = a.lease();
    let before = farm.events().await.len();

    // Complete with nothing reported, not even a start.
    let (status, text) = refused(node.complete(lease).await);
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(text.contains("frames_missing"), "{text}");
    // An upload before the task started.
    let (status, text) = refused(node.upload_output(lease, 1, crate::png_of(8, 4)).await);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert_eq!(farm.events().await.len(), before, "a refusal was recorded");

    node.progress(lease, None, None).await.unwrap();
    let frame1 = node
        .upload_output(lease, 1, crate::png_of(8, 4))
        .await
        .unwrap();
    // Another job's output, uploaded by another node under its own lease.
    farm.render(1, 1, None).await;
    let b = other.claim(0).await.unwrap().expect("the other job's task");
    other.progress(b.lease(), None, None).await.unwrap();
    let foreign = other
        .upload_output(b.lease(), 1, crate::png_of(16, 9))
        .await
        .unwrap();
    let before = farm.events().await.len();

    for (frame, file, what) in [
        (1, None, "no output"),
        (2, Some(frame1), "another frame's output"),
        (1, Some(Uuid::new_v4()), "an output never stored"),
        (1, Some(foreign), "another job's output"),
    ] {
        let (status, text) = refused(node.progress(lease, Some(frame), file).await);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {text}");
        assert!(text.contains("invalid_output"), "{what}: {text}");
    }
    // A frame of the wrong size, bytes that only start like a PNG, and a
    // frame that is not the task's.
    for (frame, bytes) in [
        (2, crate::png_of(16, 9)),
        (2, b"\x89PNG\r\n\x1a\n".to_vec()),
        (3, crate::png_of(8, 4)),
    ] {
        let (status, text) = refused(node.upload_output(lease, frame, bytes).await);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
        assert!(text.contains("invalid_output"), "{text}");
    }
    // One of two frames: still not complete.
    node.progress(lease, Some(1), Some(frame1)).await.unwrap();
    let before_complete = farm.events().await.len();
    let (status, _) = refused(node.complete(lease).await);
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(farm.events().await.len(), before_complete);
    assert_eq!(
        before_complete,
        before + 1,
        "only the accepted frame was recorded"
    );

    let frame2 = node
        .upload_output(lease, 2, crate::png_of(8, 4))
        .await
        .unwrap();
    node.progress(lease, Some(2), Some(frame2)).await.unwrap();
    node.complete(lease).await.unwrap();
    let events = farm.events().await;
    let count = |key: &str| events.iter().filter(|e| e.routing_key == key).count();
    assert_eq!(count("render.task.completed.v1"), 1);
    assert_eq!(count("render.task.progressed.v1"), 2);
    // The charge follows its completion.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while farm
        .events()
        .await
        .iter()
        .all(|e| e.routing_key != "tenant.credit_charged.v1")
    {
        assert!(std::time::Instant::now() < deadline, "never charged");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
