//! SQLite only: the write-ahead log is copied into the database file in the
//! background, not left to grow until the writer's own backstop.

use std::time::{Duration, Instant};

use eventstore::{EventStore, ExpectedVersion, SqliteStore};
use uuid::Uuid;

use crate::support::{tenant_append, tenant_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_reach_the_database_file_without_waiting_for_the_backstop() {
    let dir = std::env::temp_dir().join(format!("flatrender-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.sqlite");
    let store = SqliteStore::open(&path).await.unwrap();
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = size();
    // A few hundred events: far below the writer's own checkpoint threshold.
    for _ in 0..5 {
        let events = (0..100).map(tenant_event).collect();
        store
            .append(tenant_append(
                Uuid::new_v4(),
                ExpectedVersion::NoStream,
                events,
            ))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while size() <= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        size() > before,
        "the database file stayed at {before} bytes: nothing was checkpointed"
    );
    assert_eq!(store.read_all(0, 1000).await.unwrap().len(), 500);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
