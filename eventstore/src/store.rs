//! The storage trait every backend implements, and what all backends share.

use std::future::Future;

use tokio::sync::watch;
use uuid::Uuid;

use crate::codes::Codes;
use crate::error::StoreError;
use crate::event::{
    Actor, AppendRequest, AppendResult, AsOf, EventMetadata, ExpectedVersion, RecordedEvent,
};
use crate::hashing::{DigestInput, GENESIS, canonical, chain, truncate_to_micros};
use crate::heads::Heads;

/// How many events a stream or audit read fetches per round trip.
pub const READ_BATCH: usize = 1000;

/// The most events one append may carry (positions leave room for 65536 per
/// transaction on PostgreSQL).
pub const MAX_APPEND: usize = 65536;

/// What [`EventStore::read_all_of`] found.
#[derive(Debug, Clone, Default)]
pub struct Filtered {
    /// The events of the keys asked for, in position order.
    pub events: Vec<RecordedEvent>,
    /// The log was read through this position (the `after_position` asked
    /// for when nothing new was visible): continue after it.
    pub through: i64,
}

impl Filtered {
    /// Nothing of the keys asked for, the log read through `through`.
    pub(crate) fn nothing(through: i64) -> Self {
        Self {
            events: Vec::new(),
            through,
        }
    }
}

/// An append-only event store. Every backend passes the same conformance
/// suite (`eventstore/tests/store/`).
pub trait EventStore: Send + Sync {
    /// Appends a batch of events to one stream, all or nothing, after checking
    /// the expected version and the catalog. Appending events whose ids are
    /// already stored with the same content returns their original place and
    /// writes nothing.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send;

