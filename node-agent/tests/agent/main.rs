//! The agent's signed client against the real `flatrender` HTTP application
//! over a real socket.

mod outage;

use std::sync::Arc;

use api::AppState;
use api::files::BlobStore;
use contracts::node_signing::NodeSecret;
use eventstore::{AnyStore, EventStore, SqliteStore, SystemClock};
use node_agent::client::{AgentClient, ClientError};
use serde_json::json;
use uuid::Uuid;

async fn server() -> (AppState, String, std::path::PathBuf) {
    server_with(|router| router).await
}

/// A server whose router `wrap` may put a layer around (to simulate an
/// orchestrator that is down for some requests).
async fn server_with(
    wrap: impl FnOnce(axum::Router) -> axum::Router,
) -> (AppState, String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("flatrender-agent-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.join("events.sqlite")).await.unwrap());
    let blobs = BlobStore::open(&dir.join("blobs"), 1 << 20).await.unwrap();
    let state = AppState::open(
        store,
        blobs,
        Arc::new(SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = wrap(api::router(state.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, url, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_registers_beats_and_downloads_over_http() {
    let (state, url, dir) = server().await;
    let enrolment = api::enroll::enrol(&state.store, &state.vault, "render-01", chrono::Utc::now())
        .await
        .unwrap();
    let client = AgentClient::new(
        &url,
        enrolment.node_id,
        enrolment.key_id,
        NodeSecret::from_hex(&enrolment.secret_hex).unwrap(),
    );
    let capabilities = json!({
        "cores": 2, "memory_bytes": 1u64 << 30, "gpus": [],
        "renderers": [{ "name": "builtin", "version": "1" }], "tags": [], "node_class": "standard",
    });
    client.register(&capabilities).await.unwrap();
    let events = state.store.read_all(0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].routing_key, "node.registered.v1");
    assert!(client.heartbeat(&[]).await.unwrap().is_empty());

    // No work yet: a claim answers 204 after its wait.
    assert_eq!(client.claim(0).await.unwrap(), None);
    let orch = &state.orchestrator;
    let tenant = api::seed::tenant(orch, "Studio", 1, 10, 10_000)
        .await
        .unwrap();
    let scene_bytes = node_agent::renderer::builtin::DEMO_SCENE.as_bytes();
    let scene_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(scene_bytes));
    // Before it holds a lease on a job that needs it, a node reads no input.
    let scene = api::seed::scene(orch, &state.blobs, tenant, "demo.json", scene_bytes)
        .await
        .unwrap();
    assert!(matches!(
        client.download(&scene_sha).await,
        Err(ClientError::Refused { status, .. }) if status == 404
    ));
    let render = api::seed::Render {
        frames: (1, 2),
        chunk_size: 2,
        ..Default::default()
    };
    let job = api::seed::submit(orch, tenant, scene, &render)
        .await
        .unwrap();
    let assignment = client.claim(1).await.unwrap().expect("work is queued");
    assert_eq!(assignment.job_id, job.as_uuid());
    assert_eq!((assignment.frames.start, assignment.frames.end), (1, 2));
    assert_eq!(assignment.lease_epoch, 1);
    assert_eq!(assignment.scene.sha256, scene_sha);
    let bytes = client.download(&scene_sha).await.unwrap();
    assert_eq!(bytes, scene_bytes);
    assert!(matches!(
        client.download(&"0".repeat(64)).await,
        Err(ClientError::Refused { status, .. }) if status == 404
    ));
    // The one task is leased: nothing more to claim.
    assert_eq!(client.claim(0).await.unwrap(), None);
    let registered = 1;

    // A node with the wrong secret is refused with the contract's error.
    let impostor = AgentClient::new(
        &url,
        enrolment.node_id,
        enrolment.key_id,
        NodeSecret::from_bytes(vec![9; 32]).unwrap(),
    );
    match impostor.register(&capabilities).await {
        Err(ClientError::Refused { status, code, .. }) => {
            assert_eq!(status, 401);
            assert_eq!(code, "unauthorized");
        }
        other => panic!("the impostor was not refused: {other:?}"),
    }
    let events = state.store.read_all(0, 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.stream_id == enrolment.node_id)
            .count(),
        registered + 1,
        "registration and coming online only: {events:#?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// While the orchestrator cannot take a completion (here: its first two
/// attempts answer 503), the agent keeps the completion and delivers it
/// later; the task completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_the_orchestrator_could_not_take_is_buffered_and_delivered() {
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gate = refused.clone();
    let (state, url, dir) = server_with(move |router| {
        router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let gate = gate.clone();
                async move {
                    use axum::response::IntoResponse;
                    if request.uri().path().ends_with("/complete")
                        && gate.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2
                    {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    next.run(request).await
                }
            },
        ))
    })
    .await;
    let enrolment = api::enroll::enrol(&state.store, &state.vault, "render-02", chrono::Utc::now())
        .await
        .unwrap();
    let orch = &state.orchestrator;
    let tenant = api::seed::tenant(orch, "Studio", 1, 10, 10_000)
        .await
        .unwrap();
    let scene_bytes = node_agent::renderer::builtin::DEMO_SCENE.as_bytes();
    let scene = api::seed::scene(orch, &state.blobs, tenant, "demo.json", scene_bytes)
        .await
        .unwrap();
    let render = api::seed::Render {
        frames: (1, 1),
        chunk_size: 1,
        ..Default::default()
    };
    let job = api::seed::submit(orch, tenant, scene, &render)
        .await
        .unwrap();
    let client = AgentClient::new(
        &url,
        enrolment.node_id,
        enrolment.key_id,
        NodeSecret::from_hex(&enrolment.secret_hex).unwrap(),
    );
    let config = node_agent::config::NodeConfig::resolve(
        node_agent::config::NodeArgs {
            server_url: vec![url.clone()],
            node_id: Some(enrolment.node_id),
            key_id: Some(enrolment.key_id),
            data_dir: Some(dir.join("node")),
            ..Default::default()
        },
        Some(enrolment.secret_hex.clone()),
    )
    .unwrap();
    let renderers = config.renderers();
    let settings = node_agent::agent::AgentSettings {
        data_dir: dir.join("node"),
        capabilities: config.capabilities(&renderers),
        heartbeat_every: std::time::Duration::from_secs(1),
        claim_wait_seconds: 1,
        max_tasks: Some(1),
        backoff: node_agent::agent::Backoff::DEFAULT,
        give_up_after: node_agent::agent::AgentSettings::GIVE_UP_AFTER,
    };
    let summary = node_agent::agent::Agent::new(client, renderers, settings)
        .run(std::future::pending())
        .await
        .unwrap();
    assert_eq!(summary.completed, 1);
    assert_eq!(summary.frames, 1);
    assert!(
        refused.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "two refusals, then delivered"
    );
    assert!(orch.is_finished(job).await);
    let events = state.store.read_all(0, 1000).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.routing_key == "render.task.completed.v1")
            .count(),
        1
    );
    std::fs::remove_dir_all(dir).unwrap();
}
