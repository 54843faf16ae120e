//! The event envelope: what a writer hands in and what a reader gets back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who caused an event (SPEC §1 `metadata.actor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A signed-in user.
    User {
        /// The user's id.
        id: Uuid,
    },
    /// A reseller's API key.
    ApiKey {
        /// The key's id (never the key).
        id: Uuid,
    },
    /// A render node.
    Node {
        /// The node's id.
        id: Uuid,
    },
    /// FlatRender itself (scheduler, lease expiry, ...).
    System {
        /// The component, e.g. `orchestrator`.
        component: String,
    },
}

/// Correlation and causation of an event (SPEC §1 `metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Shared by every event of one piece of work (e.g. one API request).
    pub correlation_id: Uuid,
    /// The event or command that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// Who caused it.
    pub actor: Actor,
    /// The trace id of the request, if it had one.
    pub trace_id: Option<String>,
}

impl EventMetadata {
    /// The canonical JSON of the metadata (keys sorted, no white space):
    /// the same text as `hashing::canonical(&serde_json::to_value(self))`,
    /// written directly because it is on every append's path.
    pub fn canonical_json(&self) -> String {
        let mut out = String::with_capacity(192);
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let mut id = |out: &mut String, id: Uuid| {
            out.push('"');
            out.push_str(id.hyphenated().encode_lower(&mut buf));
            out.push('"');
        };
        let text = |out: &mut String, s: &str| {
            // A string needs escaping only for quotes, backslashes and controls.
            if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
                out.push('"');
                out.push_str(s);
                out.push('"');
            } else {
                out.push_str(&serde_json::to_string(s).unwrap_or_default());
            }
        };
        out.push_str("{\"actor\":{");
        match &self.actor {
            Actor::User { id: actor } | Actor::ApiKey { id: actor } | Actor::Node { id: actor } => {
                out.push_str("\"id\":");
                id(&mut out, *actor);
            }
            Actor::System { component } => {
                out.push_str("\"component\":");
                text(&mut out, component);
            }
        }
        out.push_str(",\"kind\":\"");
        out.push_str(match &self.actor {
            Actor::User { .. } => "user",
            Actor::ApiKey { .. } => "api_key",
            Actor::Node { .. } => "node",
            Actor::System { .. } => "system",
        });
        out.push_str("\"},\"causation_id\":");
        match self.causation_id {
            Some(c) => id(&mut out, c),
            None => out.push_str("null"),
        }
        out.push_str(",\"correlation_id\":");
        id(&mut out, self.correlation_id);
        out.push_str(",\"trace_id\":");
        match &self.trace_id {
            Some(t) => text(&mut out, t),
            None => out.push_str("null"),
        }
        out.push('}');
        out
    }
}

/// An event to append. The store adds the stream, version, position, routing
/// key check, time and hash chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// UUID v4 chosen by the writer; the idempotency key of the append.
    pub event_id: Uuid,
    /// e.g. `render.job.submitted`.
    pub event_type: String,
    /// The version suffix of the routing key.
    pub schema_version: u32,
    /// The payload, which must validate against the catalog's schema.
    pub payload: serde_json::Value,
    /// Correlation, causation, actor, trace.
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// The routing key this event is published under.
    pub fn routing_key(&self) -> String {
        format!("{}.v{}", self.event_type, self.schema_version)
    }

    /// Builds a new event from a domain event.
    pub fn from_domain<E: domain::DomainEvent>(
        event_id: Uuid,
        event: &E,
        metadata: EventMetadata,
    ) -> Self {
        Self {
            event_id,
            event_type: event.event_type().to_string(),
            schema_version: event.schema_version(),
            payload: event.to_payload(),
            metadata,
        }
    }
}

/// The version a writer expects the stream to be at (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (its last event's number).
    Exact(u64),
}

impl ExpectedVersion {
    /// The encoding used by the backends: `None` = any, `Some(0)` = no stream.
    pub(crate) fn as_db(self) -> Option<i64> {
        match self {
            Self::Any => None,
            Self::NoStream => Some(0),
            Self::Exact(v) => Some(v as i64),
        }
    }
}

/// One append: a batch of events to one stream, all or nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// The stream (aggregate instance).
    pub stream_id: Uuid,
    /// The aggregate kind; must match the catalog row of every event.
    pub stream_type: String,
    /// The owning tenant; `None` for farm-wide streams. Fixed per stream.
    pub tenant_id: Option<Uuid>,
    /// The optimistic-concurrency check.
    pub expected: ExpectedVersion,
    /// At least one event.
    pub events: Vec<NewEvent>,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream version of the first event of the batch.
    pub first_version: u64,
    /// The stream version of the last event of the batch.
    pub last_version: u64,
    /// The global position of the first event.
    pub first_position: i64,
    /// The global position of the last event.
    pub last_position: i64,
    /// True when every event was already stored (a retried append): nothing was written.
    pub already_stored: bool,
}

/// A stored event with its whole envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Strictly increasing over the whole store.
    pub global_position: i64,
    /// The writer's id for the event.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: Uuid,
    /// The aggregate kind.
    pub stream_type: String,
    /// 1, 2, 3, ... within the stream.
    pub stream_version: u64,
    /// e.g. `render.job.submitted`.
    pub event_type: String,
    /// e.g. `render.job.submitted.v1`.
    pub routing_key: String,
    /// The routing key's version.
    pub schema_version: u32,
    /// The owning tenant, if any.
    pub tenant_id: Option<Uuid>,
    /// The payload as stored.
    pub payload: serde_json::Value,
    /// The metadata as stored (see [`EventMetadata`]).
    pub metadata: serde_json::Value,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The previous event's hash in this stream (zeros for the first).
    pub prev_hash: [u8; 32],
    /// This event's link in the stream's hash chain.
    pub hash: [u8; 32],
}

impl RecordedEvent {
    /// The metadata, typed.
    pub fn typed_metadata(&self) -> Result<EventMetadata, serde_json::Error> {
        serde_json::from_value(self.metadata.clone())
    }

    /// Decodes the payload into a domain event.
    pub fn to_domain<E: domain::DomainEvent>(&self) -> Result<E, domain::EventDecodeError> {
        E::from_payload(&self.routing_key, &self.payload)
    }
}

/// A point in history to read a stream up to (inclusive), for audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Everything.
    End,
    /// Up to this stream version.
    Version(u64),
    /// Up to this global position.
    Position(i64),
    /// Everything recorded at or before this time.
    Time(DateTime<Utc>),
}

impl AsOf {
    /// Whether a recorded event falls within this bound.
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        match *self {
            Self::End => true,
            Self::Version(v) => event.stream_version <= v,
            Self::Position(p) => event.global_position <= p,
            Self::Time(t) => event.recorded_at <= t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::canonical;

    #[test]
    fn canonical_metadata_matches_the_generic_canonical_form() {
        let ids = [Uuid::from_u128(7), Uuid::from_u128(9)];
        let actors = [
            Actor::User { id: ids[0] },
            Actor::ApiKey { id: ids[0] },
            Actor::Node { id: ids[0] },
            Actor::System {
                component: "orchestrator \"x\"".into(),
            },
        ];
        for actor in actors {
            for (causation_id, trace_id) in
                [(None, None), (Some(ids[1]), Some("t\u{e9}\n".to_string()))]
            {
                let meta = EventMetadata {
                    correlation_id: ids[1],
                    causation_id,
                    actor: actor.clone(),
                    trace_id,
                };
                let generic = canonical(&serde_json::to_value(&meta).unwrap());
                assert_eq!(meta.canonical_json(), generic);
            }
        }
    }
}
