//! The SQLite backend (the embedded default): one file, WAL mode.
//!
//! Writes go through one connection behind a mutex, in `BEGIN IMMEDIATE`
//! transactions, so positions are assigned and committed in the same order
//! and `read_all` is gap-safe without further work. Reads use a small pool.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::codes::{CodeRow, Codes};
use crate::error::StoreError;
use crate::event::{AppendRequest, AppendResult, RecordedEvent};
use crate::hashing::{GENESIS, truncate_to_micros};
use crate::heads::{Head, Heads};
use crate::store::{self, EventStore, Filtered, Rows};
use crate::task::{AbortOnDrop, spawn_named};

/// How many stream heads a store remembers.
const HEADS_CAPACITY: usize = 100_000;

/// The most rows one insert statement carries (13 binds each, well under
/// SQLite's limit of 32,766). Smaller inserts use power-of-two sizes, so a
/// handful of statements serve every batch from the statement cache.
const INSERT_CHUNK: usize = 256;

/// The WAL size (in pages) at which the writer checkpoints by itself, should
/// the checkpointer fall behind.
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// What writing one request inside the transaction came to: its result and
/// last hash, a refusal, or a database error.
type Outcome = Result<Result<(AppendResult, [u8; 32]), StoreError>, sqlx::Error>;

/// The columns every read selects, in [`decode`]'s order.
const COLUMNS: &str = "global_position, event_id, stream_id, stream_version, type_code, \
     tenant_id, recorded_at, correlation_id, causation_id, actor_kind, actor_id, \
     actor_component, trace_id, hash, payload";

