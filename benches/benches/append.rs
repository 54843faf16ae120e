//! Append and replay throughput, WAL and disk bytes of the event store
//! against a raw baseline measured in the same run (see `benches/README.md`).
//!
//! Two modes: **known head** (each writer appends to its own stream, at the
//! version it expects) and **new stream** (every append creates a stream, as
//! a submitted render, a registered node or an uploaded file does). For each
//! mode, concurrency (1, 4, 16 writers) and batch size (1, 10 events per
//! append), the store appends with every guarantee on (expected version,
//! idempotent event ids, catalog check, hash chain, gap-safe positions), and
//! the raw baseline does what a minimal event table costs: `BEGIN`, one
//! `INSERT` of the batch's rows (event id, stream, version, type, `jsonb`
//! payload, time; a primary key on the event id and a unique key on stream
//! and version; no metadata, hashes or global order), `COMMIT`. Each
//! measurement also reports the bytes of WAL written per event (PostgreSQL:
//! the `pg_current_wal_insert_lsn()` delta; SQLite: bytes the process wrote,
//! its WAL and the checkpoints into the file), and each mode the disk bytes
//! per event (PostgreSQL: `pg_total_relation_size` of the tables; SQLite: the
//! database file after a checkpoint). Then the whole store is read after
//! position 0, against the same events in the old row layout (migrations
//! 0001–0005: names as text, metadata as JSON) read with a raw keyset scan
//! decoding the same envelope.
//!
//! `cargo bench -p benches --bench append`; `FLATRENDER_BENCH_DATABASE_URL`
//! (default: `FLATRENDER_TEST_DATABASE_URL`, then postgres://postgres@127.0.0.1:5432/postgres)
//! names the server (fresh databases are created and dropped);
//! `FLATRENDER_BENCH_SECONDS` sets the length of each measurement (default 2),
//! `FLATRENDER_BENCH_ROUNDS` how many alternating rounds (default 3, best kept),
//! `FLATRENDER_BENCH_ONLY=16x1,16x10` limits the append measurements,
//! `FLATRENDER_BENCH_MODE=new|known` the modes and
//! `FLATRENDER_BENCH_BACKEND=postgres|sqlite` the backends.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventstore::hashing::{canonical, format_time};
use eventstore::{
    Actor, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, RecordedEvent,
    SqliteStore,
};
use serde_json::json;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Executor, Row};
use uuid::Uuid;

const WRITERS: [usize; 3] = [1, 4, 16];
const BATCHES: [usize; 2] = [1, 10];

/// Every command to a new stream, or to the writer's own stream at its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    KnownHead,
    NewStream,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::KnownHead => "known",
            Self::NewStream => "new",
        }
    }

    fn selected() -> Vec<Mode> {
        match std::env::var("FLATRENDER_BENCH_MODE").as_deref() {
            Ok("new") => vec![Self::NewStream],
            Ok("known") => vec![Self::KnownHead],
            _ => vec![Self::NewStream, Self::KnownHead],
        }
    }
}