    /// Appends several requests, each to its own stream, in as few round
    /// trips as the backend allows (one statement when the heads are known).
    /// Each request succeeds or fails on its own, with the result it would
    /// have had appended alone; results come in request order.
    fn append_many(
        &self,
        requests: Vec<AppendRequest>,
    ) -> impl Future<Output = Vec<Result<AppendResult, StoreError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(requests.len());
            for request in requests {
                results.push(self.append(request).await);
            }
            results
        }
    }

    /// Up to `limit` events of a stream, from `from_version` on, in version order.
    fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Up to `limit` events of the whole store after `after_position`, in
    /// position order. Gap-safe: an event is returned only once no event at a
    /// lower position can still become visible, so a reader that continues
    /// from the last position it saw never misses one.
    fn read_all(
        &self,
        after_position: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Like [`EventStore::read_all`] over the next `scan` events of the log,
    /// keeping only those whose routing key is one of `routing_keys`; the
    /// answer says how far the log was read, so that a follower interested
    /// in a few kinds of events (the webhook dispatcher) continues from
    /// there without decoding the others. The backends filter by the
    /// events' type codes in the query.
    fn read_all_of(
        &self,
        after_position: i64,
        routing_keys: &[&str],
        scan: usize,
    ) -> impl Future<Output = Result<Filtered, StoreError>> + Send {
        async move {
            let batch = self.read_all(after_position, scan).await?;
            let through = batch.last().map_or(after_position, |e| e.global_position);
            Ok(Filtered {
                events: batch
                    .into_iter()
                    .filter(|e| routing_keys.contains(&e.routing_key.as_str()))
                    .collect(),
                through,
            })
        }
    }

    /// Like [`EventStore::read_all`], restricted to one tenant's events.
    /// There is no tenant index (it would cost every append an index entry
    /// for a read that only exports use): this reads the log in position
    /// order and keeps the tenant's events, so a whole tenant's export costs
    /// one pass over the log, like an audit.
    fn read_tenant(
        &self,
        tenant_id: Uuid,
        after_position: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The stream's current version; 0 if it does not exist.
    fn stream_version(
        &self,
        stream_id: Uuid,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// A wake-up signal that changes whenever events may have been appended
    /// (by this process, or by another one sharing the database). It carries
    /// the highest position known to be appended; it is a hint, never data.
    fn appended(&self) -> watch::Receiver<i64>;

    /// A stream's events up to a point in its history, for audits and for
    /// reconstructing an aggregate as it was.
    fn read_stream_as_of(
        &self,
        stream_id: Uuid,
        as_of: AsOf,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        async move {
            let mut out = Vec::new();
            let mut from = 1;
            loop {
                let batch = self.read_stream(stream_id, from, READ_BATCH).await?;
                let full = batch.len() == READ_BATCH;
                for event in batch {
                    if !as_of.includes(&event) {
                        return Ok(out);
                    }
                    from = event.stream_version + 1;
                    out.push(event);
                }
                if !full {
                    return Ok(out);
                }
            }
        }
    }
}

/// Checks an append against the catalog and builds the digest of each event.
pub(crate) fn prepare(
    request: &AppendRequest,
    recorded_at: chrono::DateTime<chrono::Utc>,
    codes: &Codes,
) -> Result<Prepared, StoreError> {
    if request.events.is_empty() {
        return Err(StoreError::EmptyAppend);
    }
    if request.events.len() > MAX_APPEND {
        return Err(StoreError::TooManyEvents(request.events.len()));
    }
    let recorded_at = truncate_to_micros(recorded_at);
    let catalog = contracts::catalog();
    let n = request.events.len();
    let mut prepared = Prepared {
        recorded_at,
        routing_keys: Vec::with_capacity(n),
        type_codes: Vec::with_capacity(n),
        payload_json: Vec::with_capacity(n),
        metadata_json: Vec::with_capacity(n),
        digests: Vec::with_capacity(n),
    };
    let time_text = crate::hashing::format_time(recorded_at);
    for event in &request.events {
        let routing_key = event.routing_key();
        let code = match catalog.entry(&routing_key) {
            Some(row) if row.stream_type == request.stream_type => codes.code_of(&routing_key),
            _ => None,
        };
        let Some(code) = code else {
            return Err(StoreError::NotInCatalog {
                routing_key,
                stream_type: request.stream_type.clone(),
            });
        };
        let payload_json = canonical(&event.payload);
        let metadata_json = event.metadata.canonical_json();
        let digest = DigestInput {
            event_id: event.event_id,
            stream_id: request.stream_id,
            stream_type: &request.stream_type,
            event_type: &event.event_type,
            routing_key: &routing_key,
            schema_version: event.schema_version,
            tenant_id: request.tenant_id,
            recorded_at,
            payload: &payload_json,
            metadata: &metadata_json,
        }
        .digest_at(&time_text);
        prepared.routing_keys.push(routing_key);
        prepared.type_codes.push(code);
        prepared.payload_json.push(payload_json);
        prepared.metadata_json.push(metadata_json);
        prepared.digests.push(digest);
    }
    Ok(prepared)
}

/// An append checked against the catalog, with its digests.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    pub routing_keys: Vec<String>,
    /// The routing keys' codes in `event_types`.
    pub type_codes: Vec<i16>,
    /// Payloads as canonical JSON text (what is hashed and what is stored).
    pub payload_json: Vec<String>,
    /// Metadata as canonical JSON text.
    pub metadata_json: Vec<String>,
    pub digests: Vec<[u8; 32]>,
}

/// Rows to insert on top of known heads, one column per vector: versions and
/// hash chain computed here, staleness settled by the database's unique key
/// on (stream, version).
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub event_ids: Vec<Uuid>,
    pub stream_ids: Vec<Uuid>,
    pub versions: Vec<i32>,
    pub type_codes: Vec<i16>,
    pub tenant_ids: Vec<Option<Uuid>>,
    pub payloads: Vec<String>,
    pub metadata: MetadataColumns,
    pub hashes: Vec<Vec<u8>>,
}

/// The typed metadata columns of rows to insert, one vector per column.
#[derive(Debug, Default)]
pub(crate) struct MetadataColumns {
    pub correlation_ids: Vec<Uuid>,
    pub causation_ids: Vec<Option<Uuid>>,
    pub actor_kinds: Vec<i16>,
    pub actor_ids: Vec<Option<Uuid>>,
    pub actor_components: Vec<Option<String>>,
    pub trace_ids: Vec<Option<String>>,
}

impl MetadataColumns {
    /// Adds one event's metadata.
    pub fn push(&mut self, metadata: &EventMetadata) {
        let (kind, id, component) = actor_columns(&metadata.actor);
        self.correlation_ids.push(metadata.correlation_id);
        self.causation_ids.push(metadata.causation_id);
        self.actor_kinds.push(kind);
        self.actor_ids.push(id);
        self.actor_components.push(component);
        self.trace_ids.push(metadata.trace_id.clone());
    }
}

/// `actor_kind` of a user, an API key, a node and the system.
const ACTOR_USER: i16 = 1;
const ACTOR_API_KEY: i16 = 2;
const ACTOR_NODE: i16 = 3;
const ACTOR_SYSTEM: i16 = 4;

