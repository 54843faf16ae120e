//! Append and replay throughput of the event store against a raw ceiling
//! measured in the same run (see `benches/README.md`).
//!
//! For each backend, concurrency (1, 4, 16 writers) and batch size (1, 10
//! events per append), writers append to their own streams with every
//! guarantee on (expected version, idempotency, catalog check, hash chain,
//! gap-safe positions). The raw ceiling inserts rows of the same shape into a
//! table with the same indexes, with no store logic, at the same concurrency
//! and batch size. Then the whole store is read after position 0, against a
//! raw keyset scan of the raw table decoding the same columns.
//!
//! `cargo bench -p benches --bench append`; `FLATRENDER_BENCH_DATABASE_URL`
//! (default: `FLATRENDER_TEST_DATABASE_URL`, then postgres://postgres@127.0.0.1:5432/postgres)
//! names the server (a fresh database is created and dropped);
//! `FLATRENDER_BENCH_SECONDS` sets the length of each measurement (default 2)
//! and `FLATRENDER_BENCH_ROUNDS` how many alternating rounds (default 3, best kept);
//! `FLATRENDER_BENCH_ONLY=16x1,16x10` limits the append measurements.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::{
    Actor, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, PgOptions, PgStore,
    SqliteStore,
};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Executor, Row};
use uuid::Uuid;

const WRITERS: [usize; 3] = [1, 4, 16];
const BATCHES: [usize; 2] = [1, 10];

fn payload(n: u64) -> serde_json::Value {
    json!({
        "tenant_id": "6f1c7a52-0f7e-4a4e-9d0e-3c2b1a000001",
        "amount_minor": 1000 + n,
        "balance_after_minor": 50_000 + n,
        "reason": "top-up from the benchmark",
        "reference": format!("bench-{n}"),
    })
}

fn metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::System {
            component: "bench".into(),
        },
        trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
    }
}

fn new_event(n: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "tenant.credit_added".into(),
        schema_version: 1,
        payload: payload(n),
        metadata: metadata(),
    }
}

/// Runs `writers` tasks for `seconds`, each calling `step` (which writes one
/// batch and returns how many events it wrote); returns events per second.
async fn measure<F, Fut>(writers: usize, seconds: f64, step: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let step = Arc::new(step);
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (step, stop, total) = (step.clone(), stop.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                total.fetch_add(step(w, round).await, Ordering::Relaxed);
                round += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("writer");
    }
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Appends through the store: each writer to its own stream, expected version checked.
async fn store_appends<S: EventStore + Clone + 'static>(
    store: S,
    writers: usize,
    batch: usize,
    seconds: f64,
) -> f64 {
    let streams: Arc<Vec<Uuid>> = Arc::new((0..writers).map(|_| Uuid::new_v4()).collect());
    measure(writers, seconds, move |w, round| {
        let store = store.clone();
        let stream = streams[w];
        async move {
            let version = round * batch as u64;
            let expected = if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            };
            let events = (0..batch as u64).map(|i| new_event(version + i)).collect();
            let request = AppendRequest {
                stream_id: stream,
                stream_type: "tenant".into(),
                tenant_id: Some(stream),
                expected,
                events,
            };
            store.append(request).await.expect("append");
            batch as u64
        }
    })
    .await
}

const PG_RAW_SCHEMA: &str = "
CREATE TABLE raw_events (
    global_position bigserial PRIMARY KEY,
    event_id uuid NOT NULL, stream_id uuid NOT NULL, stream_type text NOT NULL,
    stream_version bigint NOT NULL, event_type text NOT NULL, routing_key text NOT NULL,
    schema_version integer NOT NULL, tenant_id uuid, payload jsonb NOT NULL, metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL, prev_hash bytea NOT NULL, hash bytea NOT NULL,
    CONSTRAINT raw_events_event_id_key UNIQUE (event_id),
    CONSTRAINT raw_events_stream_version_key UNIQUE (stream_id, stream_version)
);
CREATE INDEX raw_events_tenant_position_idx ON raw_events (tenant_id, global_position);";

