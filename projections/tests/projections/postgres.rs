//! PostgreSQL only: late-committing transactions, and one runner per
//! database across lost connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventstore::{
    Actor, AnyStore, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::farm::Farm;
use crate::{TestDb, caught_up, rebuilt, runner, scalar};

fn upload(file: Uuid, tenant: Uuid, n: usize) -> serde_json::Value {
    serde_json::json!({
        "file_id": file,
        "tenant_id": tenant,
        "kind": "scene",
        "name": format!("scene-{n}.json"),
        "content_type": "application/json",
        "size_bytes": 5,
        "sha256": format!("{:064x}", n + 1),
        "uploaded_at": "2026-11-24T10:00:00.123456Z",
    })
}

fn meta() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::System {
            component: "test".into(),
        },
        trace_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_that_commits_late_is_not_skipped() {
    let Some(db) = TestDb::postgres_with(eventstore::PgOptions {
        max_connections: 24,
        listen: true,
    })
    .await
    else {
        return;
    };
    let AnyStore::Postgres(pg) = db.store.clone() else {
        unreachable!()
    };
    let (stop, stopped) = watch::channel(false);
    let live = tokio::spawn(runner(&db.store, 20).run(stopped));
    let committed = Arc::new(AtomicUsize::new(0));
    let tenant = Uuid::new_v4();
    let mut writers = Vec::new();
    for w in 0..6 {
        let store = pg.clone();
        let committed = committed.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..40 {
                let file = Uuid::new_v4();
                store
                    .append(AppendRequest {
                        stream_id: file,
                        stream_type: "file".into(),
                        tenant_id: Some(tenant),
                        expected: ExpectedVersion::NoStream,
                        events: vec![NewEvent {
                            event_id: Uuid::new_v4(),
                            event_type: "file.uploaded".into(),
                            schema_version: 1,
                            payload: upload(file, tenant, w * 1000 + n),
                            metadata: meta(),
                        }],
                    })
                    .await
                    .unwrap();
                committed.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for w in 0..4 {
        let pool = pg.pool().clone();
        let store = pg.clone();
        let committed = committed.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..12 {
                let file = Uuid::new_v4();
                let mut tx = pool.begin().await.unwrap();
                let request = AppendRequest {
                    stream_id: file,
                    stream_type: "file".into(),
                    tenant_id: Some(tenant),
                    expected: ExpectedVersion::NoStream,
                    events: vec![NewEvent {
                        event_id: Uuid::new_v4(),
                        event_type: "file.uploaded".into(),
                        schema_version: 1,
                        payload: upload(file, tenant, 100_000 + w * 1000 + n),
                        metadata: meta(),
                    }],
                };
                assert_eq!(store.append_in(&mut tx, &request).await.unwrap(), 1);
                // Hold the position while faster writers commit above it.
                sqlx::query("SELECT pg_sleep(0.03)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                if n % 4 == 3 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    committed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let expected = committed.load(Ordering::SeqCst) as i64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while scalar(&db.store, "SELECT COUNT(*) FROM rm_files").await < expected
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    live.await.unwrap();
    assert_eq!(
        scalar(&db.store, "SELECT COUNT(*) FROM rm_files").await,
        expected,
        "events skipped"
    );
    let live_digest = projections::digest(&db.store).await.unwrap();
    let mut idle = runner(&db.store, 20);
    assert_eq!(live_digest, rebuilt(&db.store, &mut idle).await);
}

/// The pid holding the projections' advisory lock, if any.
async fn lock_holder(pool: &sqlx::PgPool) -> Option<i32> {
    let key = projections::LOCK_KEY;
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = ($1 >> 32)::oid AND objid = ($1 & 4294967295)::oid",
    )
    .bind(key)
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_writes_at_a_time_and_the_lock_is_taken_again_after_a_lost_connection() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let AnyStore::Postgres(pg) = db.store.clone() else {
        unreachable!()
    };
    let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    farm.round().await;
    let second = db.second_instance().await;
    let mut a = runner(&db.store, 10);
    let mut b = runner(&second, 10);
    assert!(a.acquire().await.unwrap());
    assert!(!b.acquire().await.unwrap(), "two runners hold the lock");
    assert!(matches!(
        b.step().await,
        Err(projections::ProjectionError::LockHeld)
    ));
    a.step().await.unwrap();

    // The database drops a's session (as a restart would).
    let holder = lock_holder(pg.pool()).await.expect("a holds the lock");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(pg.pool())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lock_holder(pg.pool()).await.is_some() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a's next batch fails on its dead connection and it lets go; b takes over.
    assert!(a.step().await.is_err());
    assert!(b.acquire().await.unwrap());
    assert!(!a.acquire().await.unwrap(), "a took the lock b holds");
    let new_holder = lock_holder(pg.pool()).await;
    assert!(new_holder.is_some() && new_holder != Some(holder));
    farm.round().await;
    let by_b = caught_up(&mut b, &second).await;
    drop(b);
    // b is gone: a takes the lock again and replays a rebuild equal to b's rows.
    assert!(a.acquire().await.unwrap());
    a.rebuild(&projections::PROJECTIONS, |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(projections::digest(&db.store).await.unwrap(), by_b);
}