/// An actor as its columns: kind, id, component.
pub(crate) fn actor_columns(actor: &Actor) -> (i16, Option<Uuid>, Option<String>) {
    match actor {
        Actor::User { id } => (ACTOR_USER, Some(*id), None),
        Actor::ApiKey { id } => (ACTOR_API_KEY, Some(*id), None),
        Actor::Node { id } => (ACTOR_NODE, Some(*id), None),
        Actor::System { component } => (ACTOR_SYSTEM, None, Some(component.clone())),
    }
}

/// A stored row's metadata columns, back as the envelope's metadata.
pub(crate) fn metadata_from_columns(
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    actor_kind: i16,
    actor_id: Option<Uuid>,
    actor_component: Option<String>,
    trace_id: Option<String>,
) -> Result<EventMetadata, StoreError> {
    let actor = match (actor_kind, actor_id, actor_component) {
        (ACTOR_USER, Some(id), None) => Actor::User { id },
        (ACTOR_API_KEY, Some(id), None) => Actor::ApiKey { id },
        (ACTOR_NODE, Some(id), None) => Actor::Node { id },
        (ACTOR_SYSTEM, None, Some(component)) => Actor::System { component },
        (kind, ..) => {
            return Err(StoreError::Corrupt(format!(
                "actor of kind {kind} with the wrong columns"
            )));
        }
    };
    Ok(EventMetadata {
        correlation_id,
        causation_id,
        actor,
        trace_id,
    })
}

/// Metadata as the JSON value [`RecordedEvent::metadata`] carries.
pub(crate) fn metadata_value(metadata: &EventMetadata) -> serde_json::Value {
    let actor = match &metadata.actor {
        Actor::User { id } => serde_json::json!({ "kind": "user", "id": id }),
        Actor::ApiKey { id } => serde_json::json!({ "kind": "api_key", "id": id }),
        Actor::Node { id } => serde_json::json!({ "kind": "node", "id": id }),
        Actor::System { component } => {
            serde_json::json!({ "kind": "system", "component": component })
        }
    };
    serde_json::json!({
        "actor": actor,
        "causation_id": metadata.causation_id,
        "correlation_id": metadata.correlation_id,
        "trace_id": metadata.trace_id,
    })
}

impl Rows {
    /// Adds one request's events on top of `base`/`prev`; returns the last hash.
    pub fn push(
        &mut self,
        request: &AppendRequest,
        prepared: &Prepared,
        base: u64,
        mut prev: [u8; 32],
    ) -> [u8; 32] {
        for (i, event) in request.events.iter().enumerate() {
            let version = base + 1 + i as u64;
            let hash = chain(&prev, version, &prepared.digests[i]);
            self.event_ids.push(event.event_id);
            self.stream_ids.push(request.stream_id);
            self.versions.push(version as i32);
            self.type_codes.push(prepared.type_codes[i]);
            self.tenant_ids.push(request.tenant_id);
            self.payloads.push(prepared.payload_json[i].clone());
            self.metadata.push(&event.metadata);
            self.hashes.push(hash.to_vec());
            prev = hash;
        }
        prev
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.event_ids.len()
    }
}

/// A request of a batch that goes into the one insert on known heads.
#[derive(Debug)]
pub(crate) struct OnKnownHead {
    /// The request's index in the batch.
    pub index: usize,
    /// The version the request builds on.
    pub base: u64,
    /// The hash of its last event.
    pub last_hash: [u8; 32],
}

/// Lays out the rows of the requests of a batch whose heads are known (a
/// new stream's head is the genesis), at most one request per stream; the
/// others (unknown heads, refused preparations, a second request to a
/// stream) are left to the backend's one-by-one path.
pub(crate) fn plan_on_known_heads(
    requests: &[AppendRequest],
    prepared: &[Result<Prepared, StoreError>],
    heads: &Heads,
) -> (Rows, Vec<OnKnownHead>) {
    let mut rows = Rows::default();
    let mut planned = Vec::new();
    let mut streams = std::collections::HashSet::new();
    for (index, (request, prepared)) in requests.iter().zip(prepared).enumerate() {
        let Ok(prepared) = prepared else { continue };
        let head = match request.expected {
            ExpectedVersion::NoStream => Some((0, GENESIS)),
            ExpectedVersion::Exact(v) => heads
                .get(request.stream_id)
                .filter(|h| h.version == v)
                .and_then(|h| h.base_for(request)),
            ExpectedVersion::Any => heads
                .get(request.stream_id)
                .and_then(|h| h.base_for(request)),
        };
        let Some((base, prev)) = head else { continue };
        if !streams.insert(request.stream_id) {
            continue;
        }
        let last_hash = rows.push(request, prepared, base, prev);
        planned.push(OnKnownHead {
            index,
            base,
            last_hash,
        });
    }
    (rows, planned)
}