/// Plain multi-row INSERTs of the same shape, no store logic.
async fn pg_raw_inserts(pool: PgPool, writers: usize, batch: usize, seconds: f64) -> f64 {
    let streams: Arc<Vec<Uuid>> = Arc::new((0..writers).map(|_| Uuid::new_v4()).collect());
    measure(writers, seconds, move |w, round| {
        let pool = pool.clone();
        let stream = streams[w];
        async move {
            let n = batch as u64;
            let versions: Vec<i64> = (0..n).map(|i| (round * n + i + 1) as i64).collect();
            let meta = serde_json::to_value(metadata()).expect("metadata");
            // Every per-row value is a parameter, as a client writing these
            // rows would send them; no constants baked into the SQL.
            sqlx::query(
                "INSERT INTO raw_events (event_id, stream_id, stream_type, stream_version, event_type, \
                 routing_key, schema_version, tenant_id, payload, metadata, recorded_at, prev_hash, hash) \
                 SELECT u.id, $2, $3, u.v, u.et, u.rk, u.sv, $4, u.p, u.m, $5, u.ph, u.h \
                 FROM unnest($1::uuid[], $6::bigint[], $7::text[], $8::text[], $9::int[], $10::jsonb[], \
                 $11::jsonb[], $12::bytea[], $13::bytea[]) AS u(id, v, et, rk, sv, p, m, ph, h)",
            )
            .bind((0..n).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
            .bind(stream)
            .bind("tenant")
            .bind(stream)
            .bind(Utc::now())
            .bind(&versions)
            .bind(vec!["tenant.credit_added"; batch])
            .bind(vec!["tenant.credit_added.v1"; batch])
            .bind(vec![1i32; batch])
            .bind((0..n).map(|i| payload(round * n + i)).collect::<Vec<_>>())
            .bind(vec![meta; batch])
            .bind(vec![Uuid::new_v4().as_bytes().repeat(2); batch])
            .bind(vec![Uuid::new_v4().as_bytes().repeat(2); batch])
            .execute(&pool)
            .await
            .expect("raw insert");
            n
        }
    })
    .await
}

/// A raw row decoded into the types the store decodes into; the fields are
/// there to be decoded, not read.
#[derive(Debug)]
#[expect(dead_code, reason = "fields exist to measure decoding")]
struct RawRow(
    i64,
    Uuid,
    Uuid,
    String,
    i64,
    String,
    String,
    i32,
    Option<Uuid>,
    serde_json::Value,
    serde_json::Value,
    DateTime<Utc>,
    Vec<u8>,
    Vec<u8>,
);

/// Reads the raw table with a keyset scan, decoding the same columns.
async fn pg_raw_scan(pool: &PgPool) -> (u64, f64) {
    let start = Instant::now();
    let (mut position, mut count) = (0i64, 0u64);
    loop {
        let rows = sqlx::query(
            "SELECT global_position, event_id, stream_id, stream_type, stream_version, event_type, \
             routing_key, schema_version, tenant_id, payload, metadata, recorded_at, prev_hash, hash \
             FROM raw_events WHERE global_position > $1 ORDER BY global_position LIMIT 1000",
        )
        .bind(position)
        .fetch_all(pool)
        .await
        .expect("raw scan");
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let decoded = RawRow(
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
                row.get(6),
                row.get(7),
                row.get(8),
                row.get(9),
                row.get(10),
                row.get(11),
                row.get(12),
                row.get(13),
            );
            position = decoded.0;
            std::hint::black_box(decoded);
            count += 1;
        }
    }
    (count, count as f64 / start.elapsed().as_secs_f64())
}

async fn store_scan<S: EventStore>(store: &S) -> (u64, f64) {
    let start = Instant::now();
    let (mut position, mut count) = (0i64, 0u64);
    loop {
        let batch = store.read_all(position, 1000).await.expect("read_all");
        let Some(last) = batch.last() else { break };
        position = last.global_position;
        count += batch.len() as u64;
    }
    (count, count as f64 / start.elapsed().as_secs_f64())
}