/// A payload of about 350 bytes (a render's submission is of that size).
fn payload(n: u64) -> serde_json::Value {
    json!({
        "tenant_id": "6f1c7a52-0f7e-4a4e-9d0e-3c2b1a000001",
        "amount_minor": 1000 + n,
        "balance_after_minor": 50_000 + n,
        "reason": "top-up from the benchmark",
        "reference": format!("bench-{n:08}"),
        "invoice": { "number": format!("INV-2026-{n:08}"), "currency": "EUR", "lines": 3 },
        "requested_by": "0b6f3a52-0f7e-4a4e-9d0e-3c2b1a000002",
        "note": "credit for shot-010 lighting pass, approved by production",
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
/// batch and returns how many events it wrote); returns (events per second,
/// events).
async fn measure<F, Fut>(writers: usize, seconds: f64, step: F) -> (f64, u64)
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
    let events = total.load(Ordering::Relaxed);
    (events as f64 / start.elapsed().as_secs_f64(), events)
}

/// The stream and version a writer's `round`-th append goes to.
fn target(mode: Mode, streams: &[Uuid], w: usize, round: u64, batch: usize) -> (Uuid, u64) {
    match mode {
        Mode::NewStream => (Uuid::new_v4(), 0),
        Mode::KnownHead => (streams[w], round * batch as u64),
    }
}

/// Appends through the store with every guarantee on.
async fn store_appends<S: EventStore + Clone + 'static>(
    store: S,
    mode: Mode,
    writers: usize,
    batch: usize,
    seconds: f64,
) -> (f64, u64) {
    let streams: Arc<Vec<Uuid>> = Arc::new((0..writers).map(|_| Uuid::new_v4()).collect());
    measure(writers, seconds, move |w, round| {
        let store = store.clone();
        let (stream, version) = target(mode, &streams, w, round, batch);
        async move {
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

/// The raw baseline's table on PostgreSQL: a minimal event row.
const PG_RAW_SCHEMA: &str = "
CREATE TABLE raw_events (
    event_id uuid PRIMARY KEY,
    stream_id uuid NOT NULL,
    stream_version bigint NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    recorded_at timestamptz NOT NULL,
    CONSTRAINT raw_events_stream_version_key UNIQUE (stream_id, stream_version)
)";

/// `BEGIN`, one `INSERT` of the batch, `COMMIT`: what a client writing these
/// rows without a store does; every value is a parameter.
async fn pg_raw_inserts(
    pool: PgPool,
    mode: Mode,
    writers: usize,
    batch: usize,
    seconds: f64,
) -> (f64, u64) {
    let streams: Arc<Vec<Uuid>> = Arc::new((0..writers).map(|_| Uuid::new_v4()).collect());
    measure(writers, seconds, move |w, round| {
        let pool = pool.clone();
        let (stream, version) = target(mode, &streams, w, round, batch);
        async move {
            let n = batch as u64;
            let versions: Vec<i64> = (0..n).map(|i| (version + i + 1) as i64).collect();
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(
                "INSERT INTO raw_events (event_id, stream_id, stream_version, event_type, payload, \
                 recorded_at) SELECT u.id, $2, u.v, u.et, u.p, $3 \
                 FROM unnest($1::uuid[], $4::bigint[], $5::text[], $6::jsonb[]) AS u(id, v, et, p)",
            )
            .bind((0..n).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
            .bind(stream)
            .bind(Utc::now())
            .bind(&versions)
            .bind(vec!["tenant.credit_added"; batch])
            .bind((0..n).map(|i| payload(version + i)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .expect("raw insert");
            tx.commit().await.expect("commit");
            n
        }
    })
    .await
}

/// The events in the old row layout (migrations 0001–0005), to read them
/// the way the old store did.
const PG_OLD_LAYOUT: &str = "
CREATE TABLE old_layout (
    global_position bigint PRIMARY KEY, event_id uuid NOT NULL, stream_id uuid NOT NULL,
    stream_type text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL,
    routing_key text NOT NULL, schema_version integer NOT NULL, tenant_id uuid,
    payload jsonb NOT NULL, metadata jsonb NOT NULL, recorded_at timestamptz NOT NULL,
    prev_hash bytea NOT NULL, hash bytea NOT NULL,
    CONSTRAINT old_layout_event_id_key UNIQUE (event_id),
    CONSTRAINT old_layout_stream_version_key UNIQUE (stream_id, stream_version)
);
CREATE INDEX old_layout_tenant_position_idx ON old_layout (tenant_id, global_position)";

/// Copies the store's events into `old_layout` (PostgreSQL).
async fn pg_copy_to_old_layout<S: EventStore>(store: &S, pool: &PgPool) {
    let mut position = 0;
    loop {
        let batch = store.read_all(position, 5000).await.expect("read_all");
        let Some(last) = batch.last() else { break };
        position = last.global_position;
        let col = |f: &dyn Fn(&RecordedEvent) -> String| batch.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO old_layout SELECT u.* FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], \
             $4::text[], $5::bigint[], $6::text[], $7::text[], $8::int[], $9::uuid[], \
             $10::jsonb[], $11::jsonb[], $12::timestamptz[], $13::bytea[], $14::bytea[]) AS u",
        )
        .bind(batch.iter().map(|e| e.global_position).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.stream_id).collect::<Vec<_>>())
        .bind(col(&|e| e.stream_type.clone()))
        .bind(
            batch
                .iter()
                .map(|e| e.stream_version as i64)
                .collect::<Vec<_>>(),
        )
        .bind(col(&|e| e.event_type.clone()))
        .bind(col(&|e| e.routing_key.clone()))
        .bind(
            batch
                .iter()
                .map(|e| e.schema_version as i32)
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|e| e.tenant_id).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.metadata.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|e| e.prev_hash.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|e| e.hash.to_vec()).collect::<Vec<_>>())
        .execute(pool)
        .await
        .expect("copy to the old layout");
    }
}

/// An old-layout row decoded into the types the store decodes into; the
/// fields are there to be decoded, not read.
#[derive(Debug)]
#[expect(dead_code, reason = "fields exist to measure decoding")]
struct OldRow(
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

/// Reads the old layout with a keyset scan, decoding the envelope.
async fn pg_old_layout_scan(pool: &PgPool) -> (u64, f64) {
    let start = Instant::now();
    let (mut position, mut count) = (0i64, 0u64);
    loop {
        let rows = sqlx::query(
            "SELECT global_position, event_id, stream_id, stream_type, stream_version, event_type, \
             routing_key, schema_version, tenant_id, payload, metadata, recorded_at, prev_hash, hash \
             FROM old_layout WHERE global_position > $1 ORDER BY global_position LIMIT 1000",
        )
        .bind(position)
        .fetch_all(pool)
        .await
        .expect("old layout scan");
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let decoded = OldRow(
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
        .unwrap_or(if QUICK.load(Ordering::Relaxed) { 1 } else { 3 })
}

/// A run of `cargo test --benches`: short measurements, one round.
static QUICK: AtomicBool = AtomicBool::new(false);

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

/// One side of a comparison: the best rate, and bytes written per event
/// over all its rounds.
#[derive(Debug, Default, Clone, Copy)]
struct Side {
    rate: f64,
    bytes: f64,
    events: u64,
}

impl Side {
    fn add(&mut self, (rate, events): (f64, u64), bytes: f64) {
        self.rate = self.rate.max(rate);
        self.bytes += bytes;
        self.events += events;
    }

    fn per_event(&self) -> f64 {
        self.bytes / self.events.max(1) as f64
    }
}

fn header() {
    println!(
        "| backend  | mode  | writers | batch | store ev/s | raw ev/s | ratio | store WAL B/ev | raw WAL B/ev | WAL ratio |"
    );
    println!(
        "|----------|-------|--------:|------:|-----------:|---------:|------:|---------------:|-------------:|----------:|"
    );
}

fn row(backend: &str, mode: Mode, writers: usize, batch: usize, store: Side, raw: Side) {
    println!(
        "| {backend:<8} | {:<5} | {writers:>7} | {batch:>5} | {:>10.0} | {:>8.0} | {:>5.2} | {:>14.0} | {:>12.0} | {:>9.2} |",
        mode.name(),
        store.rate,
        raw.rate,
        store.rate / raw.rate,
        store.per_event(),
        raw.per_event(),
        store.per_event() / raw.per_event(),
    );
}

fn disk_row(backend: &str, mode: Mode, store: (i64, i64), raw: (i64, i64)) {
    let per = |(bytes, rows): (i64, i64)| bytes as f64 / rows.max(1) as f64;
    println!(
        "| {backend:<8} | {:<5} | disk  | store {:.0} B/ev ({} events) | raw {:.0} B/ev ({} rows) | ratio {:.2} |",
        mode.name(),
        per(store),
        store.1,
        per(raw),
        raw.1,
        per(store) / per(raw)
    );
}

async fn wal_lsn(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(pool)
        .await
        .expect("wal lsn")
}

async fn wal_since(pool: &PgPool, from: &str) -> f64 {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::float8")
        .bind(from)
        .fetch_one(pool)
        .await
        .expect("wal diff")
}

/// Starts a measurement from a checkpoint, so that full-page images after
/// it weigh the same on both sides (not run by a non-superuser: skipped).
async fn pg_checkpoint(pool: &PgPool) {
    let _ = pool.execute("CHECKPOINT").await;
}

async fn pg_size(pool: &PgPool, tables: &str, count: &str) -> (i64, i64) {
    let sql = format!("SELECT ({tables})::bigint, (SELECT count(*) FROM {count})");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .expect("sizes")
}

async fn postgres(seconds: f64) {
    let mut read_db = None;
    for mode in Mode::selected() {
        let db = benches::FreshPg::create(20).await;
        let store = db.store.clone();
        let pool = store.pool().clone();
        pool.execute(PG_RAW_SCHEMA).await.expect("raw schema");
        for batch in BATCHES {
            for writers in WRITERS {
                if !selected(writers, batch) {
                    continue;
                }
                let (mut raw, mut ours) = (Side::default(), Side::default());
                for _ in 0..rounds() {
                    pg_checkpoint(&pool).await;
                    let lsn = wal_lsn(&pool).await;
                    let r = pg_raw_inserts(pool.clone(), mode, writers, batch, seconds).await;
                    raw.add(r, wal_since(&pool, &lsn).await);
                    pg_checkpoint(&pool).await;
                    let lsn = wal_lsn(&pool).await;
                    let o = store_appends(store.clone(), mode, writers, batch, seconds).await;
                    ours.add(o, wal_since(&pool, &lsn).await);
                }
                row("postgres", mode, writers, batch, ours, raw);
            }
        }
        pool.execute("VACUUM ANALYZE").await.expect("vacuum");
        let store_size = pg_size(
            &pool,
            "pg_total_relation_size('events') + pg_total_relation_size('event_types')",
            "events",
        )
        .await;
        let raw_size = pg_size(&pool, "pg_total_relation_size('raw_events')", "raw_events").await;
        disk_row("postgres", mode, store_size, raw_size);
        match read_db {
            None => read_db = Some(db),
            Some(_) => db.drop_now().await,
        }
    }
    let Some(db) = read_db else { return };
    let pool = db.store.pool().clone();
    pool.execute(PG_OLD_LAYOUT).await.expect("old layout");
    pg_copy_to_old_layout(&db.store, &pool).await;
    pool.execute("VACUUM ANALYZE").await.expect("vacuum");
    let old_size = pg_size(&pool, "pg_total_relation_size('old_layout')", "old_layout").await;
    println!(
        "(old layout of the same events: {:.0} B/ev on disk)",
        old_size.0 as f64 / old_size.1.max(1) as f64
    );
    // Warm both tables once, then measure each and keep the best.
    let _ = (store_scan(&db.store).await, pg_old_layout_scan(&pool).await);
    let (mut ours, mut old) = ((0, 0.0f64), (0, 0.0f64));
    for _ in 0..rounds() {
        let r = pg_old_layout_scan(&pool).await;
        let o = store_scan(&db.store).await;
        old = (r.0, old.1.max(r.1));
        ours = (o.0, ours.1.max(o.1));
    }
    read_row("postgres", ours, old);
    db.drop_now().await;
}

fn read_row(backend: &str, ours: (u64, f64), old: (u64, f64)) {
    println!(
        "| {backend:<8} | read  | store {:.0} ev/s | old layout, raw scan {:.0} ev/s | ratio {:.2} | ({} events, {} old rows) |",
        ours.1,
        old.1,
        ours.1 / old.1,
        ours.0,
        old.0
    );
}

/// The raw baseline's table on SQLite.
const SQLITE_RAW_SCHEMA: &str = "
CREATE TABLE raw_events (
    event_id BLOB PRIMARY KEY, stream_id BLOB NOT NULL, stream_version INTEGER NOT NULL,
    event_type TEXT NOT NULL, payload TEXT NOT NULL, recorded_at TEXT NOT NULL,
    CONSTRAINT raw_events_stream_version_key UNIQUE (stream_id, stream_version)
);
CREATE TABLE old_layout (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL, stream_id BLOB NOT NULL, stream_type TEXT NOT NULL,
    stream_version INTEGER NOT NULL, event_type TEXT NOT NULL, routing_key TEXT NOT NULL,
    schema_version INTEGER NOT NULL, tenant_id BLOB, payload TEXT NOT NULL, metadata TEXT NOT NULL,
    recorded_at TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL,
    CONSTRAINT old_layout_event_id_key UNIQUE (event_id),
    CONSTRAINT old_layout_stream_version_key UNIQUE (stream_id, stream_version)
);
CREATE INDEX old_layout_tenant_position_idx ON old_layout (tenant_id, global_position);";

/// `BEGIN`, the batch's inserts, `COMMIT`, on one connection (as the
/// store's one writer).
async fn sqlite_raw_inserts(
    pool: SqlitePool,
    mode: Mode,
    writers: usize,
    batch: usize,
    seconds: f64,
) -> (f64, u64) {
    let streams: Arc<Vec<Uuid>> = Arc::new((0..writers).map(|_| Uuid::new_v4()).collect());
    measure(writers, seconds, move |w, round| {
        let pool = pool.clone();
        let (stream, version) = target(mode, &streams, w, round, batch);
        async move {
            let n = batch as u64;
            let mut tx = pool.begin().await.expect("begin");
            for i in 0..n {
                sqlx::query(
                    "INSERT INTO raw_events (event_id, stream_id, stream_version, event_type, \
                     payload, recorded_at) VALUES (?, ?, ?, 'tenant.credit_added', ?, ?)",
                )
                .bind(Uuid::new_v4())
                .bind(stream)
                .bind((version + i + 1) as i64)
                .bind(payload(version + i).to_string())
                .bind(Utc::now().to_rfc3339())
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

/// Bytes this process has written through `write(2)` and friends so far
/// (Linux `/proc/self/io` `wchar`; 0 elsewhere).
fn written_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: ").map(|v| v.trim().parse().ok()))
        })
        .flatten()
        .unwrap_or(0.0)
}

/// Copies the store's events into `old_layout` (SQLite).
async fn sqlite_copy_to_old_layout<S: EventStore>(store: &S, pool: &SqlitePool) {
    let mut position = 0;
    loop {
        let batch = store.read_all(position, 5000).await.expect("read_all");
        let Some(last) = batch.last() else { break };
        position = last.global_position;
        let mut tx = pool.begin().await.expect("begin");
        for e in &batch {
            sqlx::query("INSERT INTO old_layout VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
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
                .execute(&mut *tx)
                .await
                .expect("copy to the old layout");
        }
        tx.commit().await.expect("commit");
    }
}

/// Reads the old layout on SQLite with a keyset scan, decoding the envelope
/// into the same types as the store's reader.
async fn sqlite_old_layout_scan(pool: &SqlitePool) -> (u64, f64) {
    let start = Instant::now();
    let (mut position, mut count) = (0i64, 0u64);
    loop {
        let rows = sqlx::query(
            "SELECT global_position, event_id, stream_id, stream_type, stream_version, event_type, \
             routing_key, schema_version, tenant_id, payload, metadata, recorded_at, prev_hash, hash \
             FROM old_layout WHERE global_position > ? ORDER BY global_position LIMIT 1000",
        )
        .bind(position)
        .fetch_all(pool)
        .await
        .expect("old layout scan");
        let Some(last) = rows.last() else { break };
        position = last.get(0);
        for row in &rows {
            let decoded = OldRow(
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

/// Copies a SQLite file's WAL into it and truncates the WAL.
async fn checkpoint(pool: &SqlitePool) {
    pool.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .expect("checkpoint");
}

/// The size of a SQLite file after its WAL is copied in and truncated.
async fn sqlite_file_size(pool: &SqlitePool, path: &Path, table: &str) -> (i64, i64) {
    checkpoint(pool).await;
    let rows: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await
            .expect("count");
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    (bytes as i64, rows)
}

async fn sqlite_pool(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("sqlite")
}

async fn sqlite(seconds: f64) {
    let dir = std::env::temp_dir().join(format!("flatrender-bench-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut read_from = None;
    for mode in Mode::selected() {
        let store_path = dir.join(format!("events-{}.sqlite", mode.name()));
        let raw_path = dir.join(format!("raw-{}.sqlite", mode.name()));
        let store = SqliteStore::open(&store_path).await.expect("store");
        // The raw table lives in its own file with the store's settings; one
        // connection, as the store's writer has.
        let pool = sqlite_pool(&raw_path).await;
        pool.execute(SQLITE_RAW_SCHEMA).await.expect("raw schema");
        let store_file = sqlite_pool(&store_path).await;
        for batch in BATCHES {
            for writers in WRITERS {
                if !selected(writers, batch) {
                    continue;
                }
                let (mut raw, mut ours) = (Side::default(), Side::default());
                for _ in 0..rounds() {
                    // Each side's bytes: its WAL frames and, by a full
                    // checkpoint at the end, their copy into its file.
                    let before = written_bytes();
                    let r = sqlite_raw_inserts(pool.clone(), mode, writers, batch, seconds).await;
                    checkpoint(&pool).await;
                    raw.add(r, written_bytes() - before);
                    let before = written_bytes();
                    let o = store_appends(store.clone(), mode, writers, batch, seconds).await;
                    checkpoint(&store_file).await;
                    ours.add(o, written_bytes() - before);
                }
                row("sqlite", mode, writers, batch, ours, raw);
            }
        }
        let store_size = sqlite_file_size(&store_file, &store_path, "events").await;
        store_file.close().await;
        let raw_size = sqlite_file_size(&pool, &raw_path, "raw_events").await;
        disk_row("sqlite", mode, store_size, raw_size);
        if read_from.is_none() {
            read_from = Some((store, pool));
        }
    }
    if let Some((store, pool)) = read_from {
        sqlite_copy_to_old_layout(&store, &pool).await;
        let _ = (
            store_scan(&store).await,
            sqlite_old_layout_scan(&pool).await,
        );
        let (mut ours, mut old) = ((0, 0.0f64), (0, 0.0f64));
        for _ in 0..rounds() {
            let r = sqlite_old_layout_scan(&pool).await;
            let o = store_scan(&store).await;
            old = (r.0, old.1.max(r.1));
            ours = (o.0, ours.1.max(o.1));
        }
        read_row("sqlite", ours, old);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // else and expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    QUICK.store(quick, Ordering::Relaxed);
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
