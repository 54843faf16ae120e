//! Fresh stores for each test: a temporary SQLite file, or a PostgreSQL
//! database named by a new UUID on `FLATRENDER_TEST_DATABASE_URL`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use eventstore::{
    Actor, AnyStore, AppendRequest, EventMetadata, ExpectedVersion, ManualClock, NewEvent,
    PgOptions, PgStore, SqliteStore,
};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};
use uuid::Uuid;

/// The time the manual clock of every test store starts at.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T10:00:00.123456Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// The PostgreSQL server for tests, or `None` (said loudly) when there is none
/// and services are not required.
pub fn pg_url() -> Option<String> {
    match std::env::var("FLATRENDER_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("FLATRENDER_REQUIRE_SERVICES=1 but FLATRENDER_TEST_DATABASE_URL is not set")
        }
        _ => {
            eprintln!(
                "!!! SKIPPED: FLATRENDER_TEST_DATABASE_URL is not set; PostgreSQL tests did not run"
            );
            None
        }
    }
}

/// The RabbitMQ server for tests, or `None` (said loudly) when there is
/// none and services are not required (the relay's tests).
#[allow(dead_code)]
pub fn amqp_url() -> Option<String> {
    match std::env::var("FLATRENDER_TEST_AMQP_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("FLATRENDER_REQUIRE_SERVICES=1 but FLATRENDER_TEST_AMQP_URL is not set")
        }
        _ => {
            eprintln!(
                "!!! SKIPPED: FLATRENDER_TEST_AMQP_URL is not set; RabbitMQ tests did not run"
            );
            None
        }
    }
}

/// A store for one test, and what it takes to clean up after it.
#[derive(Debug)]
pub struct TestDb {
    pub store: AnyStore,
    pub clock: Arc<ManualClock>,
    place: Place,
}

#[derive(Debug)]
enum Place {
    Sqlite(PathBuf),
    Postgres {
        admin: Box<PgConnectOptions>,
        name: String,
    },
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("flatrender-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let store = SqliteStore::open_with_clock(&dir.join("events.sqlite"), clock.clone())
            .await
            .unwrap();
        Self {
            store: AnyStore::Sqlite(store),
            clock,
            place: Place::Sqlite(dir),
        }
    }

    pub async fn postgres() -> Option<Self> {
        Self::postgres_with(PgOptions::default()).await
    }

