//! Snapshots of the scheduler's view beside the log, so that a start
//! replays only the events after the last snapshot instead of the whole
//! history.
//!
//! A snapshot is written periodically ([`Orchestrator::spawn_snapshotter`])
//! and when `serve` stops, like a projection's checkpoint: the view's
//! content (see `state::snapshot`) with the global position it covers and
//! the id and hash-chain link of the event at that position. At start
//! ([`Orchestrator::open`]) a snapshot is used only if its bytes match the
//! digest written with them, its format is this binary's, and the log
//! still holds that event at that position; anything else (none, corrupted,
//! of another database, of another format) only makes the start slower: the
//! view is rebuilt from position 0, as it would be without snapshots. The
//! events after the snapshot are then applied as any catch-up applies them
//! (each stream's version in the view says what it holds already), so a
//! view started from a snapshot equals one rebuilt from the log; the
//! digest ([`Orchestrator::view_digest`]) is how tests compare them.

use std::time::Duration;

use eventstore::{EventStore, SnapshotRead, ViewSnapshot};

use crate::state::{SNAPSHOT_FORMAT, SnapshotBody};
use crate::{Orchestrator, OrchestratorError};

/// The snapshot's name beside the log.
pub const SNAPSHOT_NAME: &str = "scheduler";

/// How the view was built at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartReport {
    /// The position of the snapshot the view started from, if it used one.
    pub snapshot_position: Option<i64>,
    /// Why a snapshot that was there was not used.
    pub snapshot_ignored: Option<String>,
    /// Events read from the log after the snapshot (or from position 0).
    pub replayed: usize,
}

impl Orchestrator {
    /// Loads a verified snapshot into the (empty) view. Returns its
    /// position, or why a snapshot was not used.
    pub(crate) async fn restore_snapshot(&self) -> (Option<i64>, Option<String>) {
        let snapshot = match self.inner.store.load_view_snapshot(SNAPSHOT_NAME).await {
            Ok(SnapshotRead::Missing) => return (None, None),
            Ok(SnapshotRead::Rejected(why)) => return (None, Some(why)),
            Ok(SnapshotRead::Verified(s)) if s.format != SNAPSHOT_FORMAT => {
                return (
                    None,
                    Some(format!("format {} is not this binary's", s.format)),
                );
            }
            Ok(SnapshotRead::Verified(s)) => s,
            Err(e) => return (None, Some(format!("reading it failed: {e}"))),
        };
        let position = snapshot.position;
        let decoded = tokio::task::spawn_blocking(move || SnapshotBody::decode(&snapshot.body))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let body = match decoded {
            Ok(body) if body.position() == position => body,
            Ok(body) => {
                return (
                    None,
                    Some(format!(
                        "it covers position {} but is filed at {position}",
                        body.position()
                    )),
                );
            }
            Err(e) => return (None, Some(format!("it does not decode: {e}"))),
        };
        self.inner.state.lock().await.restore(body);
        (Some(position), None)
    }

    /// Writes a snapshot of the view as it is now. Returns the position it
    /// covers, or `None` when there is nothing to snapshot (an empty log,
    /// a view missing streams it must reload, or a newer snapshot there
    /// already).
    pub async fn write_snapshot(&self) -> Result<Option<i64>, OrchestratorError> {
        let body = {
            let mut st = self.inner.state.lock().await;
            if st.position < 1 || !st.dropped.is_empty() {
                return Ok(None);
            }
            st.retire_settled();
            st.to_body()
        };
        let position = body.position();
        let at = self.inner.store.read_all(position - 1, 1).await?;
        let Some(event) = at.into_iter().find(|e| e.global_position == position) else {
            return Ok(None);
        };
        let body = tokio::task::spawn_blocking(move || body.encode())
            .await
            .map_err(|e| OrchestratorError::Storage(e.to_string()))?
            .map_err(|e| OrchestratorError::Storage(e.to_string()))?;
        let bytes = body.len();
        let snapshot = ViewSnapshot {
            format: SNAPSHOT_FORMAT,
            position,
            event_id: event.event_id,
            event_hash: event.hash,
            body,
        };
        if !self
            .inner
            .store
            .save_view_snapshot(SNAPSHOT_NAME, &snapshot)
            .await?
        {
            return Ok(None);
        }
        tracing::info!(position, bytes, "wrote a snapshot of the scheduler's view");
        Ok(Some(position))
    }

    /// Writes a snapshot every `every` once the view has read at least
    /// `min_events` positions past the last one, until the returned task is
    /// aborted.
    pub fn spawn_snapshotter(
        &self,
        every: Duration,
        min_events: i64,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        eventstore::task::spawn_named("orchestrator-snapshots", async move {
            let mut last = this.start_report().snapshot_position.unwrap_or(0);
            loop {
                tokio::time::sleep(every).await;
                if this.position().await - last < min_events {
                    continue;
                }
                match this.write_snapshot().await {
                    Ok(Some(position)) => last = position,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "writing a snapshot of the view failed"),
                }
            }
        })
    }

    /// How the view was built at start.
    pub fn start_report(&self) -> StartReport {
        self.inner.start.get().cloned().unwrap_or_default()
    }

    /// A digest (lower-case hex SHA-256) of what the view holds from the
    /// log: two views that hold the same have the same digest.
    pub async fn view_digest(&self) -> String {
        let digest = self.inner.state.lock().await.digest();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What the view holds from the log, as the JSON a snapshot holds (for
    /// showing how two views differ).
    pub async fn view_content(&self) -> serde_json::Value {
        let body = self.inner.state.lock().await.to_body();
        serde_json::to_value(&body).unwrap_or_default()
    }
}
