//! The per-stream hash chain that makes tampering detectable.
//!
//! `digest = SHA-256(canonical JSON of [event_id, stream_id, stream_type,
//! event_type, routing_key, schema_version, tenant_id, recorded_at, payload,
//! metadata])`, where canonical JSON sorts object keys, has no white space, and
//! writes `recorded_at` as RFC 3339 with microseconds and `Z`.
//! `hash = SHA-256(prev_hash || be64(stream_version) || digest)`, with 32 zero
//! bytes as the `prev_hash` of a stream's first event. PostgreSQL computes the
//! chain in its append statement (`postgres::APPEND_SQL`), SQLite's store in Rust; both use this formula.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::RecordedEvent;

/// The `prev_hash` of the first event of every stream.
pub const GENESIS: [u8; 32] = [0; 32];

/// The fields of an event that its digest covers.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: Uuid,
    /// Its stream type.
    pub stream_type: &'a str,
    /// Its event type.
    pub event_type: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// Its schema version.
    pub schema_version: u32,
    /// Its tenant.
    pub tenant_id: Option<Uuid>,
    /// When it was recorded (microsecond precision).
    pub recorded_at: DateTime<Utc>,
    /// Its payload as canonical JSON ([`canonical`]).
    pub payload: &'a str,
    /// Its metadata as canonical JSON ([`canonical`]).
    pub metadata: &'a str,
}

impl DigestInput<'_> {
    /// SHA-256 of the canonical encoding.
    pub fn digest(&self) -> [u8; 32] {
        self.digest_at(&format_time(self.recorded_at))
    }

    /// [`DigestInput::digest`] with `recorded_at` already written by
    /// [`format_time`] (every event of an append shares it). The canonical
    /// text is fed to SHA-256 piece by piece, never built as one string.
    pub(crate) fn digest_at(&self, recorded_at: &str) -> [u8; 32] {
        let mut h = HashWriter(Sha256::new());
        h.put(b"[");
        h.uuid(self.event_id);
        h.put(b",");
        h.uuid(self.stream_id);
        h.put(b",");
        for s in [self.stream_type, self.event_type, self.routing_key] {
            h.text(s);
            h.put(b",");
        }
        h.put(self.schema_version.to_string().as_bytes());
        h.put(b",");
        match self.tenant_id {
            Some(t) => h.uuid(t),
            None => h.put(b"null"),
        }
        h.put(b",");
        h.text(recorded_at);
        h.put(b",");
        h.put(self.payload.as_bytes());
        h.put(b",");
        h.put(self.metadata.as_bytes());
        h.put(b"]");
        h.0.finalize().into()
    }

    /// The canonical text the digest is taken over (for tests and tools).
    pub fn canonical_text(&self) -> String {
        let mut out = String::with_capacity(160 + self.payload.len() + self.metadata.len());
        out.push('[');
        for s in [&self.event_id.to_string(), &self.stream_id.to_string()] {
            write_str(&mut out, s);
            out.push(',');
        }
        for s in [self.stream_type, self.event_type, self.routing_key] {
            write_str(&mut out, s);
            out.push(',');
        }
        out.push_str(&self.schema_version.to_string());
        out.push(',');
        match self.tenant_id {
            Some(t) => write_str(&mut out, &t.to_string()),
            None => out.push_str("null"),
        }
        out.push(',');
        write_str(&mut out, &format_time(self.recorded_at));
        out.push(',');
        out.push_str(self.payload);
        out.push(',');
        out.push_str(self.metadata);
        out.push(']');
        out
    }
}

/// SHA-256 fed with pieces of canonical JSON.
struct HashWriter(Sha256);

impl HashWriter {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// A UUID as a JSON string (hyphenated, lower case: nothing to escape).
    fn uuid(&mut self, id: Uuid) {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.put(b"\"");
        self.put(id.hyphenated().encode_lower(&mut buf).as_bytes());
        self.put(b"\"");
    }

    /// A string as `serde_json` writes it.
    fn text(&mut self, s: &str) {
        // Writing a string into the hasher cannot fail.
        let _ = serde_json::to_writer(&mut *self, s);
    }
}

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The digest of a stored event, recomputed from what is stored.
pub fn digest_of(event: &RecordedEvent) -> [u8; 32] {
    let (payload, metadata) = (canonical(&event.payload), canonical(&event.metadata));
    DigestInput {
        event_id: event.event_id,
        stream_id: event.stream_id,
        stream_type: &event.stream_type,
        event_type: &event.event_type,
        routing_key: &event.routing_key,
        schema_version: event.schema_version,
        tenant_id: event.tenant_id,
        recorded_at: event.recorded_at,
        payload: &payload,
        metadata: &metadata,
    }
    .digest()
}

/// JSON with object keys sorted and no white space
/// ([`contracts::canonical_json`]).
pub fn canonical(value: &Value) -> String {
    contracts::canonical_json(value)
}