    pub async fn postgres_with(options: PgOptions) -> Option<Self> {
        let url = pg_url()?;
        let admin = PgConnectOptions::from_str(&url).expect("FLATRENDER_TEST_DATABASE_URL");
        let name = format!("fr_test_{}", Uuid::new_v4().simple());
        let mut conn = admin
            .connect()
            .await
            .expect("connect to the test PostgreSQL");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        conn.close().await.unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(eventstore::postgres::tuned(admin.clone().database(&name)))
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(t0()));
        let store = PgStore::from_pool(pool, options, clock.clone())
            .await
            .unwrap();
        Some(Self {
            store: AnyStore::Postgres(store),
            clock,
            place: Place::Postgres {
                admin: Box::new(admin),
                name,
            },
        })
    }

    /// Changes a stored payload behind the store's back, as an attacker with
    /// database access would (dropping the append-only guard first).
    pub async fn tamper_payload(&self, position: i64, payload: serde_json::Value) {
        match &self.store {
            AnyStore::Postgres(s) => {
                let mut tx = s.pool().begin().await.unwrap();
                tx.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
                    .await
                    .unwrap();
                sqlx::query("UPDATE events SET payload = $1::json WHERE global_position = $2")
                    .bind(payload.to_string())
                    .bind(position)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.execute("ALTER TABLE events ENABLE TRIGGER events_append_only")
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    conn.execute("DROP TRIGGER events_no_update").await.unwrap();
                    sqlx::query("UPDATE events SET payload = ? WHERE global_position = ?")
                        .bind(payload.to_string())
                        .bind(position)
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                })
                .await;
            }
        }
    }

    /// Flips the first byte of a stored view snapshot's body behind the
    /// store's back (a disk or an operator corrupting it at rest).
    pub async fn corrupt_view_snapshot(&self, name: &str) {
        let sql = "UPDATE view_snapshots SET body = $1 WHERE name = $2";
        let body: Vec<u8> = match &self.store {
            AnyStore::Postgres(s) => {
                sqlx::query_scalar("SELECT body FROM view_snapshots WHERE name = $1")
                    .bind(name)
                    .fetch_one(s.pool())
                    .await
                    .unwrap()
            }
            AnyStore::Sqlite(s) => {
                sqlx::query_scalar("SELECT body FROM view_snapshots WHERE name = $1")
                    .bind(name)
                    .fetch_one(s.readers())
                    .await
                    .unwrap()
            }
        };
        let mut body = body;
        body[0] ^= 0xff;
        match &self.store {
            AnyStore::Postgres(s) => {
                sqlx::query(sql)
                    .bind(body)
                    .bind(name)
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    sqlx::query(sql)
                        .bind(body)
                        .bind(name)
                        .execute(conn)
                        .await
                        .unwrap()
                })
                .await;
            }
        }
    }

    /// Tries to change and delete a stored event through plain SQL.
    pub async fn try_rewrite(&self, position: i64) -> (bool, bool) {
        match &self.store {
            AnyStore::Postgres(s) => {
                let update =
                    sqlx::query("UPDATE events SET type_code = 0 WHERE global_position = $1")
                        .bind(position)
                        .execute(s.pool())
                        .await;
                let delete = sqlx::query("DELETE FROM events WHERE global_position = $1")
                    .bind(position)
                    .execute(s.pool())
                    .await;
                (update.is_ok(), delete.is_ok())
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    let update =
                        sqlx::query("UPDATE events SET type_code = 0 WHERE global_position = ?")
                            .bind(position)
                            .execute(&mut *conn)
                            .await;
                    let delete = sqlx::query("DELETE FROM events WHERE global_position = ?")
                        .bind(position)
                        .execute(&mut *conn)
                        .await;
                    (update.is_ok(), delete.is_ok())
                })
                .await
            }
        }
    }

    /// A second store instance on the same database, as a second process or
    /// orchestrator instance would have.
    pub async fn second_instance(&self) -> AnyStore {
        match (&self.store, &self.place) {
            (AnyStore::Postgres(s), _) => {
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .connect_with(s.pool().connect_options().as_ref().clone())
                    .await
                    .unwrap();
                let store = PgStore::from_pool(pool, PgOptions::default(), self.clock.clone())
                    .await
                    .unwrap();
                AnyStore::Postgres(store)
            }
            (AnyStore::Sqlite(_), Place::Sqlite(dir)) => AnyStore::Sqlite(
                SqliteStore::open_with_clock(&dir.join("events.sqlite"), self.clock.clone())
                    .await
                    .unwrap(),
            ),
            _ => unreachable!("a SQLite store lives in a directory"),
        }
    }

    pub async fn cleanup(self) {
        let Self { store, place, .. } = self;
        drop(store);
        match place {
            Place::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Place::Postgres { admin, name } => {
                let mut conn = admin.connect().await.unwrap();
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await
                .unwrap();
            }
        }
    }
}

/// Metadata for test events.
pub fn meta() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::System {
            component: "test".into(),
        },
        trace_id: Some("trace-test".into()),
    }
}

/// A catalog event of stream type `tenant` with a small payload.
pub fn tenant_event(n: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "tenant.credit_added".into(),
        schema_version: 1,
        payload: json!({ "n": n }),
        metadata: meta(),
    }
}

/// An append of `events` to a tenant stream.
pub fn tenant_append(
    stream: Uuid,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest {
        stream_id: stream,
        stream_type: "tenant".into(),
        tenant_id: Some(stream),
        expected,
        events,
    }
}
