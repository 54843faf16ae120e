//! The agent's signed client against the real `flatrender` HTTP application
//! over a real socket.

use std::sync::Arc;

use api::AppState;
use api::files::BlobStore;
use contracts::node_signing::NodeSecret;
use eventstore::{AnyStore, EventStore, SqliteStore, SystemClock};
use node_agent::client::{AgentClient, ClientError};
use serde_json::json;
use uuid::Uuid;

async fn server() -> (AppState, String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("flatrender-agent-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.join("events.sqlite")).await.unwrap());
    let blobs = BlobStore::open(&dir.join("blobs"), 1 << 20).await.unwrap();
    let state = AppState::new(store, blobs, Arc::new(SystemClock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = api::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (state, url, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_registers_beats_and_downloads_over_http() {
    let (state, url, dir) = server().await;
    let enrolment = api::enroll::enrol(&state.store, "render-01", chrono::Utc::now())
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
    assert!(client.heartbeat().await.unwrap().is_empty());

    let scene = state
        .blobs
        .put(node_agent::renderer::builtin::DEMO_SCENE.as_bytes(), None)
        .await
        .unwrap();
    let bytes = client.download(&scene.sha256).await.unwrap();
    assert_eq!(bytes, node_agent::renderer::builtin::DEMO_SCENE.as_bytes());
    assert!(matches!(
        client.download(&"0".repeat(64)).await,
        Err(ClientError::Refused { status, .. }) if status == 404
    ));

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
    assert_eq!(state.store.read_all(0, 10).await.unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}
