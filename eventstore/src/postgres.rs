//! The PostgreSQL backend (production).
//!
//! Appends are one statement ([`APPEND_SQL`]), so an append is one round
//! trip and one transaction. Reads after a global position are
//! gap-safe: positions are ordered like transaction ids, and only positions
//! below the snapshot's xmin are read (see the migration).
//! `LISTEN/NOTIFY` carries wake-ups between instances: a background task
//! sends at most one coalesced `NOTIFY` per few milliseconds, off the append
//! path, because a `NOTIFY` inside the append would serialise every commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::Row;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::codes::{CodeRow, Codes};
use crate::error::StoreError;
use crate::event::{AppendRequest, AppendResult, ExpectedVersion, RecordedEvent};
use crate::hashing::GENESIS;
use crate::heads::{Head, Heads};
use crate::store::{self, EventStore, Filtered, Rows};

/// How often an append at any version retries after losing a race.
const ANY_VERSION_ATTEMPTS: u32 = 100;

/// How many stream heads a store remembers.
const HEADS_CAPACITY: usize = 100_000;
use crate::task::{AbortOnDrop, spawn_named};

/// The `LISTEN/NOTIFY` channel of append wake-ups.
pub const CHANNEL: &str = "flatrender_events";

/// The shortest time between two wake-ups this process sends: other
/// instances' subscribers learn of new events at most this late (plus their
/// read), and a busy writer sends at most one `NOTIFY` per interval.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(20);

