//! The runner: follows the log from each projection's checkpoint and writes
//! each batch's rows with the checkpoints in one transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use eventstore::{AnyStore, EventStore};
use sqlx::PgConnection;
use tokio::sync::watch;

use crate::db::{self, Checkpoint, Plan, Reader};
use crate::error::ProjectionError;
use crate::event::{Ev, Needs};
use crate::files::Files;
use crate::nodes::Nodes;
use crate::renders::Renders;
use crate::table::Table;

/// Every projection, by name.
pub const PROJECTIONS: [&str; 3] = [Renders::NAME, Nodes::NAME, Files::NAME];

/// The tables a projection writes.
pub fn tables_of(name: &str) -> Result<(&'static str, Vec<Table>), ProjectionError> {
    match name {
        "renders" => Ok((Renders::NAME, Renders::tables())),
        "nodes" => Ok((Nodes::NAME, Nodes::tables())),
        "files" => Ok((Files::NAME, Files::tables())),
        other => Err(ProjectionError::UnknownProjection(other.to_string())),
    }
}

/// The PostgreSQL advisory lock held by the one runner of a database.
pub const LOCK_KEY: i64 = 0x466c_6174_5072_6f6a; // "FlatProj"

/// How the runner reads and caches.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Events read per batch (one transaction each).
    pub batch: usize,
    /// Rows a projection keeps cached between batches before it empties its
    /// cache (memory stays bounded; misses are read back).
    pub cache_rows: usize,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch: 5000,
            cache_rows: 200_000,
        }
    }
}

/// Where the runner writes.
#[derive(Debug)]
enum Writer {
    /// A connection of its own holding the advisory lock: every batch is
    /// written on it, so a runner whose connection (and lock) was lost
    /// writes nothing until it has the lock again.
    Pg(Option<PgConnection>),
    /// The store's writer connection.
    Sqlite,
}

/// Follows the log into every read model. One per process; on PostgreSQL
/// only the holder of [`LOCK_KEY`] writes.
#[derive(Debug)]
pub struct Runner {
    store: AnyStore,
    reader: Reader,
    writer: Writer,
    options: RunnerOptions,
    renders: Renders,
    nodes: Nodes,
    files: Files,
    /// The checkpoints as last written by this runner; `None` when they
    /// must be read again (start, after a failed batch, a new lock).
    checkpoints: Option<BTreeMap<&'static str, i64>>,
    fail_next: bool,
    /// The next batch, being read while this one is written: (the position
    /// it reads after, the read).
    ahead: Option<(i64, ReadAhead)>,
}

type ReadAhead =
    tokio::task::JoinHandle<Result<Vec<eventstore::RecordedEvent>, eventstore::StoreError>>;

impl Runner {
    /// A runner over the store's database.
    pub fn new(store: AnyStore, options: RunnerOptions) -> Self {
        let writer = match &store {
            AnyStore::Postgres(_) => Writer::Pg(None),
            AnyStore::Sqlite(_) => Writer::Sqlite,
        };
        Self {
            reader: Reader::of(&store),
            store,
            writer,
            options,
            renders: Renders::default(),
            nodes: Nodes::default(),
            files: Files::default(),
            checkpoints: None,
            fail_next: false,
            ahead: None,
        }
    }

    /// Makes the next batch fail after writing its rows and before its
    /// commit, as a crash there would (tests).
    pub fn fail_next_commit(&mut self) {
        self.fail_next = true;
    }

