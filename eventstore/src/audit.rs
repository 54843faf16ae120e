//! Auditing the whole store: every stream's version sequence and hash chain,
//! every event's catalog row and payload schema, in one pass over the log.

use std::collections::HashMap;
use std::io::Write;

use uuid::Uuid;

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::hashing::{ChainError, GENESIS, chain, digest_of};
use crate::store::{EventStore, READ_BATCH};

/// Something wrong with the stored history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditProblem {
    /// A stream's versions or hash chain are broken.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// An event whose routing key has no catalog row for its stream type.
    #[error(
        "position {position}: `{routing_key}` is not in the catalog for stream type `{stream_type}`"
    )]
    NotInCatalog {
        /// Where.
        position: i64,
        /// Its routing key.
        routing_key: String,
        /// Its stream type.
        stream_type: String,
    },
    /// A payload that does not validate against its schema.
    #[error("position {position}: payload of `{routing_key}` does not match its schema: {message}")]
    Schema {
        /// Where.
        position: i64,
        /// Its routing key.
        routing_key: String,
        /// What the validator said.
        message: String,
    },
}

/// The outcome of [`verify_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Events read.
    pub events: u64,
    /// Distinct streams seen.
    pub streams: u64,
    /// The position of the last event read.
    pub last_position: i64,
    /// Everything found wrong (empty: the history verifies).
    pub problems: Vec<AuditProblem>,
}

impl AuditReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads the whole store once and checks every stream's versions and hash
/// chain, every event's catalog row, and every payload with `validate`
/// (routing key, payload → error text). `progress` is told the number of
/// events read after each batch.
pub async fn verify_all<S: EventStore>(
    store: &S,
    validate: impl Fn(&str, &serde_json::Value) -> Result<(), String>,
    mut progress: impl FnMut(u64),
) -> Result<AuditReport, StoreError> {
    let catalog = contracts::catalog();
    let mut heads: HashMap<Uuid, (u64, [u8; 32])> = HashMap::new();
    let mut report = AuditReport::default();
    loop {
        let batch = store.read_all(report.last_position, READ_BATCH).await?;
        if batch.is_empty() {
            break;
        }
        for event in &batch {
            report.events += 1;
            report.last_position = event.global_position;
            match catalog.entry(&event.routing_key) {
                Some(row)
                    if row.stream_type == event.stream_type
                        && row.event_type == event.event_type =>
                {
                    if let Err(message) = validate(&event.routing_key, &event.payload) {
                        report.problems.push(AuditProblem::Schema {
                            position: event.global_position,
                            routing_key: event.routing_key.clone(),
                            message,
                        });
                    }
                }
                _ => report.problems.push(AuditProblem::NotInCatalog {
                    position: event.global_position,
                    routing_key: event.routing_key.clone(),
                    stream_type: event.stream_type.clone(),
                }),
            }
            let (version, prev) = heads.get(&event.stream_id).copied().unwrap_or((0, GENESIS));
            if let Err(problem) = check_link(event, version, prev) {
                report.problems.push(problem.into());
            }
            heads.insert(event.stream_id, (event.stream_version, event.hash));
        }
        progress(report.events);
    }
    report.streams = heads.len() as u64;
    Ok(report)
}

fn check_link(event: &RecordedEvent, version: u64, prev: [u8; 32]) -> Result<(), ChainError> {
    let stream_id = event.stream_id;
    if event.stream_version != version + 1 {
        return Err(ChainError::VersionGap {
            stream_id,
            expected: version + 1,
            found: event.stream_version,
        });
    }
    if event.prev_hash != prev {
        return Err(ChainError::BrokenLink {
            stream_id,
            version: event.stream_version,
        });
    }
    if chain(&prev, event.stream_version, &digest_of(event)) != event.hash {
        return Err(ChainError::Tampered {
            stream_id,
            version: event.stream_version,
        });
    }
    Ok(())
}

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportScope {
    /// Every event.
    All,
    /// One tenant's events.
    Tenant(Uuid),
    /// One stream's events.
    Stream(Uuid),
}

/// Writes history as JSON Lines, one envelope per line, in position order
/// (stream order for one stream). Returns the number of events written.
pub async fn export_jsonl<S: EventStore>(
    store: &S,
    scope: ExportScope,
    out: &mut impl Write,
) -> Result<u64, StoreError> {
    let mut written = 0;
    let mut position = 0;
    let mut version = 1;
    loop {
        let batch = match scope {
            ExportScope::All => store.read_all(position, READ_BATCH).await?,
            ExportScope::Tenant(t) => store.read_tenant(t, position, READ_BATCH).await?,
            ExportScope::Stream(s) => store.read_stream(s, version, READ_BATCH).await?,
        };
        let Some(last) = batch.last() else { break };
        position = last.global_position;
        version = last.stream_version + 1;
        for event in &batch {
            let line = envelope_json(event);
            writeln!(out, "{line}").map_err(|e| StoreError::Database(e.into()))?;
            written += 1;
        }
    }
    Ok(written)
}

/// The envelope of SPEC §1 as JSON.
pub fn envelope_json(event: &RecordedEvent) -> serde_json::Value {
    serde_json::json!({
        "event_id": event.event_id,
        "stream_id": event.stream_id,
        "stream_type": event.stream_type,
        "stream_version": event.stream_version,
        "global_position": event.global_position,
        "event_type": event.event_type,
        "routing_key": event.routing_key,
        "schema_version": event.schema_version,
        "tenant_id": event.tenant_id,
        "payload": event.payload,
        "metadata": event.metadata,
        "recorded_at": crate::hashing::format_time(event.recorded_at),
        "prev_hash": hex::encode(event.prev_hash),
        "hash": hex::encode(event.hash),
    })
}
