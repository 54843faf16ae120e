//! The relay's checkpoint (`follower_checkpoints`, beside the log) and the
//! lock that makes one relay per database active.
//!
//! On PostgreSQL the active relay holds an advisory lock on a connection of
//! its own and writes its checkpoint on that connection, so a relay whose
//! session (and with it the lock) was lost writes nothing until it has the
//! lock again. SQLite is one process's embedded database: its store's
//! single writer connection serialises the relay with everything else.
//! Either way a checkpoint moves by compare-and-set on its old position.

use eventstore::AnyStore;
use sqlx::PgConnection;

use crate::RelayError;

/// The PostgreSQL advisory lock held by the one active relay of a database.
pub const LOCK_KEY: i64 = 0x466c_6174_5265_6c79; // "FlatRely"

const UPSERT_PG: &str = "INSERT INTO follower_checkpoints (name, position) VALUES ($1, $3) \
     ON CONFLICT (name) DO UPDATE SET position = $3, updated_at = now() \
     WHERE follower_checkpoints.position = $2";
const UPSERT_SQLITE: &str = "INSERT INTO follower_checkpoints (name, position) VALUES ($1, $3) \
     ON CONFLICT (name) DO UPDATE SET position = $3, \
     updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
     WHERE follower_checkpoints.position = $2";

/// The lock (PostgreSQL) and the checkpoint writes of one relay.
#[derive(Debug)]
pub struct Checkpoints {
    store: AnyStore,
    name: String,
    /// The advisory lock's key (one per kind of follower).
    lock_key: i64,
    /// PostgreSQL: the connection that holds the lock, if held.
    lock: Option<PgConnection>,
}

impl Checkpoints {
    /// The relay's checkpoint called `name` of the store's database.
    pub fn new(store: AnyStore, name: String) -> Self {
        Self::with_lock(store, name, LOCK_KEY)
    }

    /// The checkpoint called `name` of another follower of the log, whose
    /// one active instance per database holds the advisory lock `lock_key`.
    pub fn with_lock(store: AnyStore, name: String, lock_key: i64) -> Self {
        Self {
            store,
            name,
            lock_key,
            lock: None,
        }
    }

    /// Whether this relay may publish: on PostgreSQL it takes the advisory
    /// lock if it does not hold it (false: another relay does).
    pub async fn acquire(&mut self) -> Result<bool, RelayError> {
        let AnyStore::Postgres(pg) = &self.store else {
            return Ok(true);
        };
        if self.lock.is_some() {
            return Ok(true);
        }
        let mut fresh = pg.pool().acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.lock_key)
            .fetch_one(&mut fresh)
            .await?;
        if locked {
            self.lock = Some(fresh);
        } else {
            let _ = sqlx::Connection::close(fresh).await;
        }
        Ok(locked)
    }

    /// Whether the lock's connection still answers; a lost one is dropped
    /// and the lock has to be taken again.
    pub async fn still_locked(&mut self) -> bool {
        if !matches!(self.store, AnyStore::Postgres(_)) {
            return true;
        }
        let Some(conn) = &mut self.lock else {
            return false;
        };
        let alive = sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok();
        if !alive {
            tracing::warn!("relay: lost the lock's connection; taking it again");
            self.lock = None;
        }
        alive
    }

    /// Lets go of the lock (PostgreSQL), for another relay to take.
    pub async fn release(&mut self) {
        if let Some(mut conn) = self.lock.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.lock_key)
                .execute(&mut conn)
                .await;
            let _ = sqlx::Connection::close(conn).await;
        }
    }

    /// The position published up to (0: nothing yet).
    pub async fn load(&self) -> Result<i64, RelayError> {
        let sql = "SELECT position FROM follower_checkpoints WHERE name = $1";
        let at: Option<i64> = match &self.store {
            AnyStore::Postgres(pg) => {
                sqlx::query_scalar(sql)
                    .bind(&self.name)
                    .fetch_optional(pg.pool())
                    .await?
            }
            AnyStore::Sqlite(s) => {
                sqlx::query_scalar(sql)
                    .bind(&self.name)
                    .fetch_optional(s.readers())
                    .await?
            }
        };
        Ok(at.unwrap_or(0))
    }

    /// Moves the checkpoint from `from` to `to`; `CheckpointMoved` if it is
    /// no longer at `from`.
    pub async fn advance(&mut self, from: i64, to: i64) -> Result<(), RelayError> {
        let name = self.name.clone();
        let moved = match &self.store {
            AnyStore::Postgres(_) => {
                let Some(conn) = &mut self.lock else {
                    return Err(RelayError::LockHeld);
                };
                let done = sqlx::query(UPSERT_PG)
                    .bind(&name)
                    .bind(from)
                    .bind(to)
                    .execute(&mut *conn)
                    .await;
                match done {
                    Ok(done) => done.rows_affected(),
                    Err(e) => {
                        // The lock's session may be gone with it.
                        self.lock = None;
                        return Err(e.into());
                    }
                }
            }
            AnyStore::Sqlite(s) => s
                .with_writer(async |conn| {
                    sqlx::query(UPSERT_SQLITE)
                        .bind(&name)
                        .bind(from)
                        .bind(to)
                        .execute(&mut *conn)
                        .await
                })
                .await?
                .rows_affected(),
        };
        if moved == 1 {
            Ok(())
        } else {
            Err(RelayError::CheckpointMoved)
        }
    }
}
