//! The projections against real stores, written to by a real orchestrator:
//! a rebuild gives the incremental run's rows, nothing is applied twice or
//! skipped across failures, restarts, late commits and lost locks.

#[allow(dead_code)]
#[path = "../../../eventstore/tests/store/support.rs"]
mod support;

mod farm;
mod postgres;
mod rebuild;

use std::collections::BTreeMap;

use eventstore::AnyStore;
use projections::{Runner, RunnerOptions};

pub use support::TestDb;

/// Both backends, as a list of fresh stores (PostgreSQL when configured).
pub async fn backends() -> Vec<TestDb> {
    let mut out = vec![TestDb::sqlite().await];
    if let Some(pg) = TestDb::postgres().await {
        out.push(pg);
    }
    out
}

/// A runner with small batches, so that every test crosses many batches.
pub fn runner(store: &AnyStore, batch: usize) -> Runner {
    Runner::new(
        store.clone(),
        RunnerOptions {
            batch,
            ..RunnerOptions::default()
        },
    )
}

/// The digest of every read-model table after a rebuild from zero by a
/// fresh runner (`live` lets go of the lock for it, and takes it again
/// at its next batch).
pub async fn rebuilt(store: &AnyStore, live: &mut Runner) -> BTreeMap<String, String> {
    live.release().await;
    let mut fresh = runner(store, 500);
    fresh
        .rebuild(&projections::PROJECTIONS, |_, _, _| {})
        .await
        .unwrap();
    fresh.release().await;
    projections::digest(store).await.unwrap()
}

/// Catches up and returns the digest.
pub async fn caught_up(runner: &mut Runner, store: &AnyStore) -> BTreeMap<String, String> {
    runner.catch_up(|_, _, _| {}).await.unwrap();
    projections::digest(store).await.unwrap()
}

/// One integer of the read models.
pub async fn scalar(store: &AnyStore, sql: &str) -> i64 {
    match store {
        AnyStore::Postgres(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(s.pool())
            .await
            .unwrap(),
        AnyStore::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(s.readers())
            .await
            .unwrap(),
    }
}

/// One step that reads something: PostgreSQL holds back every event while
/// an older transaction of the cluster (another test's) is open, so a step
/// right after an append may read nothing yet; wait for it as `catch_up`
/// does.
pub async fn step_some(runner: &mut Runner) -> Result<usize, projections::ProjectionError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match runner.step().await {
            Ok(0) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(0) => panic!("nothing became readable in 30 s"),
            other => return other,
        }
    }
}

/// Waits until the runner holds the lock (a dropped runner's session ends
/// a moment after its connection is dropped).
pub async fn acquired(runner: &mut Runner) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !runner.acquire().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never free"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