/// An event store in one SQLite file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<SqliteConnection>,
    readers: SqlitePool,
    /// Heads of streams this process wrote or read: an append on one is a
    /// plain insert (another process sharing the file is caught by the
    /// unique key on (stream, version)).
    heads: Heads,
    /// The catalog codes of `event_types`.
    codes: Codes,
    clock: Arc<dyn Clock>,
    appended: watch::Sender<i64>,
    /// The checkpointer, stopped with the store.
    _tasks: AbortOnDrop,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `path` and applies the migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_clock(path, Arc::new(SystemClock)).await
    }

    /// Opens a `sqlite:` URL (e.g. `sqlite://data/events.sqlite`).
    pub async fn open_url(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?;
        Self::open_options(options, Arc::new(SystemClock)).await
    }

    /// Like [`SqliteStore::open`], with an injected clock.
    pub async fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_options(SqliteConnectOptions::new().filename(path), clock).await
    }

    async fn open_options(
        options: SqliteConnectOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // The writer keeps the indexes' hot pages (the event id index is
        // written at random places) in its own cache rather than rereading
        // them from the OS on every batch, and leaves checkpoints to the
        // checkpointer (its own threshold is only a backstop).
        let writer_options = options
            .clone()
            .pragma("cache_size", "-16384")
            .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string());
        let mut writer = SqliteConnection::connect_with(&writer_options).await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&mut writer)
            .await?;
        let codes = Codes::default();
        sync_codes(&mut writer, &codes).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await?;
        let (appended, _) = watch::channel(0);
        let checkpoints = SqliteConnection::connect_with(&options).await?;
        let mut tasks = AbortOnDrop::default();
        tasks.push(spawn_named(
            "sqlite-checkpointer",
            checkpointer(checkpoints, appended.subscribe()),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                heads: Heads::new(HEADS_CAPACITY),
                codes,
                _tasks: tasks,
                clock,
                appended,
            }),
        })
    }

    /// The read pool (for tests and tools).
    pub fn readers(&self) -> &SqlitePool {
        &self.inner.readers
    }

    /// Runs `f` with the writer connection (for tests that sabotage the store).
    pub async fn with_writer<T>(&self, f: impl AsyncFnOnce(&mut SqliteConnection) -> T) -> T {
        let mut conn = self.inner.writer.lock().await;
        f(&mut conn).await
    }

    /// Writes one request inside the caller's transaction; the caller
    /// undoes it (savepoint or transaction) unless it returns `Ok(Ok(_))`.
    async fn write(
        tx: &mut SqliteConnection,
        request: &AppendRequest,
        prepared: &store::Prepared,
        codes: &Codes,
    ) -> Result<Result<(AppendResult, [u8; 32]), StoreError>, sqlx::Error> {
        let head = sqlx::query(
            "SELECT stream_version, hash, type_code, tenant_id FROM events \
             WHERE stream_id = ? ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(request.stream_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (head, prev) = match head {
            None => (0u64, GENESIS),
            Some(row) => {
                let code: i16 = row.try_get(2)?;
                let tenant: Option<Uuid> = row.try_get(3)?;
                let same_type = codes
                    .get(code)
                    .is_some_and(|t| t.stream_type == request.stream_type);
                if !same_type || tenant != request.tenant_id {
                    return Ok(Err(StoreError::StreamMismatch {
                        stream_id: request.stream_id,
                    }));
                }
                let hash = match store::hash32(row.try_get(1)?, "hash") {
                    Ok(h) => h,
                    Err(e) => return Ok(Err(e)),
                };
                (row.try_get::<i64, _>(0)? as u64, hash)
            }
        };
        if !store::expectation_holds(request.expected, head) {
            return Ok(Err(store::wrong_version(request, head)));
        }
        let mut rows = Rows::default();
        let last_hash = rows.push(request, prepared, head, prev);
        let positions = insert_rows(tx, &rows, prepared.recorded_at.timestamp_micros()).await?;
        let n = request.events.len() as u64;
        Ok(Ok((
            AppendResult {
                first_version: head + 1,
                last_version: head + n,
                first_position: positions.first().copied().unwrap_or_default(),
                last_position: positions.last().copied().unwrap_or_default(),
                already_stored: false,
            },
            last_hash,
        )))
    }

    /// After a refused append: a retry of a stored append, or the error.
    async fn settle_refusal(
        &self,
        request: &AppendRequest,
        prepared: &store::Prepared,
        refusal: StoreError,
    ) -> Result<AppendResult, StoreError> {
        let placeholders = vec!["?"; request.events.len()].join(", ");
        let sql = format!("SELECT {COLUMNS} FROM events WHERE event_id IN ({placeholders})");
        let binds = Binds {
            uuids: request.events.iter().map(|e| e.event_id).collect(),
            ints: vec![],
        };
        let stored = self.fetch(sql, binds).await?;
        match store::match_stored(request, prepared, &stored)? {
            Some(result) => Ok(result),
            None => Err(refusal),
        }
    }

    async fn fetch(&self, sql: String, binds: Binds) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for uuid in binds.uuids {
            query = query.bind(uuid);
        }
        for int in binds.ints {
            query = query.bind(int);
        }
        let rows = query.fetch_all(&self.inner.readers).await?;
        let codes = &self.inner.codes;
        if !codes.knows_all(rows.iter().filter_map(|r| r.try_get::<i16, _>(4).ok())) {
            // A code added since this store opened (by another process).
            let mut conn = self.inner.readers.acquire().await?;
            load_codes(&mut conn, codes).await?;
        }
        let mut events = rows
            .into_iter()
            .map(|row| decode(row, codes))
            .collect::<Result<Vec<_>, _>>()?;
        let wanted = store::predecessors_to_read(&events);
        let mut read = std::collections::HashMap::with_capacity(wanted.len());
        for chunk in wanted.chunks(400) {
            let keys = vec!["(?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "WITH k(stream_id, stream_version) AS (VALUES {keys}) \
                 SELECT e.stream_id, e.stream_version, e.hash FROM k \
                 JOIN events e ON e.stream_id = k.stream_id AND e.stream_version = k.stream_version"
            );
            let mut query = sqlx::query_as::<_, (Uuid, i64, Vec<u8>)>(sqlx::AssertSqlSafe(sql));
            for (stream, version) in chunk {
                query = query.bind(*stream).bind(*version as i64);
            }
            for (stream, version, hash) in query.fetch_all(&self.inner.readers).await? {
                read.insert((stream, version as u64), store::hash32(hash, "hash")?);
            }
        }
        store::link_predecessors(&mut events, &read);
        Ok(events)
    }
}

/// Bind values of a read: uuids first, then integers.
#[derive(Debug, Default)]
struct Binds {
    uuids: Vec<Uuid>,
    ints: Vec<i64>,
}