/// One append as one statement (no server-side function, so one round trip
/// and one plan): read the stream head, check the expectation and the
/// stream's owner, chain the hashes, insert. Inserts nothing when the
/// expectation or the owner check fails; the caller then asks why. Positions
/// are `xid * 65536 + index` (see 0001_events.sql "Gap safety").
///
/// Binds: $1 stream_id, $2 the type codes of the stream type, $3 tenant_id,
/// $4 expected (NULL any, 0 no stream), $5 event ids, $6 type codes,
/// $7 payloads, $8 correlation ids, $9 causation ids, $10 actor kinds,
/// $11 actor ids, $12 actor components, $13 trace ids, $14 recorded_at,
/// $15 digests.
pub const APPEND_SQL: &str = r"
WITH RECURSIVE head AS (
    SELECT e.stream_version AS v, e.hash, e.type_code, e.tenant_id
      FROM events e
     WHERE e.stream_id = $1
     ORDER BY e.stream_version DESC
     LIMIT 1
), base AS (
    SELECT coalesce((SELECT v FROM head), 0) AS v,
           coalesce((SELECT hash FROM head), '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) AS prev
     WHERE NOT EXISTS (SELECT 1 FROM head
                        WHERE type_code <> ALL ($2::smallint[]) OR tenant_id IS DISTINCT FROM $3)
       AND ($4::integer IS NULL OR $4 = coalesce((SELECT v FROM head), 0))
), chain (i, prev, hash) AS (
    SELECT 1, b.prev, sha256(b.prev || int8send((b.v + 1)::bigint) || ($15::bytea[])[1])
      FROM base b
    UNION ALL
    SELECT c.i + 1, c.hash, sha256(c.hash || int8send((b.v + c.i + 1)::bigint) || ($15::bytea[])[c.i + 1])
      FROM chain c, base b
     WHERE c.i < cardinality($5::uuid[])
)
INSERT INTO events (global_position, recorded_at, stream_version, type_code, actor_kind,
                    event_id, stream_id, tenant_id, correlation_id, causation_id, actor_id,
                    hash, actor_component, trace_id, payload)
SELECT pg_current_xact_id()::text::bigint * 65536 + c.i - 1, $14, b.v + c.i,
       ($6::smallint[])[c.i], ($10::smallint[])[c.i], ($5::uuid[])[c.i], $1, $3,
       ($8::uuid[])[c.i], ($9::uuid[])[c.i], ($11::uuid[])[c.i], c.hash,
       ($12::text[])[c.i], ($13::text[])[c.i], ($7::text[])[c.i]::json
  FROM chain c, base b
RETURNING stream_version, global_position, hash";

/// Appends on top of known heads: a plain insert of rows whose versions and
/// hash chain the caller computed, for one stream or several. The unique key
/// on (stream, version) refuses it if a head has moved on. Positions follow
/// the row order and are consecutive (`xid * 65536 + index`), so only the
/// first comes back.
///
/// Binds: $1 recorded_at, then one array element per row: $2 event ids,
/// $3 stream ids, $4 versions, $5 type codes, $6 tenant ids, $7 payloads,
/// $8 correlation ids, $9 causation ids, $10 actor kinds, $11 actor ids,
/// $12 actor components, $13 trace ids, $14 hashes.
pub const APPEND_ON_HEAD_SQL: &str = r"
WITH x AS (SELECT pg_current_xact_id()::text::bigint * 65536 AS base), ins AS (
INSERT INTO events (global_position, recorded_at, stream_version, type_code, actor_kind,
                    event_id, stream_id, tenant_id, correlation_id, causation_id, actor_id,
                    hash, actor_component, trace_id, payload)
SELECT x.base + u.i - 1, $1, u.version, u.type_code,
       u.actor_kind, u.event_id, u.stream_id, u.tenant_id, u.correlation_id, u.causation_id,
       u.actor_id, u.hash, u.actor_component, u.trace_id, u.payload::json
  FROM x, unnest($2::uuid[], $3::uuid[], $4::integer[], $5::smallint[], $6::uuid[], $7::text[],
              $8::uuid[], $9::uuid[], $10::smallint[], $11::uuid[], $12::text[], $13::text[],
              $14::bytea[])
       WITH ORDINALITY AS u(event_id, stream_id, version, type_code, tenant_id, payload,
                            correlation_id, causation_id, actor_kind, actor_id, actor_component,
                            trace_id, hash, i)
RETURNING global_position)
SELECT min(global_position) FROM ins";

/// One row on a known head (the commonest append: a new stream's first
/// event, or the next event of a stream this process wrote): the same insert
/// as [`APPEND_ON_HEAD_SQL`] without arrays. Binds as [`APPEND_ON_HEAD_SQL`],
/// one value each.
pub const APPEND_ONE_SQL: &str = r"
INSERT INTO events (global_position, recorded_at, stream_version, type_code, actor_kind,
                    event_id, stream_id, tenant_id, correlation_id, causation_id, actor_id,
                    hash, actor_component, trace_id, payload)
VALUES (pg_current_xact_id()::text::bigint * 65536, $1, $4, $5, $10, $2, $3, $6, $8, $9, $11,
        $14, $12, $13, $7::json)
RETURNING global_position";

/// The most rows [`insert_values_sql`] carries; more go through
/// [`APPEND_ON_HEAD_SQL`]'s arrays.
const VALUES_ROWS: usize = 32;

/// [`APPEND_ONE_SQL`] for `n` rows: one `VALUES` list (cheaper to plan and
/// run than unnesting fourteen arrays), the first position back. Binds:
/// $1 recorded_at, then per row the 13 values of [`APPEND_ONE_SQL`]'s $2–$14.
fn insert_values_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=VALUES_ROWS)
            .map(|n| {
                let rows: Vec<String> = (0..n)
                    .map(|i| {
                        let p = |k: usize| format!("${}", 2 + i * 13 + k);
                        format!(
                            "(pg_current_xact_id()::text::bigint * 65536 + {i}, $1, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}::json)",
                            p(2), p(3), p(8), p(0), p(1), p(4), p(6), p(7), p(9), p(12), p(10), p(11), p(5)
                        )
                    })
                    .collect();
                format!(
                    "WITH ins AS (INSERT INTO events (global_position, recorded_at, stream_version, \
                     type_code, actor_kind, event_id, stream_id, tenant_id, correlation_id, \
                     causation_id, actor_id, hash, actor_component, trace_id, payload) VALUES {} \
                     RETURNING global_position) SELECT min(global_position) FROM ins",
                    rows.join(", ")
                )
            })
            .collect()
    });
    &all[n.min(VALUES_ROWS)]
}