/// After a refused append: if every event id is already stored with the same
/// content, the append is a retry of one that succeeded, and its original
/// place is the answer. `Ok(None)` means none of the ids is stored.
pub(crate) fn match_stored(
    request: &AppendRequest,
    prepared: &Prepared,
    stored: &[RecordedEvent],
) -> Result<Option<AppendResult>, StoreError> {
    if stored.is_empty() {
        return Ok(None);
    }
    let mut found = Vec::with_capacity(request.events.len());
    for (i, event) in request.events.iter().enumerate() {
        let Some(s) = stored.iter().find(|s| s.event_id == event.event_id) else {
            // Some ids stored, others not: not a retry of one append.
            return Err(StoreError::IdempotencyConflict {
                event_id: stored[0].event_id,
            });
        };
        let same = s.stream_id == request.stream_id
            && s.stream_type == request.stream_type
            && s.tenant_id == request.tenant_id
            && s.event_type == event.event_type
            && s.schema_version == event.schema_version
            && s.payload == event.payload
            && canonical(&s.metadata) == prepared.metadata_json[i];
        if !same {
            return Err(StoreError::IdempotencyConflict {
                event_id: event.event_id,
            });
        }
        found.push(s);
    }
    let versions = found.iter().map(|s| s.stream_version);
    let positions = found.iter().map(|s| s.global_position);
    Ok(Some(AppendResult {
        first_version: versions.clone().min().unwrap_or_default(),
        last_version: versions.max().unwrap_or_default(),
        first_position: positions.clone().min().unwrap_or_default(),
        last_position: positions.max().unwrap_or_default(),
        already_stored: true,
    }))
}

/// The conflict error for a refused expected version.
pub(crate) fn wrong_version(request: &AppendRequest, actual: u64) -> StoreError {
    StoreError::WrongExpectedVersion {
        stream_id: request.stream_id,
        expected: request.expected,
        actual,
    }
}

/// Whether a stream at `head` satisfies the expectation.
pub(crate) fn expectation_holds(expected: ExpectedVersion, head: u64) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => head == 0,
        ExpectedVersion::Exact(v) => head == v,
    }
}

/// The (stream, version) of each event's predecessor that `events` itself
/// does not hold (a version 1 has none): what a read must look up to give
/// every event its `prev_hash`, which is not stored (it is the previous
/// event's `hash`).
pub(crate) fn predecessors_to_read(events: &[RecordedEvent]) -> Vec<(Uuid, u64)> {
    let held: std::collections::HashSet<(Uuid, u64)> = events
        .iter()
        .map(|e| (e.stream_id, e.stream_version))
        .collect();
    let mut out: Vec<(Uuid, u64)> = events
        .iter()
        .filter(|e| e.stream_version > 1)
        .map(|e| (e.stream_id, e.stream_version - 1))
        .filter(|k| !held.contains(k))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Sets each event's `prev_hash`: the genesis for version 1, else the hash
/// of the stream's previous event, from `events` or from `read` (the hashes
/// of [`predecessors_to_read`]). A predecessor that is not stored (a gap,
/// which an audit reports as such) leaves the genesis.
pub(crate) fn link_predecessors(
    events: &mut [RecordedEvent],
    read: &std::collections::HashMap<(Uuid, u64), [u8; 32]>,
) {
    let mut known: std::collections::HashMap<(Uuid, u64), [u8; 32]> = events
        .iter()
        .map(|e| ((e.stream_id, e.stream_version), e.hash))
        .collect();
    known.extend(read.iter().map(|(k, v)| (*k, *v)));
    for event in events.iter_mut() {
        event.prev_hash = match event.stream_version {
            0 | 1 => GENESIS,
            v => known
                .get(&(event.stream_id, v - 1))
                .copied()
                .unwrap_or(GENESIS),
        };
    }
}

/// Converts a stored hash column.
pub(crate) fn hash32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}