    /// Whether this runner may write: on PostgreSQL it takes the advisory
    /// lock if it does not hold it (false: another instance does).
    pub async fn acquire(&mut self) -> Result<bool, ProjectionError> {
        let Writer::Pg(conn) = &mut self.writer else {
            return Ok(true);
        };
        if conn.is_some() {
            return Ok(true);
        }
        let AnyStore::Postgres(pg) = &self.store else {
            unreachable!("a PostgreSQL writer has a PostgreSQL store")
        };
        let mut fresh = pg.pool().acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut fresh)
            .await?;
        if !locked {
            return Ok(false);
        }
        *conn = Some(fresh);
        // Whoever held the lock before may have moved on.
        self.checkpoints = None;
        Ok(true)
    }

    /// Lets go of the lock (PostgreSQL), for another instance to take.
    pub async fn release(&mut self) {
        if let Writer::Pg(conn) = &mut self.writer
            && let Some(mut conn) = conn.take()
        {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(LOCK_KEY)
                .execute(&mut conn)
                .await;
            let _ = sqlx::Connection::close(conn).await;
        }
        self.checkpoints = None;
    }

    /// Whether the lock's connection still answers (PostgreSQL); a lost
    /// one is dropped, and the lock has to be taken again.
    async fn still_locked(&mut self) -> bool {
        match &mut self.writer {
            Writer::Sqlite => true,
            Writer::Pg(None) => false,
            Writer::Pg(Some(conn)) => {
                let alive = sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok();
                if !alive {
                    tracing::warn!("projections: lost the lock's connection; taking it again");
                    self.writer = Writer::Pg(None);
                }
                alive
            }
        }
    }

    async fn load_checkpoints(&mut self) -> Result<BTreeMap<&'static str, i64>, ProjectionError> {
        if let Some(cps) = &self.checkpoints {
            return Ok(cps.clone());
        }
        let stored = self.reader.checkpoints().await?;
        let mut cps = BTreeMap::new();
        for name in PROJECTIONS {
            let at = stored.get(name).copied().unwrap_or(0);
            cps.insert(name, at);
        }
        // A checkpoint at 0 means empty tables (the migration and every
        // reset leave them so): the cache then knows every row.
        self.renders.forget(cps[Renders::NAME] == 0);
        self.nodes.forget(cps[Nodes::NAME] == 0);
        self.files.forget(cps[Files::NAME] == 0);
        self.checkpoints = Some(cps.clone());
        Ok(cps)
    }

    /// Applies one batch; returns how many events it read (0: caught up
    /// with what is readable now).
    pub async fn step(&mut self) -> Result<usize, ProjectionError> {
        if !self.acquire().await? {
            return Err(ProjectionError::LockHeld);
        }
        let result = self.try_step().await;
        if let Err(e) = &result {
            // Nothing of the batch was committed: forget what it changed.
            self.checkpoints = None;
            if let Some((_, read)) = self.ahead.take() {
                read.abort();
            }
            if matches!(e, ProjectionError::Database(_)) {
                self.still_locked().await;
            }
        }
        result
    }

    async fn try_step(&mut self) -> Result<usize, ProjectionError> {
        let cps = self.load_checkpoints().await?;
        let from = cps.values().copied().min().unwrap_or(0);
        let batch = match self.ahead.take() {
            Some((after, read)) if after == from => read.await.map_err(|e| {
                ProjectionError::Store(eventstore::StoreError::Corrupt(e.to_string()))
            })??,
            Some((_, read)) => {
                read.abort();
                self.store.read_all(from, self.options.batch).await?
            }
            None => self.store.read_all(from, self.options.batch).await?,
        };
        let Some(last) = batch.last() else {
            return Ok(0);
        };
        let (to, recorded_at) = (last.global_position, crate::event::time(last.recorded_at));
        let events = batch
            .iter()
            .map(Ev::decode)
            .collect::<Result<Vec<_>, _>>()?;
        let after = |name: &str| {
            let at = cps[name];
            events.iter().filter(move |e| e.position > at)
        };
        let mut needs = (Needs::default(), Needs::default(), Needs::default());
        for ev in after(Renders::NAME) {
            Renders::needs(ev, &mut needs.0);
        }
        for ev in after(Nodes::NAME) {
            Nodes::needs(ev, &mut needs.1);
        }
        for ev in after(Files::NAME) {
            Files::needs(ev, &mut needs.2);
        }
        self.renders.prefetch(&self.reader, &needs.0).await?;
        self.nodes.prefetch(&self.reader, &needs.1).await?;
        self.files.prefetch(&self.reader, &needs.2).await?;
        for ev in after(Renders::NAME) {
            self.renders.apply(ev);
        }
        for ev in after(Nodes::NAME) {
            self.nodes.apply(ev);
        }
        for ev in after(Files::NAME) {
            self.files.apply(ev);
        }
        let mut plan = Plan {
            fail: std::mem::take(&mut self.fail_next),
            ..Plan::default()
        };
        for (name, at) in &cps {
            if *at < to {
                plan.checkpoints.push(Checkpoint {
                    name,
                    from: *at,
                    to,
                    recorded_at: Some(recorded_at.clone()),
                });
            }
        }
        // A full batch: read the next one while this one is written (the
        // read does not depend on the write; gap safety is the store's).
        if batch.len() == self.options.batch {
            let (store, limit) = (self.store.clone(), self.options.batch);
            self.ahead = Some((
                to,
                tokio::spawn(async move { store.read_all(to, limit).await }),
            ));
        }
        plan.rows.extend(self.renders.dirty());
        plan.rows.extend(self.nodes.dirty());
        plan.rows.extend(self.files.dirty());
        match &mut self.writer {
            Writer::Pg(Some(conn)) => db::write_pg(conn, &plan).await?,
            Writer::Pg(None) => return Err(ProjectionError::LockHeld),
            Writer::Sqlite => {
                let AnyStore::Sqlite(s) = &self.store else {
                    unreachable!("a SQLite writer has a SQLite store")
                };
                s.with_writer(async |conn| db::write_sqlite(conn, &plan).await)
                    .await?
            }
        }
        let cap = self.options.cache_rows;
        self.renders.committed(cap);
        self.nodes.committed(cap);
        self.files.committed(cap);
        self.checkpoints = Some(
            cps.into_iter()
                .map(|(name, at)| (name, at.max(to)))
                .collect(),
        );
        Ok(batch.len())
    }

    /// Applies batches until every projection has reached the store's head
    /// as it was when called; `progress` hears (events applied, checkpoint,
    /// head) after each batch.
    pub async fn catch_up(
        &mut self,
        mut progress: impl FnMut(u64, i64, i64),
    ) -> Result<u64, ProjectionError> {
        let head = self.reader.head().await?;
        let mut applied = 0u64;
        loop {
            let cps = self.load_checkpoints().await?;
            let at = cps.values().copied().min().unwrap_or(0);
            if at >= head {
                return Ok(applied);
            }
            let n = self.step().await?;
            applied += n as u64;
            progress(applied, at, head);
            if n == 0 {
                // PostgreSQL holds back events while an older transaction
                // of the cluster is open: wait for it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Empties the named projections and replays the log into them.
    pub async fn rebuild(
        &mut self,
        names: &[&str],
        progress: impl FnMut(u64, i64, i64),
    ) -> Result<u64, ProjectionError> {
        if !self.acquire().await? {
            return Err(ProjectionError::LockHeld);
        }
        for name in names {
            reset(&self.store, name).await?;
        }
        self.checkpoints = None;
        self.catch_up(progress).await
    }

    /// Follows the log until `stop` turns true: batches as events arrive,
    /// the lock taken again after a lost connection, errors retried with
    /// backoff.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut appended = self.store.appended();
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            let wait = match self.step().await {
                Ok(0) => {
                    backoff = Duration::from_millis(100);
                    if !self.still_locked().await {
                        continue;
                    }
                    Duration::from_secs(1)
                }
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Err(ProjectionError::LockHeld) => Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, "projections: batch failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    backoff
                }
            };
            tokio::select! {
                _ = appended.changed() => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Let go of the lock now (a graceful stop), not when the
        // connection happens to close.
        self.release().await;
    }
}

/// Empties a projection's tables and sets its checkpoint to 0 in one
/// transaction; a runner (here or in another instance) then replays it.
pub async fn reset(store: &AnyStore, name: &str) -> Result<(), ProjectionError> {
    let (name, tables) = tables_of(name)?;
    db::reset(store, name, &tables).await
}

/// How far a projection is behind the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    /// The projection.
    pub name: String,
    /// Its checkpoint.
    pub position: i64,
    /// The store's last position.
    pub head: i64,
    /// Events stored after the checkpoint (counted up to 1,000,000).
    pub events_behind: i64,
    /// Seconds since the oldest event not yet applied was recorded (0 when
    /// none is waiting).
    pub seconds_behind: f64,
}