/// Inserts rows with [`APPEND_ONE_SQL`], [`insert_values_sql`] or
/// [`APPEND_ON_HEAD_SQL`] by their number; returns the first one's position
/// (the others follow it, in row order).
async fn insert_rows(
    rows: Rows,
    pool: &PgPool,
    recorded_at: chrono::DateTime<chrono::Utc>,
) -> Result<i64, sqlx::Error> {
    if rows.len() == 1 {
        let mut r = rows;
        let m = &mut r.metadata;
        let position: i64 = sqlx::query_scalar(APPEND_ONE_SQL)
            .bind(recorded_at)
            .bind(r.event_ids[0])
            .bind(r.stream_ids[0])
            .bind(r.versions[0])
            .bind(r.type_codes[0])
            .bind(r.tenant_ids[0])
            .bind(r.payloads.swap_remove(0))
            .bind(m.correlation_ids[0])
            .bind(m.causation_ids[0])
            .bind(m.actor_kinds[0])
            .bind(m.actor_ids[0])
            .bind(m.actor_components.swap_remove(0))
            .bind(m.trace_ids.swap_remove(0))
            .bind(r.hashes.swap_remove(0))
            .fetch_one(pool)
            .await?;
        return Ok(position);
    }
    if rows.len() <= VALUES_ROWS {
        let m = &rows.metadata;
        let mut query = sqlx::query_scalar(insert_values_sql(rows.len())).bind(recorded_at);
        for r in 0..rows.len() {
            // The order of APPEND_ONE_SQL's $2..$14.
            query = query
                .bind(rows.event_ids[r])
                .bind(rows.stream_ids[r])
                .bind(rows.versions[r])
                .bind(rows.type_codes[r])
                .bind(rows.tenant_ids[r])
                .bind(&rows.payloads[r])
                .bind(m.correlation_ids[r])
                .bind(m.causation_ids[r])
                .bind(m.actor_kinds[r])
                .bind(m.actor_ids[r])
                .bind(&m.actor_components[r])
                .bind(&m.trace_ids[r])
                .bind(&rows.hashes[r]);
        }
        let first: Option<i64> = query.fetch_one(pool).await?;
        return first
            .ok_or_else(|| sqlx::Error::Protocol("an insert of rows inserted none".into()));
    }
    let m = rows.metadata;
    let first: Option<i64> = sqlx::query_scalar(APPEND_ON_HEAD_SQL)
        .bind(recorded_at)
        .bind(rows.event_ids)
        .bind(rows.stream_ids)
        .bind(rows.versions)
        .bind(rows.type_codes)
        .bind(rows.tenant_ids)
        .bind(rows.payloads)
        .bind(m.correlation_ids)
        .bind(m.causation_ids)
        .bind(m.actor_kinds)
        .bind(m.actor_ids)
        .bind(m.actor_components)
        .bind(m.trace_ids)
        .bind(rows.hashes)
        .fetch_one(pool)
        .await?;
    first.ok_or_else(|| sqlx::Error::Protocol("an insert of rows inserted none".into()))
}

/// The columns every read selects, in [`decode`]'s order.
const COLUMNS: &str = "global_position, recorded_at, stream_version, type_code, actor_kind, \
     event_id, stream_id, tenant_id, correlation_id, causation_id, actor_id, hash, \
     actor_component, trace_id, payload";

/// The session settings the store's connections should have: its statements
/// are the same on every call, so plan them once per connection (the append
/// statement otherwise gets re-planned on every call).
pub fn tuned(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("plan_cache_mode", "force_generic_plan")])
}

/// Settings of a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Whether to listen for other instances' appends (off for one-shot tools).
    pub listen: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            listen: true,
        }
    }
}

/// An event store on PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    appended: watch::Sender<i64>,
    local_max: Arc<AtomicI64>,
    publish: Arc<Notify>,
    heads: Heads,
    codes: Codes,
    _tasks: AbortOnDrop,
}