/// Copies the WAL into the database file on its own connection (its own
/// thread), after appends, at most every [`CHECKPOINT_EVERY`]: a passive
/// checkpoint never blocks the writer, so appends do not pay for the copy
/// and its sync as they would with SQLite's automatic checkpoints.
async fn checkpointer(mut conn: SqliteConnection, mut appended: watch::Receiver<i64>) {
    while appended.changed().await.is_ok() {
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own checkpoints remain");
        }
        tokio::time::sleep(CHECKPOINT_EVERY).await;
    }
}

/// `INSERT … VALUES (…), … RETURNING global_position` for `n` rows.
fn insert_sql(n: usize) -> String {
    let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    format!(
        "INSERT INTO events (event_id, stream_id, stream_version, type_code, tenant_id, \
         recorded_at, correlation_id, causation_id, actor_kind, actor_id, actor_component, \
         trace_id, hash, payload) \
         VALUES {} RETURNING global_position",
        vec![row; n].join(", ")
    )
}

/// Inserts `rows` inside the caller's transaction, in as few statements as
/// [`INSERT_CHUNK`] allows; returns their positions in row order (the one
/// writer assigns them in insert order).
async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &Rows,
    recorded_at: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    let mut positions = Vec::with_capacity(rows.len());
    let mut start = 0;
    while start < rows.len() {
        let left = rows.len() - start;
        let n = if left >= INSERT_CHUNK {
            INSERT_CHUNK
        } else {
            1 << left.ilog2()
        };
        let mut query = sqlx::query(sqlx::AssertSqlSafe(insert_sql(n)));
        for r in start..start + n {
            let m = &rows.metadata;
            query = query
                .bind(rows.event_ids[r])
                .bind(rows.stream_ids[r])
                .bind(rows.versions[r])
                .bind(rows.type_codes[r])
                .bind(rows.tenant_ids[r])
                .bind(recorded_at)
                .bind(m.correlation_ids[r])
                .bind(m.causation_ids[r])
                .bind(m.actor_kinds[r])
                .bind(m.actor_ids[r])
                .bind(&m.actor_components[r])
                .bind(&m.trace_ids[r])
                .bind(&rows.hashes[r])
                .bind(&rows.payloads[r]);
        }
        let mut got = query
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        got.sort_unstable();
        positions.extend(got);
        start += n;
    }
    Ok(positions)
}

/// Reads `event_types` into `codes`.
async fn load_codes(
    conn: &mut SqliteConnection,
    codes: &Codes,
) -> Result<Vec<CodeRow>, StoreError> {
    let rows: Vec<CodeRow> = sqlx::query_as(
        "SELECT code, routing_key, event_type, schema_version, stream_type FROM event_types",
    )
    .fetch_all(&mut *conn)
    .await?;
    codes.replace(rows.clone());
    Ok(rows)
}

/// Adds the catalog's rows `event_types` lacks, then loads it.
async fn sync_codes(conn: &mut SqliteConnection, codes: &Codes) -> Result<(), StoreError> {
    let stored = load_codes(conn, codes).await?;
    let missing = crate::codes::missing(&stored)?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    for t in &missing {
        sqlx::query(
            "INSERT OR IGNORE INTO event_types (routing_key, event_type, schema_version, \
             stream_type) VALUES (?, ?, ?, ?)",
        )
        .bind(&t.routing_key)
        .bind(&t.event_type)
        .bind(t.schema_version as i32)
        .bind(&t.stream_type)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let stored = load_codes(conn, codes).await?;
    crate::codes::missing(&stored)?;
    Ok(())
}

/// A row read with [`COLUMNS`].
fn decode(row: SqliteRow, codes: &Codes) -> Result<RecordedEvent, StoreError> {
    let names = codes.resolve(row.try_get(4)?)?;
    let payload: &str = row.try_get(14)?;
    let payload =
        serde_json::from_str(payload).map_err(|e| StoreError::Corrupt(format!("payload: {e}")))?;
    let micros: i64 = row.try_get(6)?;
    let recorded_at = DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("recorded_at {micros}")))?;
    let metadata = store::metadata_from_columns(
        row.try_get(7)?,
        row.try_get(8)?,
        row.try_get(9)?,
        row.try_get(10)?,
        row.try_get(11)?,
        row.try_get(12)?,
    )?;
    Ok(RecordedEvent {
        global_position: row.try_get(0)?,
        event_id: row.try_get(1)?,
        stream_id: row.try_get(2)?,
        stream_version: row.try_get::<i64, _>(3)? as u64,
        tenant_id: row.try_get(5)?,
        recorded_at,
        metadata: store::metadata_value(&metadata),
        // Not stored: the previous event's hash (see `link_predecessors`).
        prev_hash: GENESIS,
        hash: store::hash32(row.try_get(13)?, "hash")?,
        payload,
        stream_type: names.stream_type.clone(),
        event_type: names.event_type.clone(),
        routing_key: names.routing_key.clone(),
        schema_version: names.schema_version,
    })
}

