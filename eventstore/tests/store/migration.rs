//! A store written in the old row layout (migrations 0001–0005: names as
//! text, metadata as JSON, a tenant index) upgrades to the compact layout
//! (0006) on both backends: every event reads back as it was written, at
//! its position, its hash chain verifies, and appends continue the chains.

use std::str::FromStr;

use chrono::Duration;
use eventstore::hashing::{GENESIS, canonical, chain, digest_of, format_time};
use eventstore::{
    Actor, AnyStore, EventStore, ExpectedVersion, PgOptions, PgStore, RecordedEvent, SqliteStore,
    verify_all,
};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, Executor};
use uuid::Uuid;

use crate::support::{pg_url, t0, tenant_append, tenant_event};

/// The last migration of the old layout.
const OLD_LAYOUT: i64 = 5;

/// Events as the old layout held them: three streams (a tenant's with
/// every kind of actor, causation and trace; a farm-wide node stream with
/// no tenant; a second tenant's), chained by the hashing rules, at
/// positions that are not dense.
fn old_history() -> Vec<RecordedEvent> {
    let tenant = Uuid::new_v4();
    let other = Uuid::new_v4();
    let node = Uuid::new_v4();
    let actors = [
        Actor::User { id: Uuid::new_v4() },
        Actor::ApiKey { id: Uuid::new_v4() },
        Actor::Node { id: node },
        Actor::System {
            component: "orchestrator \"ü\"".into(),
        },
    ];
    let plan: Vec<(Uuid, &str, Option<Uuid>, &str, serde_json::Value)> = vec![
        (
            tenant,
            "tenant",
            Some(tenant),
            "tenant.created",
            json!({ "name": "Studio Ä" }),
        ),
        (
            node,
            "node",
            None,
            "node.registered",
            json!({ "name": "n1", "cores": 8 }),
        ),
        (
            tenant,
            "tenant",
            Some(tenant),
            "tenant.credit_added",
            json!({ "amount_minor": 1, "x": [1.5, null, true] }),
        ),
        (
            other,
            "tenant",
            Some(other),
            "tenant.created",
            json!({ "name": "other" }),
        ),
        (
            tenant,
            "tenant",
            Some(tenant),
            "tenant.credit_added",
            json!({ "amount_minor": 2 }),
        ),
        (node, "node", None, "node.offline", json!({})),
        (
            tenant,
            "tenant",
            Some(tenant),
            "tenant.credit_added",
            json!({ "amount_minor": 3, "note": "a\nb" }),
        ),
    ];
    let mut heads: std::collections::HashMap<Uuid, (u64, [u8; 32])> = Default::default();
    plan.into_iter()
        .enumerate()
        .map(
            |(i, (stream_id, stream_type, tenant_id, event_type, payload))| {
                let (version, prev) = heads.get(&stream_id).copied().unwrap_or((0, GENESIS));
                let metadata = eventstore::EventMetadata {
                    correlation_id: Uuid::new_v4(),
                    causation_id: (i % 2 == 0).then(Uuid::new_v4),
                    actor: actors[i % actors.len()].clone(),
                    trace_id: (i % 3 != 0).then(|| format!("trace-{i}")),
                };
                let mut event = RecordedEvent {
                    global_position: (1000 + i as i64) * 65536 + (i as i64 % 3),
                    event_id: Uuid::new_v4(),
                    stream_id,
                    stream_type: stream_type.into(),
                    stream_version: version + 1,
                    event_type: event_type.into(),
                    routing_key: format!("{event_type}.v1"),
                    schema_version: 1,
                    tenant_id,
                    payload,
                    metadata: serde_json::to_value(&metadata).unwrap(),
                    recorded_at: t0() + Duration::microseconds(i as i64 * 1_000_001),
                    prev_hash: prev,
                    hash: [0; 32],
                };
                event.hash = chain(&prev, event.stream_version, &digest_of(&event));
                heads.insert(stream_id, (event.stream_version, event.hash));
                event
            },
        )
        .collect()
}