impl PgStore {
    /// Connects, applies the migrations and starts the wake-up tasks.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StoreError> {
        let connect = tuned(PgConnectOptions::from_str(url)?);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(connect)
            .await?;
        Self::from_pool(pool, options, Arc::new(SystemClock)).await
    }

    /// Uses an existing pool and clock; applies the migrations. The pool's
    /// connect options should be [`tuned`].
    pub async fn from_pool(
        pool: PgPool,
        options: PgOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        let codes = Codes::default();
        sync_codes(&pool, &codes).await?;
        let (appended, _) = watch::channel(0);
        let local_max = Arc::new(AtomicI64::new(0));
        let publish = Arc::new(Notify::new());
        let mut tasks = AbortOnDrop::default();
        if options.listen {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            tasks.push(spawn_named(
                "eventstore.pg.listen",
                listen(listener, appended.clone()),
            ));
            tasks.push(spawn_named(
                "eventstore.pg.notify",
                publish_wakeups(pool.clone(), local_max.clone(), publish.clone()),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                clock,
                appended,
                local_max,
                publish,
                heads: Heads::new(HEADS_CAPACITY),
                codes,
                _tasks: tasks,
            }),
        })
    }

    /// The connection pool (for tests and tools that share the database).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    async fn fetch_by_ids(&self, ids: Vec<Uuid>) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE event_id = ANY($1)");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .fetch_all(&self.inner.pool)
            .await?;
        self.decode_all(rows).await
    }

    /// Decodes rows read with [`COLUMNS`], first reloading the code table
    /// if a row carries a code added since (by another instance).
    async fn decode_all(&self, rows: Vec<PgRow>) -> Result<Vec<RecordedEvent>, StoreError> {
        let codes = &self.inner.codes;
        let known = codes.knows_all(rows.iter().filter_map(|r| r.try_get::<i16, _>(3).ok()));
        if !known {
            load_codes(&self.inner.pool, codes).await?;
        }
        let mut events = rows
            .into_iter()
            .map(|row| decode(row, codes))
            .collect::<Result<Vec<_>, _>>()?;
        let wanted = store::predecessors_to_read(&events);
        let mut read = std::collections::HashMap::with_capacity(wanted.len());
        if !wanted.is_empty() {
            let (streams, versions): (Vec<Uuid>, Vec<i32>) =
                wanted.iter().map(|(s, v)| (*s, *v as i32)).unzip();
            let rows: Vec<(Uuid, i32, Vec<u8>)> = sqlx::query_as(
                "SELECT e.stream_id, e.stream_version, e.hash \
                   FROM unnest($1::uuid[], $2::integer[]) AS k(stream_id, stream_version) \
                   JOIN events e USING (stream_id, stream_version)",
            )
            .bind(streams)
            .bind(versions)
            .fetch_all(&self.inner.pool)
            .await?;
            for (stream, version, hash) in rows {
                read.insert((stream, version as u64), store::hash32(hash, "hash")?);
            }
        }
        store::link_predecessors(&mut events, &read);
        Ok(events)
    }

    /// Appends on top of a known head (`None`: the stream is new).
    async fn append_on_head(
        &self,
        request: &AppendRequest,
        prepared: &store::Prepared,
        head: Option<Head>,
    ) -> Result<OnHead, StoreError> {
        let (base, prev) = match &head {
            None => (0, GENESIS),
            Some(h) if h.stream_type != request.stream_type || h.tenant_id != request.tenant_id => {
                return Ok(OnHead::Refused(StoreError::StreamMismatch {
                    stream_id: request.stream_id,
                }));
            }
            Some(h) => (h.version, h.hash),
        };
        let n = request.events.len();
        let mut rows = Rows::default();
        let last_hash = rows.push(request, prepared, base, prev);
        let result = insert_rows(rows, &self.inner.pool, prepared.recorded_at).await;
        match result {
            Ok(first_position) => {
                self.remember(request, base + n as u64, last_hash);
                Ok(OnHead::Appended(AppendResult {
                    first_version: base + 1,
                    last_version: base + n as u64,
                    first_position,
                    last_position: first_position + n as i64 - 1,
                    already_stored: false,
                }))
            }
            Err(e) => match e.as_database_error() {
                Some(db) if db.is_unique_violation() => {
                    if db.constraint() != Some("events_stream_version_key") {
                        // events_event_id_key: a retry, or the id reused.
                        return Ok(OnHead::Refused(StoreError::Database(e)));
                    }
                    self.inner.heads.forget(request.stream_id);
                    if request.expected == ExpectedVersion::Any {
                        return Ok(OnHead::Stale);
                    }
                    let actual = self.stream_version(request.stream_id).await?;
                    Ok(OnHead::Refused(store::wrong_version(request, actual)))
                }
                _ => Err(StoreError::Database(e)),
            },
        }
    }

    /// [`APPEND_SQL`] with its binds for `request`.
    fn reading_head_query<'q>(
        &self,
        request: &'q AppendRequest,
        prepared: &'q store::Prepared,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let events = &request.events;
        let mut m = store::MetadataColumns::default();
        for event in events {
            m.push(&event.metadata);
        }
        let digests: Vec<Vec<u8>> = prepared.digests.iter().map(|d| d.to_vec()).collect();
        sqlx::query(APPEND_SQL)
            .bind(request.stream_id)
            .bind(self.inner.codes.of_stream_type(&request.stream_type))
            .bind(request.tenant_id)
            .bind(request.expected.as_db().map(|v| v as i32))
            .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(&prepared.type_codes)
            .bind(&prepared.payload_json)
            .bind(m.correlation_ids)
            .bind(m.causation_ids)
            .bind(m.actor_kinds)
            .bind(m.actor_ids)
            .bind(m.actor_components)
            .bind(m.trace_ids)
            .bind(prepared.recorded_at)
            .bind(digests)
    }

    /// Runs an append's statement inside the caller's transaction and
    /// leaves the commit (or rollback) to it: for tests that hold a position
    /// open while other writers commit above it. Returns how many events
    /// it inserted (none when the expectation or the owner check failed).
    pub async fn append_in(
        &self,
        tx: &mut sqlx::PgConnection,
        request: &AppendRequest,
    ) -> Result<usize, StoreError> {
        let prepared = store::prepare(request, self.inner.clock.now(), &self.inner.codes)?;
        let rows = self
            .reading_head_query(request, &prepared)
            .fetch_all(&mut *tx)
            .await?;
        Ok(rows.len())
    }

    /// Appends with a statement that reads the stream head itself.
    async fn append_reading_head(
        &self,
        request: &AppendRequest,
        prepared: &store::Prepared,
    ) -> Result<AppendResult, StoreError> {
        let n = request.events.len();
        let result = self
            .reading_head_query(request, prepared)
            .fetch_all(&self.inner.pool)
            .await;
        let refusal = match result {
            Ok(rows) if rows.len() == n => {
                let mut first_version = i64::MAX;
                let mut first_position = i64::MAX;
                let mut last = (0i64, Vec::new());
                for row in &rows {
                    let version = i64::from(row.try_get::<i32, _>(0)?);
                    first_version = first_version.min(version);
                    first_position = first_position.min(row.try_get(1)?);
                    if version > last.0 {
                        last = (version, row.try_get(2)?);
                    }
                }
                self.remember(request, last.0 as u64, store::hash32(last.1, "hash")?);
                return Ok(self.appended_ok(AppendResult {
                    first_version: first_version as u64,
                    last_version: first_version as u64 + n as u64 - 1,
                    first_position,
                    last_position: first_position + n as i64 - 1,
                    already_stored: false,
                }));
            }
            Ok(_) => self.why_refused(request).await?,
            Err(e) => match e.as_database_error() {
                Some(db) if db.is_unique_violation() => {
                    if db.constraint() == Some("events_stream_version_key") {
                        // Another writer took the version between our read and insert.
                        let actual = self.stream_version(request.stream_id).await?;
                        store::wrong_version(request, actual)
                    } else {
                        // events_event_id_key: a retry, or the id reused (settled below).
                        StoreError::Database(e)
                    }
                }
                _ => return Err(StoreError::Database(e)),
            },
        };
        self.settle_refusal(request, prepared, refusal).await
    }

    fn remember(&self, request: &AppendRequest, version: u64, hash: [u8; 32]) {
        let head = Head {
            version,
            hash,
            stream_type: request.stream_type.clone(),
            tenant_id: request.tenant_id,
        };
        self.inner.heads.remember(request.stream_id, head);
    }

    /// Signals subscribers after a successful append.
    fn appended_ok(&self, result: AppendResult) -> AppendResult {
        self.inner
            .local_max
            .fetch_max(result.last_position, Ordering::AcqRel);
        self.inner
            .appended
            .send_modify(|p| *p = (*p).max(result.last_position));
        self.inner.publish.notify_one();
        result
    }

    /// Why an append inserted nothing: the expectation or the stream's owner.
    async fn why_refused(&self, request: &AppendRequest) -> Result<StoreError, StoreError> {
        let head: Option<(i32, i16, Option<Uuid>)> = sqlx::query_as(
            "SELECT stream_version, type_code, tenant_id FROM events WHERE stream_id = $1 \
             ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(request.stream_id)
        .fetch_optional(&self.inner.pool)
        .await?;
        Ok(match head {
            Some((_, code, tenant))
                if !self
                    .inner
                    .codes
                    .of_stream_type(&request.stream_type)
                    .contains(&code)
                    || tenant != request.tenant_id =>
            {
                StoreError::StreamMismatch {
                    stream_id: request.stream_id,
                }
            }
            Some((version, _, _)) => store::wrong_version(request, version as u64),
            None => store::wrong_version(request, 0),
        })
    }

    /// After a refused append: a retry of a stored append, or the error.
    async fn settle_refusal(
        &self,
        request: &AppendRequest,
        prepared: &store::Prepared,
        refusal: StoreError,
    ) -> Result<AppendResult, StoreError> {
        let ids = request.events.iter().map(|e| e.event_id).collect();
        let stored = self.fetch_by_ids(ids).await?;
        match store::match_stored(request, prepared, &stored)? {
            Some(result) => Ok(result),
            None => Err(refusal),
        }
    }
}