impl EventStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(stream_id = %request.stream_id, events = request.events.len()))]
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let mut results = self.append_many(vec![request]).await;
        results.pop().unwrap_or(Err(StoreError::EmptyAppend))
    }

    /// All requests in one write transaction (one sync to disk): those on
    /// known heads in one multi-row insert (the unique key on (stream,
    /// version) refuses a head that moved on, and then they go alone), the
    /// others each under its own savepoint after reading their head.
    #[tracing::instrument(skip_all, fields(requests = requests.len()))]
    async fn append_many(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<AppendResult, StoreError>> {
        let now = self.inner.clock.now();
        let prepared: Vec<Result<store::Prepared, StoreError>> = requests
            .iter()
            .map(|r| store::prepare(r, now, &self.inner.codes))
            .collect();
        if prepared.iter().all(Result::is_err) {
            return prepared
                .into_iter()
                .filter_map(Result::err)
                .map(Err)
                .collect();
        }
        let (rows, planned) = store::plan_on_known_heads(&requests, &prepared, &self.inner.heads);
        let mut outcomes: Vec<Option<Outcome>> = requests.iter().map(|_| None).collect();
        let committed = {
            let mut conn = self.inner.writer.lock().await;
            async {
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                if !planned.is_empty() {
                    let recorded_at = truncate_to_micros(now).timestamp_micros();
                    let mut on_heads = tx.begin().await?;
                    match insert_rows(&mut on_heads, &rows, recorded_at).await {
                        Ok(positions) => {
                            on_heads.commit().await?;
                            let mut at = 0;
                            for p in &planned {
                                let n = requests[p.index].events.len();
                                let result = AppendResult {
                                    first_version: p.base + 1,
                                    last_version: p.base + n as u64,
                                    first_position: positions.get(at).copied().unwrap_or_default(),
                                    last_position: positions
                                        .get(at + n - 1)
                                        .copied()
                                        .unwrap_or_default(),
                                    already_stored: false,
                                };
                                outcomes[p.index] = Some(Ok(Ok((result, p.last_hash))));
                                at += n;
                            }
                        }
                        Err(e) => {
                            on_heads.rollback().await?;
                            tracing::debug!(error = %e, "batched append refused; appending one by one");
                            for p in &planned {
                                self.inner.heads.forget(requests[p.index].stream_id);
                            }
                        }
                    }
                }
                let pending: Vec<usize> = (0..requests.len())
                    .filter(|&i| outcomes[i].is_none() && prepared[i].is_ok())
                    .collect();
                let alone = pending.len() == 1 && outcomes.iter().all(Option::is_none);
                for i in pending {
                    let Ok(prepared) = &prepared[i] else { continue };
                    if alone {
                        // One request: the transaction itself is its undo.
                        let outcome = Self::write(&mut tx, &requests[i], prepared, &self.inner.codes).await;
                        let keep = matches!(outcome, Ok(Ok(_)));
                        outcomes[i] = Some(outcome);
                        return if keep {
                            tx.commit().await
                        } else {
                            tx.rollback().await
                        };
                    }
                    let mut savepoint = tx.begin().await?;
                    let outcome = Self::write(&mut savepoint, &requests[i], prepared, &self.inner.codes).await;
                    if matches!(outcome, Ok(Ok(_))) {
                        savepoint.commit().await?;
                    } else {
                        savepoint.rollback().await?;
                    }
                    outcomes[i] = Some(outcome);
                }
                tx.commit().await
            }
            .await
        };
        if let Err(e) = committed {
            return requests
                .iter()
                .map(|_| Err(StoreError::Database(sqlx::Error::Protocol(e.to_string()))))
                .collect();
        }
        let mut results = Vec::with_capacity(requests.len());
        for ((request, prepared), outcome) in requests.iter().zip(prepared).zip(outcomes) {
            let prepared = match prepared {
                Ok(prepared) => prepared,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let Some(outcome) = outcome else {
                results.push(Err(StoreError::EmptyAppend));
                continue;
            };
            let refusal = match outcome {
                Ok(Ok((result, last_hash))) => {
                    self.inner.heads.remember(
                        request.stream_id,
                        Head {
                            version: result.last_version,
                            hash: last_hash,
                            stream_type: request.stream_type.clone(),
                            tenant_id: request.tenant_id,
                        },
                    );
                    self.inner
                        .appended
                        .send_modify(|p| *p = (*p).max(result.last_position));
                    results.push(Ok(result));
                    continue;
                }
                Ok(Err(refusal)) => refusal,
                Err(e) => {
                    let unique_id = e.as_database_error().is_some_and(|d| {
                        d.is_unique_violation() && d.message().contains("events.event_id")
                    });
                    if !unique_id {
                        results.push(Err(StoreError::Database(e)));
                        continue;
                    }
                    StoreError::Database(e)
                }
            };
            results.push(self.settle_refusal(request, &prepared, refusal).await);
        }
        results
    }

    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ? \
             ORDER BY stream_version LIMIT ?"
        );
        let events = self
            .fetch(
                sql,
                Binds {
                    uuids: vec![stream_id],
                    ints: vec![from_version as i64, limit as i64],
                },
            )
            .await?;
        if let Some(last) = events.last() {
            self.inner.heads.remember_event(last);
        }
        Ok(events)
    }

    async fn read_all(
        &self,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?"
        );
        self.fetch(
            sql,
            Binds {
                uuids: vec![],
                ints: vec![after_position, limit as i64],
            },
        )
        .await
    }

    async fn read_all_of(
        &self,
        after_position: i64,
        routing_keys: &[&str],
        scan: usize,
    ) -> Result<Filtered, StoreError> {
        // How far the next `scan` events reach (positions only, from the
        // primary key), then the wanted ones among them: only those decoded.
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT max(global_position) FROM (SELECT global_position FROM events \
             WHERE global_position > ? ORDER BY global_position LIMIT ?)",
        )
        .bind(after_position)
        .bind(scan as i64)
        .fetch_one(&self.inner.readers)
        .await?;
        let Some(through) = through else {
            return Ok(Filtered::nothing(after_position));
        };
        let codes: Vec<i64> = (self.inner.codes.codes_of(routing_keys).into_iter())
            .map(i64::from)
            .collect();
        if codes.is_empty() {
            return Ok(Filtered::nothing(through));
        }
        let placeholders = vec!["?"; codes.len()].join(", ");
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE global_position > ? AND global_position <= ? \
             AND type_code IN ({placeholders}) ORDER BY global_position"
        );
        let mut ints = vec![after_position, through];
        ints.extend(codes);
        let events = self
            .fetch(
                sql,
                Binds {
                    uuids: vec![],
                    ints,
                },
            )
            .await?;
        Ok(Filtered { events, through })
    }

    async fn read_tenant(
        &self,
        tenant_id: Uuid,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE tenant_id = ? AND global_position > ? \
             ORDER BY global_position LIMIT ?"
        );
        self.fetch(
            sql,
            Binds {
                uuids: vec![tenant_id],
                ints: vec![after_position, limit as i64],
            },
        )
        .await
    }

    async fn stream_version(&self, stream_id: Uuid) -> Result<u64, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT max(stream_version) FROM events WHERE stream_id = ?")
                .bind(stream_id)
                .fetch_one(&self.inner.readers)
                .await?;
        Ok(version.unwrap_or(0) as u64)
    }

    fn appended(&self) -> watch::Receiver<i64> {
        self.inner.appended.subscribe()
    }
}
