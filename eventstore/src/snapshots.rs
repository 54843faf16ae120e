//! Snapshots of a follower's in-memory view beside the log (never in it):
//! the bytes of a view with the global position they cover, so that a
//! start replays only the events after it. What the bytes mean is the
//! follower's business (the scheduler's view: `orchestrator`); the store
//! keeps them with the id and hash-chain link of the event at their
//! position and checks, when one is read back, that its bytes are the ones
//! written and that the log still holds that event at that position. A
//! snapshot that fails a check is reported as such, never handed out.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::any::AnyStore;
use crate::error::StoreError;
use crate::store::EventStore;

/// A view's snapshot as written and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSnapshot {
    /// The follower's format of `body` (a follower ignores formats it does
    /// not read).
    pub format: u32,
    /// The global position of the last event the view holds.
    pub position: i64,
    /// That event's id.
    pub event_id: Uuid,
    /// That event's link in its stream's hash chain.
    pub event_hash: [u8; 32],
    /// The view.
    pub body: Vec<u8>,
}

/// What reading a snapshot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRead {
    /// There is none under that name.
    Missing,
    /// One whose bytes and position check out.
    Verified(ViewSnapshot),
    /// One that must not be used, and why.
    Rejected(String),
}

/// The SQL that keeps the newest snapshot (a slower writer's older view
/// never replaces a newer one).
const UPSERT: &str = "INSERT INTO view_snapshots \
     (name, format, position, event_id, event_hash, body, body_sha256) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (name) DO UPDATE SET format = excluded.format, \
     position = excluded.position, event_id = excluded.event_id, \
     event_hash = excluded.event_hash, body = excluded.body, \
     body_sha256 = excluded.body_sha256, written_at = excluded.written_at \
     WHERE view_snapshots.position <= excluded.position";

const SELECT: &str = "SELECT format, position, event_id, event_hash, body, body_sha256 \
     FROM view_snapshots WHERE name = $1";

type Row = (i64, i64, Uuid, Vec<u8>, Vec<u8>, Vec<u8>);

impl AnyStore {
    /// Writes `snapshot` under `name` unless a snapshot at a later position
    /// is there already. Returns whether it was written.
    pub async fn save_view_snapshot(
        &self,
        name: &str,
        snapshot: &ViewSnapshot,
    ) -> Result<bool, StoreError> {
        let sha: [u8; 32] = Sha256::digest(&snapshot.body).into();
        // One statement for both backends (a query is typed by its backend).
        macro_rules! upsert {
            () => {
                sqlx::query(UPSERT)
                    .bind(name)
                    .bind(i64::from(snapshot.format))
                    .bind(snapshot.position)
                    .bind(snapshot.event_id)
                    .bind(snapshot.event_hash.to_vec())
                    .bind(snapshot.body.as_slice())
                    .bind(sha.to_vec())
            };
        }
        let written = match self {
            AnyStore::Postgres(s) => upsert!().execute(s.pool()).await?.rows_affected(),
            AnyStore::Sqlite(s) => s
                .with_writer(async |conn| upsert!().execute(conn).await)
                .await?
                .rows_affected(),
        };
        Ok(written > 0)
    }

    /// Reads the snapshot under `name` and checks it: its bytes against the
    /// digest written with them, and its position against the log (the
    /// event there must have the id and hash recorded with the snapshot:
    /// a snapshot of another database, of a log that was restored from an
    /// older backup or of a position past the log's end is rejected).
    pub async fn load_view_snapshot(&self, name: &str) -> Result<SnapshotRead, StoreError> {
        let row: Option<Row> = match self {
            AnyStore::Postgres(s) => {
                sqlx::query_as(SELECT)
                    .bind(name)
                    .fetch_optional(s.pool())
                    .await?
            }
            AnyStore::Sqlite(s) => {
                sqlx::query_as(SELECT)
                    .bind(name)
                    .fetch_optional(s.readers())
                    .await?
            }
        };
        let Some((format, position, event_id, event_hash, body, body_sha256)) = row else {
            return Ok(SnapshotRead::Missing);
        };
        let sha: [u8; 32] = Sha256::digest(&body).into();
        if sha.as_slice() != body_sha256.as_slice() {
            return Ok(SnapshotRead::Rejected(
                "its bytes do not match their SHA-256 (corrupted at rest)".into(),
            ));
        }
        let Ok(event_hash) = <[u8; 32]>::try_from(event_hash.as_slice()) else {
            return Ok(SnapshotRead::Rejected(
                "its event hash is not 32 bytes".into(),
            ));
        };
        let Ok(format) = u32::try_from(format) else {
            return Ok(SnapshotRead::Rejected(format!("unknown format {format}")));
        };
        if position < 1 {
            return Ok(SnapshotRead::Rejected(format!("position {position}")));
        }
        let at = self.read_all(position - 1, 1).await?;
        match at.first() {
            Some(e) if e.global_position == position => {
                if e.event_id != event_id || e.hash != event_hash {
                    return Ok(SnapshotRead::Rejected(format!(
                        "the log's event at position {position} is not the one the snapshot covers"
                    )));
                }
            }
            _ => {
                return Ok(SnapshotRead::Rejected(format!(
                    "the log has no event at position {position}"
                )));
            }
        }
        Ok(SnapshotRead::Verified(ViewSnapshot {
            format,
            position,
            event_id,
            event_hash,
            body,
        }))
    }

    /// Deletes the snapshot under `name` (the next start rebuilds from the
    /// log). Returns whether there was one.
    pub async fn delete_view_snapshot(&self, name: &str) -> Result<bool, StoreError> {
        const DELETE: &str = "DELETE FROM view_snapshots WHERE name = $1";
        let deleted = match self {
            AnyStore::Postgres(s) => sqlx::query(DELETE)
                .bind(name)
                .execute(s.pool())
                .await?
                .rows_affected(),
            AnyStore::Sqlite(s) => s
                .with_writer(async |conn| sqlx::query(DELETE).bind(name).execute(conn).await)
                .await?
                .rows_affected(),
        };
        Ok(deleted > 0)
    }
}