/// The outcome of an append on a known head.
#[derive(Debug)]
enum OnHead {
    Appended(AppendResult),
    Refused(StoreError),
    /// The head moved on and any version will do: read it and try again.
    Stale,
}

/// Forwards other instances' wake-ups to this process's subscribers.
async fn listen(mut listener: PgListener, appended: watch::Sender<i64>) {
    loop {
        match listener.recv().await {
            Ok(note) => {
                let position = note.payload().parse().unwrap_or(0);
                appended.send_modify(|p| *p = (*p).max(position));
            }
            Err(e) => {
                tracing::warn!(error = %e, "event wake-up listener failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Sends coalesced `NOTIFY`s for this process's appends.
async fn publish_wakeups(pool: PgPool, local_max: Arc<AtomicI64>, publish: Arc<Notify>) {
    let mut sent = 0;
    loop {
        publish.notified().await;
        let position = local_max.load(Ordering::Acquire);
        if position <= sent {
            continue;
        }
        let result = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(position.to_string())
            .execute(&pool)
            .await;
        match result {
            Ok(_) => sent = position,
            Err(e) => tracing::warn!(error = %e, "could not publish an event wake-up"),
        }
        tokio::time::sleep(NOTIFY_INTERVAL).await;
    }
}

/// Reads `event_types` into `codes`.
async fn load_codes(pool: &PgPool, codes: &Codes) -> Result<Vec<CodeRow>, StoreError> {
    let rows: Vec<CodeRow> = sqlx::query_as(
        "SELECT code, routing_key, event_type, schema_version, stream_type FROM event_types",
    )
    .fetch_all(pool)
    .await?;
    codes.replace(rows.clone());
    Ok(rows)
}

/// Adds the catalog's rows `event_types` lacks, then loads it. Inserts only
/// what is missing, so that restarts do not use up codes (a `smallint`).
async fn sync_codes(pool: &PgPool, codes: &Codes) -> Result<(), StoreError> {
    let stored = load_codes(pool, codes).await?;
    let missing = crate::codes::missing(&stored)?;
    if missing.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO event_types (routing_key, event_type, schema_version, stream_type) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(
        missing
            .iter()
            .map(|t| t.routing_key.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        missing
            .iter()
            .map(|t| t.event_type.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        missing
            .iter()
            .map(|t| t.schema_version as i32)
            .collect::<Vec<_>>(),
    )
    .bind(
        missing
            .iter()
            .map(|t| t.stream_type.clone())
            .collect::<Vec<_>>(),
    )
    .execute(pool)
    .await?;
    let stored = load_codes(pool, codes).await?;
    crate::codes::missing(&stored)?;
    Ok(())
}

/// A row read with [`COLUMNS`].
fn decode(row: PgRow, codes: &Codes) -> Result<RecordedEvent, StoreError> {
    let names = codes.resolve(row.try_get(3)?)?;
    let metadata = store::metadata_from_columns(
        row.try_get(8)?,
        row.try_get(9)?,
        row.try_get(4)?,
        row.try_get(10)?,
        row.try_get(12)?,
        row.try_get(13)?,
    )?;
    Ok(RecordedEvent {
        global_position: row.try_get(0)?,
        recorded_at: row.try_get(1)?,
        stream_version: row.try_get::<i32, _>(2)? as u64,
        event_id: row.try_get(5)?,
        stream_id: row.try_get(6)?,
        tenant_id: row.try_get(7)?,
        // Not stored: the previous event's hash (see `link_predecessors`).
        prev_hash: GENESIS,
        hash: store::hash32(row.try_get(11)?, "hash")?,
        payload: row.try_get(14)?,
        metadata: store::metadata_value(&metadata),
        stream_type: names.stream_type.clone(),
        event_type: names.event_type.clone(),
        routing_key: names.routing_key.clone(),
        schema_version: names.schema_version,
    })
}

impl EventStore for PgStore {
    #[tracing::instrument(skip_all, fields(stream_id = %request.stream_id, events = request.events.len()))]
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let prepared = store::prepare(&request, self.inner.clock.now(), &self.inner.codes)?;
        let known = match request.expected {
            ExpectedVersion::NoStream => Some(None),
            ExpectedVersion::Exact(v) => self
                .inner
                .heads
                .get(request.stream_id)
                .filter(|h| h.version == v)
                .map(Some),
            ExpectedVersion::Any => self.inner.heads.get(request.stream_id).map(Some),
        };
        if let Some(head) = known {
            match self.append_on_head(&request, &prepared, head).await? {
                OnHead::Appended(result) => return Ok(self.appended_ok(result)),
                OnHead::Refused(refusal) => {
                    return self.settle_refusal(&request, &prepared, refusal).await;
                }
                OnHead::Stale => {}
            }
        }
        // An append at any version that loses a race to another writer of
        // the stream simply goes again on top of the new head.
        let mut attempts = 0;
        loop {
            match self.append_reading_head(&request, &prepared).await {
                Err(StoreError::WrongExpectedVersion { .. })
                    if request.expected == ExpectedVersion::Any
                        && attempts < ANY_VERSION_ATTEMPTS =>
                {
                    attempts += 1;
                }
                outcome => return outcome,
            }
        }
    }

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
        let (rows, planned) = store::plan_on_known_heads(&requests, &prepared, &self.inner.heads);
        let mut results: Vec<Option<Result<AppendResult, StoreError>>> =
            prepared.into_iter().map(|p| p.err().map(Err)).collect();
        if !planned.is_empty() {
            let recorded_at = crate::hashing::truncate_to_micros(now);
            match insert_rows(rows, &self.inner.pool, recorded_at).await {
                Ok(first) => {
                    let mut at = 0;
                    for p in planned {
                        let request = &requests[p.index];
                        let n = request.events.len();
                        let first_position = first + at as i64;
                        at += n;
                        self.remember(request, p.base + n as u64, p.last_hash);
                        results[p.index] = Some(Ok(self.appended_ok(AppendResult {
                            first_version: p.base + 1,
                            last_version: p.base + n as u64,
                            first_position,
                            last_position: first_position + n as i64 - 1,
                            already_stored: false,
                        })));
                    }
                }
                Err(e) => {
                    // Some head moved on or an id is already stored: settle
                    // each request alone, as a lone append would.
                    tracing::debug!(error = %e, "batched append refused; appending one by one");
                    for p in planned {
                        self.inner.heads.forget(requests[p.index].stream_id);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(requests.len());
        for (request, result) in requests.into_iter().zip(results) {
            out.push(match result {
                Some(result) => result,
                None => self.append(request).await,
            });
        }
        out
    }

    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND stream_version >= $2 \
             ORDER BY stream_version LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream_id)
            .bind(from_version.min(i32::MAX as u64) as i32)
            .bind(limit as i64)
            .fetch_all(&self.inner.pool)
            .await?;
        let events = self.decode_all(rows).await?;
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
            "SELECT {COLUMNS} FROM events WHERE global_position > $1 \
             AND global_position < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint * 65536) \
             ORDER BY global_position LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after_position)
            .bind(limit as i64)
            .fetch_all(&self.inner.pool)
            .await?;
        self.decode_all(rows).await
    }

    async fn read_all_of(
        &self,
        after_position: i64,
        routing_keys: &[&str],
        scan: usize,
    ) -> Result<Filtered, StoreError> {
        // How far the next `scan` settled events reach (positions only, from
        // the primary key; the same snapshot bound as `read_all`), then the
        // wanted ones among them: only those decoded. Everything at or below
        // `through` is settled, so the second query sees the same events
        // whatever its snapshot.
        let through: Option<i64> = sqlx::query_scalar(
            "SELECT max(global_position) FROM (SELECT global_position FROM events \
             WHERE global_position > $1 \
             AND global_position < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint * 65536) \
             ORDER BY global_position LIMIT $2) AS w",
        )
        .bind(after_position)
        .bind(scan as i64)
        .fetch_one(&self.inner.pool)
        .await?;
        let Some(through) = through else {
            return Ok(Filtered::nothing(after_position));
        };
        let codes = self.inner.codes.codes_of(routing_keys);
        if codes.is_empty() {
            return Ok(Filtered::nothing(through));
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE global_position > $1 AND global_position <= $2 \
             AND type_code = ANY($3) ORDER BY global_position"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after_position)
            .bind(through)
            .bind(codes)
            .fetch_all(&self.inner.pool)
            .await?;
        Ok(Filtered {
            events: self.decode_all(rows).await?,
            through,
        })
    }

    async fn read_tenant(
        &self,
        tenant_id: Uuid,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // No tenant index: follow the log with `read_all` (its ordered,
        // gap-safe plan whatever the statistics say) and keep the tenant's
        // events.
        let mut out = Vec::new();
        let mut position = after_position;
        while out.len() < limit {
            let batch = self.read_all(position, store::READ_BATCH).await?;
            let Some(last) = batch.last() else { break };
            position = last.global_position;
            let full = batch.len() == store::READ_BATCH;
            for event in batch {
                if event.tenant_id == Some(tenant_id) && out.len() < limit {
                    out.push(event);
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    async fn stream_version(&self, stream_id: Uuid) -> Result<u64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT max(stream_version)::bigint FROM events WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_one(&self.inner.pool)
        .await?;
        Ok(version.unwrap_or(0) as u64)
    }

    fn appended(&self) -> watch::Receiver<i64> {
        self.inner.appended.subscribe()
    }
}