/// Measurements alternate raw and store this many times; the best of each
/// counts (interference from other load only ever slows a run down).
fn rounds() -> usize {
    std::env::var("FLATRENDER_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// `FLATRENDER_BENCH_ONLY=16x1,4x10` limits the append measurements to
/// those writers x batch pairs.
fn selected(writers: usize, batch: usize) -> bool {
    match std::env::var("FLATRENDER_BENCH_ONLY") {
        Ok(only) if !only.is_empty() => only
            .split(',')
            .any(|p| p.trim() == format!("{writers}x{batch}")),
        _ => true,
    }
}

fn row(backend: &str, what: &str, writers: usize, batch: usize, store: f64, raw: f64) {
    println!(
        "| {backend:<10} | {what:<7} | {writers:>7} | {batch:>5} | {store:>12.0} | {raw:>12.0} | {:>5.2} |",
        store / raw
    );
}

fn header() {
    println!("| backend    | op      | writers | batch | store ev/s   | raw ev/s     | ratio |");
    println!("|------------|---------|---------|-------|--------------|--------------|-------|");
}

async fn postgres(seconds: f64) {
    let url = std::env::var("FLATRENDER_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("FLATRENDER_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = PgConnectOptions::from_str(&url).expect("database url");
    let name = format!("fr_bench_{}", Uuid::new_v4().simple());
    let mut conn = admin.connect().await.expect("connect to PostgreSQL");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create database");
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(eventstore::postgres::tuned(admin.clone().database(&name)))
        .await
        .expect("connect");
    let listen = std::env::var("FLATRENDER_BENCH_LISTEN").as_deref() != Ok("0");
    let store = PgStore::from_pool(
        pool.clone(),
        PgOptions {
            max_connections: 20,
            listen,
        },
        Arc::new(eventstore::SystemClock),
    )
    .await
    .expect("store");
    pool.execute(PG_RAW_SCHEMA).await.expect("raw schema");

    for batch in BATCHES {
        for writers in WRITERS {
            if !selected(writers, batch) {
                continue;
            }
            let (mut raw, mut ours) = (0.0f64, 0.0f64);
            for _ in 0..rounds() {
                raw = raw.max(pg_raw_inserts(pool.clone(), writers, batch, seconds).await);
                ours = ours.max(store_appends(store.clone(), writers, batch, seconds).await);
            }
            row("postgres", "append", writers, batch, ours, raw);
        }
    }
    pool.execute("VACUUM ANALYZE").await.expect("vacuum");
    // Warm both tables once, then measure each twice and keep the best.
    let _ = (store_scan(&store).await, pg_raw_scan(&pool).await);
    let (mut ours, mut raw) = ((0, 0.0f64), (0, 0.0f64));
    for _ in 0..rounds() {
        let r = pg_raw_scan(&pool).await;
        let o = store_scan(&store).await;
        raw = (r.0, raw.1.max(r.1));
        ours = (o.0, ours.1.max(o.1));
    }
    row("postgres", "read", 1, 1000, ours.1, raw.1);
    println!("(read: {} store events, {} raw rows)", ours.0, raw.0);
    drop(store);
    pool.close().await;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .await
    .expect("drop");
}

const SQLITE_RAW_SCHEMA: &str = "
CREATE TABLE raw_events (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL, stream_id BLOB NOT NULL, stream_type TEXT NOT NULL,
    stream_version INTEGER NOT NULL, event_type TEXT NOT NULL, routing_key TEXT NOT NULL,
    schema_version INTEGER NOT NULL, tenant_id BLOB, payload TEXT NOT NULL, metadata TEXT NOT NULL,
    recorded_at TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL,
    CONSTRAINT raw_events_event_id_key UNIQUE (event_id),
    CONSTRAINT raw_events_stream_version_key UNIQUE (stream_id, stream_version)
);
CREATE INDEX raw_events_tenant_position_idx ON raw_events (tenant_id, global_position);";

async fn sqlite_raw_inserts(pool: SqlitePool, writers: usize, batch: usize, seconds: f64) -> f64 {
    let streams: Arc<Vec<Uuid>> = Arc::new((0..writers).map(|_| Uuid::new_v4()).collect());
    measure(writers, seconds, move |w, round| {
        let pool = pool.clone();
        let stream = streams[w];
        async move {
            let n = batch as u64;
            let meta = serde_json::to_value(metadata()).expect("metadata").to_string();
            let mut tx = pool.begin().await.expect("begin");
            for i in 0..n {
                let hash = Uuid::new_v4().as_bytes().repeat(2);
                sqlx::query(
                    "INSERT INTO raw_events (event_id, stream_id, stream_type, stream_version, event_type, \
                     routing_key, schema_version, tenant_id, payload, metadata, recorded_at, prev_hash, hash) \
                     VALUES (?, ?, 'tenant', ?, 'tenant.credit_added', 'tenant.credit_added.v1', 1, ?, ?, ?, ?, ?, ?)",
                )
                .bind(Uuid::new_v4())
                .bind(stream)
                .bind((round * n + i + 1) as i64)
                .bind(stream)
                .bind(payload(round * n + i).to_string())
                .bind(&meta)
                .bind(Utc::now().to_rfc3339())
                .bind(&hash)
                .bind(&hash)
                .execute(&mut *tx)
                .await
                .expect("raw insert");
            }
            tx.commit().await.expect("commit");
            n
        }
    })
    .await
}

/// Reads the raw SQLite table with a keyset scan, decoding the same columns
/// into the same types as the store's reader.
async fn sqlite_raw_scan(pool: &SqlitePool) -> (u64, f64) {
    let start = Instant::now();
    let (mut position, mut count) = (0i64, 0u64);
    loop {
        let rows = sqlx::query(
            "SELECT global_position, event_id, stream_id, stream_type, stream_version, event_type, \
             routing_key, schema_version, tenant_id, payload, metadata, recorded_at, prev_hash, hash \
             FROM raw_events WHERE global_position > ? ORDER BY global_position LIMIT 1000",
        )
        .bind(position)
        .fetch_all(pool)
        .await
        .expect("raw scan");
        let Some(last) = rows.last() else { break };
        position = last.get(0);
        for row in &rows {
            // The same columns, decoded into the same types as the store's reader.
            let decoded = RawRow(
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
                row.get(6),
                row.get::<i64, _>(7) as i32,
                row.get(8),
                serde_json::from_str(row.get::<&str, _>(9)).expect("json"),
                serde_json::from_str(row.get::<&str, _>(10)).expect("json"),
                DateTime::parse_from_rfc3339(row.get::<&str, _>(11))
                    .expect("time")
                    .with_timezone(&Utc),
                row.get(12),
                row.get(13),
            );
            std::hint::black_box(decoded);
        }
        count += rows.len() as u64;
    }
    (count, count as f64 / start.elapsed().as_secs_f64())
}

async fn sqlite(seconds: f64) {
    let dir = std::env::temp_dir().join(format!("flatrender-bench-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = SqliteStore::open(&dir.join("events.sqlite"))
        .await
        .expect("store");
    // The raw table lives in its own file with the store's settings; one
    // connection, as the store's writer has.
    let options = SqliteConnectOptions::new()
        .filename(dir.join("raw.sqlite"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("raw");
    pool.execute(SQLITE_RAW_SCHEMA).await.expect("raw schema");
    for batch in BATCHES {
        for writers in WRITERS {
            if !selected(writers, batch) {
                continue;
            }
            let (mut raw, mut ours) = (0.0f64, 0.0f64);
            for _ in 0..rounds() {
                raw = raw.max(sqlite_raw_inserts(pool.clone(), writers, batch, seconds).await);
                ours = ours.max(store_appends(store.clone(), writers, batch, seconds).await);
            }
            row("sqlite", "append", writers, batch, ours, raw);
        }
    }
    let _ = (store_scan(&store).await, sqlite_raw_scan(&pool).await);
    let (mut ours, mut raw) = ((0, 0.0f64), (0, 0.0f64));
    for _ in 0..rounds() {
        let r = sqlite_raw_scan(&pool).await;
        let o = store_scan(&store).await;
        raw = (r.0, raw.1.max(r.1));
        ours = (o.0, ours.1.max(o.1));
    }
    row("sqlite", "read", 1, 1000, ours.1, raw.1);
    println!("(read: {} store events, {} raw rows)", ours.0, raw.0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // else and expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let seconds: f64 = std::env::var("FLATRENDER_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 0.2 } else { 2.0 });
    let only = std::env::var("FLATRENDER_BENCH_BACKEND").unwrap_or_default();
    println!(
        "FlatRender event store append/read benchmark: {seconds} s per measurement, best of {} alternating rounds",
        rounds()
    );
    header();
    if only.is_empty() || only == "postgres" {
        postgres(seconds).await;
    }
    if only.is_empty() || only == "sqlite" {
        sqlite(seconds).await;
    }
}
