//! The api crate's integration tests: one binary.

mod audit;
mod e2e;
mod enroll;
mod http;
mod node_auth;

use std::path::PathBuf;

use api::AppState;
use api::files::BlobStore;
use eventstore::{AnyStore, SqliteStore};
use uuid::Uuid;

/// A fresh embedded store and blob directory.
pub async fn state() -> (AppState, PathBuf) {
    let dir = std::env::temp_dir().join(format!("flatrender-api-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.join("events.sqlite")).await.unwrap());
    let blobs = BlobStore::open(&dir.join("blobs"), 1024 * 1024)
        .await
        .unwrap();
    let state = AppState::open(
        store,
        blobs,
        std::sync::Arc::new(eventstore::SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    (state, dir)
}
