//! Gap safety on PostgreSQL: concurrent writers, some of whose transactions
//! are deliberately slow (they take their positions, then sleep before
//! committing) or roll back, and a reader tailing `read_all` that must see
//! every committed event exactly once, in position order.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventstore::{AnyStore, EventStore, ExpectedVersion, NewEvent, PgOptions};
use uuid::Uuid;

use crate::support::{TestDb, tenant_append, tenant_event};

const FAST_WRITERS: usize = 10;
const SLOW_WRITERS: usize = 6;
const ROUNDS: usize = 60;

/// A pseudo-random number in `0..n` (no RNG dependency needed for jitter).
fn jitter(n: u64) -> u64 {
    (Uuid::new_v4().as_u128() % n as u128) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tailing_reader_sees_every_committed_event_once_in_order() {
    let Some(db) = TestDb::postgres_with(PgOptions {
        max_connections: 32,
        listen: true,
    })
    .await
    else {
        return;
    };
    let AnyStore::Postgres(pg) = db.store.clone() else {
        unreachable!()
    };
    let done = Arc::new(AtomicBool::new(false));

    let mut writers = Vec::new();
    for _ in 0..FAST_WRITERS {
        let store = pg.clone();
        writers.push(tokio::spawn(async move {
            let stream = Uuid::new_v4();
            for round in 0..ROUNDS {
                let events = (0..(round % 3 + 1) as i64).map(tenant_event).collect();
                store
                    .append(tenant_append(stream, ExpectedVersion::Any, events))
                    .await
                    .unwrap();
            }
        }));
    }
    for _ in 0..SLOW_WRITERS {
        let pool = pg.pool().clone();
        let store = pg.clone();
        writers.push(tokio::spawn(async move {
            let stream = Uuid::new_v4();
            for round in 0..ROUNDS / 3 {
                let mut tx = pool.begin().await.unwrap();
                let ids: Vec<Uuid> = (0..2).map(|_| Uuid::new_v4()).collect();
                let events = ids
                    .iter()
                    .map(|id| NewEvent {
                        event_id: *id,
                        ..tenant_event(round as i64)
                    })
                    .collect();
                let request = tenant_append(stream, ExpectedVersion::Any, events);
                assert_eq!(store.append_in(&mut tx, &request).await.unwrap(), 2);
                // Hold the positions while faster writers commit above them.
                sqlx::query("SELECT pg_sleep($1)")
                    .bind(jitter(40) as f64 / 1000.0)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                if round % 5 == 4 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
            }
        }));
    }

    // What the writers commit (every fifth slow transaction rolls back).
    let fast_total: usize = (0..ROUNDS).map(|r| r % 3 + 1).sum::<usize>() * FAST_WRITERS;
    let slow_total = SLOW_WRITERS * 2 * (ROUNDS / 3 - ROUNDS / 3 / 5);
    let expected = fast_total + slow_total;

    // The reader under test, and a naive keyset reader beside it for contrast.
    // The reader runs until it has seen as many events as were committed:
    // its horizon is the cluster's oldest open transaction, which other
    // tests' transactions can hold back for a moment after the writers end.
    let reader = {
        let store = pg.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut position = 0;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let batch = store.read_all(position, 50).await.unwrap();
                if batch.is_empty() {
                    if finished && seen.len() >= expected {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(jitter(3))).await;
                }
                for event in batch {
                    assert!(event.global_position > position, "read_all went backwards");
                    position = event.global_position;
                    seen.push(event.event_id);
                }
            }
        })
    };
    // The filtered read must be gap-safe too (all events here are of the
    // one key it asks for).
    let filtered = {
        let store = pg.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut position = 0;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let read = store
                    .read_all_of(position, &["tenant.credit_added.v1"], 50)
                    .await
                    .unwrap();
                if read.through == position {
                    if finished && seen.len() >= expected {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(jitter(3))).await;
                }
                for event in read.events {
                    assert!(
                        event.global_position > position,
                        "read_all_of went backwards"
                    );
                    position = event.global_position;
                    seen.push(event.event_id);
                }
                position = read.through;
            }
        })
    };
    let naive = {
        let pool = pg.pool().clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut position = 0i64;
            let mut seen = HashSet::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let rows: Vec<(i64, Uuid)> = sqlx::query_as(
                    "SELECT global_position, event_id FROM events WHERE global_position > $1 \
                     ORDER BY global_position LIMIT 50",
                )
                .bind(position)
                .fetch_all(&pool)
                .await
                .unwrap();
                if rows.is_empty() && finished {
                    return seen;
                }
                for (p, id) in rows {
                    position = p;
                    seen.insert(id);
                }
            }
        })
    };

    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::Release);
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    let filtered_seen = tokio::time::timeout(Duration::from_secs(60), filtered)
        .await
        .unwrap()
        .unwrap();
    let naive_seen = naive.await.unwrap();

    let committed: Vec<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM events ORDER BY global_position")
            .fetch_all(pg.pool())
            .await
            .unwrap();
    assert_eq!(
        committed.len(),
        expected,
        "rolled-back appends left nothing"
    );
    let unique: HashSet<&Uuid> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event seen twice");
    assert_eq!(
        seen, committed,
        "every committed event, once, in position order"
    );
    assert_eq!(
        filtered_seen, committed,
        "the filtered read: every committed event, once, in position order"
    );
    let naive_missed = committed.len() - naive_seen.len();
    eprintln!(
        "gap safety: {} events; the naive keyset reader missed {naive_missed}",
        committed.len()
    );
    // The stress must really create the hazard that read_all guards against.
    assert!(
        naive_missed > 0,
        "no slow transaction was overtaken: the test proved nothing"
    );
    drop(pg);
    db.cleanup().await;
}