/// Every projection's lag (for the metrics endpoint and the CLI).
pub async fn lag(store: &AnyStore) -> Result<Vec<Lag>, ProjectionError> {
    let reader = Reader::of(store);
    let cps = reader.checkpoints().await?;
    let head = reader.head().await?;
    let mut out = Vec::new();
    for name in PROJECTIONS {
        let position = cps.get(name).copied().unwrap_or(0);
        let events_behind = reader.count_after(position, 1_000_000).await?;
        let seconds_behind = match store.read_all(position, 1).await?.first() {
            Some(e) => {
                (chrono::Utc::now() - e.recorded_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1e3
            }
            None => 0.0,
        };
        out.push(Lag {
            name: name.to_string(),
            position,
            head,
            events_behind,
            seconds_behind,
        });
    }
    Ok(out)
}

/// How many events the store holds (the work of a full rebuild).
pub async fn count_events(store: &AnyStore) -> Result<u64, ProjectionError> {
    Ok(Reader::of(store).count_after(0, i64::MAX).await?.max(0) as u64)
}

/// A digest of every read-model table (table name → SHA-256 of its rows
/// in key order): equal digests mean equal read models.
pub async fn digest(store: &AnyStore) -> Result<BTreeMap<String, String>, ProjectionError> {
    let reader = Reader::of(store);
    let mut out = BTreeMap::new();
    for name in PROJECTIONS {
        for table in tables_of(name)?.1 {
            out.insert(table.name.to_string(), reader.digest(&table).await?);
        }
    }
    Ok(out)
}