fn write_str(out: &mut String, s: &str) {
    // Serialising a &str to JSON cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// The chain link: `SHA-256(prev_hash || be64(stream_version) || digest)`.
pub fn chain(prev_hash: &[u8; 32], stream_version: u64, digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(stream_version.to_be_bytes());
    h.update(digest);
    h.finalize().into()
}

/// Canonical time text: RFC 3339, microseconds, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Truncates a time to the microsecond precision both backends store.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// What is wrong with a stream's stored history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Versions are not 1, 2, 3, ... without gaps.
    #[error("stream {stream_id}: expected version {expected}, found {found}")]
    VersionGap {
        /// The stream.
        stream_id: Uuid,
        /// The version that should come next.
        expected: u64,
        /// The version found.
        found: u64,
    },
    /// An event's `prev_hash` is not the previous event's hash.
    #[error("stream {stream_id} version {version}: prev_hash does not link to the previous event")]
    BrokenLink {
        /// The stream.
        stream_id: Uuid,
        /// The event's version.
        version: u64,
    },
    /// An event's content does not match its hash: it was changed after it was written.
    #[error("stream {stream_id} version {version}: content does not match its hash")]
    Tampered {
        /// The stream.
        stream_id: Uuid,
        /// The event's version.
        version: u64,
    },
}

/// Checks one stream's events, in version order from version 1: no version
/// gaps, every link, every hash.
pub fn verify_stream<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent>,
) -> Result<u64, ChainError> {
    let mut prev = GENESIS;
    let mut expected = 1;
    for event in events {
        let stream_id = event.stream_id;
        if event.stream_version != expected {
            return Err(ChainError::VersionGap {
                stream_id,
                expected,
                found: event.stream_version,
            });
        }
        if event.prev_hash != prev {
            return Err(ChainError::BrokenLink {
                stream_id,
                version: expected,
            });
        }
        let digest = digest_of(event);
        if chain(&prev, event.stream_version, &digest) != event.hash {
            return Err(ChainError::Tampered {
                stream_id,
                version: expected,
            });
        }
        prev = event.hash;
        expected += 1;
    }
    Ok(expected - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_depends_on_every_input() {
        let d = [7u8; 32];
        let base = chain(&GENESIS, 1, &d);
        assert_ne!(base, chain(&GENESIS, 2, &d));
        assert_ne!(base, chain(&[1; 32], 1, &d));
        assert_ne!(base, chain(&GENESIS, 1, &[8; 32]));
    }

    use proptest::prelude::*;

    /// A stream of events chained the way the stores chain them.
    fn chained(payloads: &[i64]) -> Vec<RecordedEvent> {
        let stream_id = Uuid::from_u128(42);
        let mut prev = GENESIS;
        payloads
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut event = RecordedEvent {
                    global_position: i as i64 + 1,
                    event_id: Uuid::from_u128(1000 + i as u128),
                    stream_id,
                    stream_type: "tenant".into(),
                    stream_version: i as u64 + 1,
                    event_type: "tenant.credit_added".into(),
                    routing_key: "tenant.credit_added.v1".into(),
                    schema_version: 1,
                    tenant_id: Some(stream_id),
                    payload: json!({ "amount_minor": n, "note": format!("n{n}") }),
                    metadata: json!({ "actor": { "kind": "system", "component": "test" } }),
                    recorded_at: DateTime::from_timestamp_micros(1_780_000_000_000_000 + i as i64)
                        .unwrap(),
                    prev_hash: prev,
                    hash: [0; 32],
                };
                event.hash = chain(&prev, event.stream_version, &digest_of(&event));
                prev = event.hash;
                event
            })
            .collect()
    }

    proptest! {
        /// Any chain built by the formula verifies; any single change to any
        /// event's content, link or hash is found, at that event.
        #[test]
        fn every_change_to_a_chain_is_detected(
            payloads in proptest::collection::vec(any::<i64>(), 1..20),
            victim in any::<proptest::sample::Index>(),
            change in 0..5u8,
            byte in 0..32usize,
        ) {
            let events = chained(&payloads);
            prop_assert_eq!(verify_stream(&events), Ok(events.len() as u64));
            let mut tampered = events.clone();
            let at = victim.index(tampered.len());
            let event = &mut tampered[at];
            match change {
                0 => event.payload["amount_minor"] = json!(payloads[at].wrapping_add(1)),
                1 => event.metadata["actor"]["component"] = json!("intruder"),
                2 => event.prev_hash[byte] ^= 1,
                3 => event.hash[byte] ^= 1,
                _ => event.recorded_at += chrono::Duration::microseconds(1),
            }
            let version = at as u64 + 1;
            let found = verify_stream(&tampered);
            // Content, time or hash changes break the event's own hash; a
            // changed link breaks the link.
            prop_assert!(matches!(
                found,
                Err(ChainError::Tampered { version: v, .. }) | Err(ChainError::BrokenLink { version: v, .. })
                    if v == version
            ), "{:?} at version {} for change {}", found, version, change);
        }
    }

    #[test]
    fn the_digest_is_sha256_of_the_canonical_text() {
        let t = DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
        for (tenant, text) in [(Some(Uuid::from_u128(5)), "t\"é\n"), (None, "plain")] {
            let input = DigestInput {
                event_id: Uuid::from_u128(1),
                stream_id: Uuid::from_u128(u128::MAX),
                stream_type: text,
                event_type: "tenant.credit_added",
                routing_key: "tenant.credit_added.v1",
                schema_version: 12,
                tenant_id: tenant,
                recorded_at: t,
                payload: r#"{"a":[1,null]}"#,
                metadata: r#"{"k":"v"}"#,
            };
            let text = input.canonical_text();
            assert!(text.starts_with(r#"["00000000-0000-0000-0000-000000000001","ffffffff-"#));
            let expected: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            assert_eq!(input.digest(), expected);
        }
    }

    #[test]
    fn time_is_written_with_microseconds_and_z() {
        let t = DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
        assert_eq!(format_time(t), "2026-05-28T20:26:40.123456Z");
    }
}