/// What the migrated store must say: the same events, a clean chain, and
/// appends that continue it.
async fn check_migrated(store: AnyStore, written: &[RecordedEvent]) {
    let read = store.read_all(0, 100).await.unwrap();
    assert_eq!(read, written, "events read back after the migration");
    let tenant = written[0].stream_id;
    let by_stream = store.read_stream(tenant, 1, 100).await.unwrap();
    assert_eq!(by_stream.len(), 4);
    assert_eq!(
        store.read_tenant(tenant, 0, 100).await.unwrap(),
        by_stream,
        "the tenant's events without the tenant index"
    );
    // Payload schemas are not what this test is about: chains and catalog are.
    let report = verify_all(&store, |_, _| Ok(()), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.events, written.len() as u64);

    // The chain goes on from the migrated head, and the audit still holds.
    let result = store
        .append(tenant_append(
            tenant,
            ExpectedVersion::Exact(4),
            vec![tenant_event(9)],
        ))
        .await
        .unwrap();
    assert_eq!(result.first_version, 5);
    assert!(result.first_position > written.last().unwrap().global_position);
    // Other tests' open transactions can hold the gap-safe horizon below
    // the new event for a moment (PostgreSQL's xmin is the cluster's).
    for _ in 0..200 {
        if store.read_all(0, 100).await.unwrap().len() > written.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after = store.read_stream(tenant, 4, 10).await.unwrap();
    assert_eq!(after[1].prev_hash, after[0].hash);
    let report = verify_all(&store, |_, _| Ok(()), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.events, written.len() as u64 + 1);
}

#[tokio::test]
async fn an_old_sqlite_store_migrates_verifies_and_replays() {
    let dir = std::env::temp_dir().join(format!("flatrender-migrate-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.sqlite");
    let written = old_history();
    {
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::migrate!("../migrations/sqlite")
            .run_to(OLD_LAYOUT, &pool)
            .await
            .unwrap();
        for e in &written {
            sqlx::query(
                "INSERT INTO events (global_position, event_id, stream_id, stream_type, \
                 stream_version, event_type, routing_key, schema_version, tenant_id, payload, \
                 metadata, recorded_at, prev_hash, hash) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.global_position)
            .bind(e.event_id)
            .bind(e.stream_id)
            .bind(&e.stream_type)
            .bind(e.stream_version as i64)
            .bind(&e.event_type)
            .bind(&e.routing_key)
            .bind(e.schema_version as i64)
            .bind(e.tenant_id)
            .bind(canonical(&e.payload))
            .bind(canonical(&e.metadata))
            .bind(format_time(e.recorded_at))
            .bind(e.prev_hash.to_vec())
            .bind(e.hash.to_vec())
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    check_migrated(AnyStore::Sqlite(store), &written).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_old_postgres_store_migrates_verifies_and_replays() {
    let Some(url) = pg_url() else { return };
    let admin = PgConnectOptions::from_str(&url).unwrap();
    let name = format!("fr_test_{}", Uuid::new_v4().simple());
    let mut conn = admin.connect().await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(eventstore::postgres::tuned(admin.clone().database(&name)))
        .await
        .unwrap();
    sqlx::migrate!("../migrations/postgres")
        .run_to(OLD_LAYOUT, &pool)
        .await
        .unwrap();
    let written = old_history();
    for e in &written {
        sqlx::query(
            "INSERT INTO events (global_position, event_id, stream_id, stream_type, \
             stream_version, event_type, routing_key, schema_version, tenant_id, payload, \
             metadata, recorded_at, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12, $13, $14)",
        )
        .bind(e.global_position)
        .bind(e.event_id)
        .bind(e.stream_id)
        .bind(&e.stream_type)
        .bind(e.stream_version as i64)
        .bind(&e.event_type)
        .bind(&e.routing_key)
        .bind(e.schema_version as i32)
        .bind(e.tenant_id)
        .bind(canonical(&e.payload))
        .bind(canonical(&e.metadata))
        .bind(e.recorded_at)
        .bind(e.prev_hash.to_vec())
        .bind(e.hash.to_vec())
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = PgStore::from_pool(
        pool,
        PgOptions::default(),
        std::sync::Arc::new(eventstore::SystemClock),
    )
    .await
    .unwrap();
    check_migrated(AnyStore::Postgres(store), &written).await;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_row_the_new_layout_cannot_hold_stops_the_migration_and_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("flatrender-migrate-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.sqlite");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::migrate!("../migrations/sqlite")
        .run_to(OLD_LAYOUT, &pool)
        .await
        .unwrap();
    // Metadata without an actor: not the envelope SPEC §1 defines.
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, stream_type, stream_version, event_type, \
         routing_key, schema_version, tenant_id, payload, metadata, recorded_at, prev_hash, hash) \
         VALUES (?, ?, 'tenant', 1, 'tenant.created', 'tenant.created.v1', 1, NULL, '{}', \
         '{\"correlation_id\":\"00000000-0000-0000-0000-000000000001\"}', \
         '2026-11-24T10:00:00.123456Z', zeroblob(32), zeroblob(32))",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let refused = SqliteStore::open(&path).await;
    assert!(refused.is_err(), "the migration must refuse the row");
    let options = SqliteConnectOptions::new().filename(&path);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE metadata IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, 1, "the old table is untouched");
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
