//! Known stream heads, so that most appends need not read the head first.
//!
//! An entry says "stream S has an event at version V with hash H, stream type
//! T and tenant N" — a fact that never stops being true, since events are
//! immutable. Whether V is still the *last* version is settled by the
//! database: an append that builds on V inserts V+1, and the unique key on
//! (stream, version) refuses it if anyone else got there first.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

/// A known event of a stream, usable as the base of the next append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub version: u64,
    pub hash: [u8; 32],
    pub stream_type: String,
    pub tenant_id: Option<Uuid>,
}

impl Head {
    /// The version and hash an append builds on, if the head belongs to the
    /// request's stream type and tenant.
    pub fn base_for(&self, request: &crate::event::AppendRequest) -> Option<(u64, [u8; 32])> {
        (self.stream_type == request.stream_type && self.tenant_id == request.tenant_id)
            .then_some((self.version, self.hash))
    }
}

/// A bounded map of stream heads.
#[derive(Debug)]
pub(crate) struct Heads {
    map: Mutex<HashMap<Uuid, Head>>,
    capacity: usize,
}

impl Heads {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Head>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The highest known head of a stream.
    pub fn get(&self, stream_id: Uuid) -> Option<Head> {
        self.lock().get(&stream_id).cloned()
    }

    /// Records a head, keeping the higher version.
    pub fn remember(&self, stream_id: Uuid, head: Head) {
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&stream_id) {
            // Crude but bounded: start over. A miss only costs a head read.
            map.clear();
        }
        match map.get(&stream_id) {
            Some(known) if known.version >= head.version => {}
            _ => {
                map.insert(stream_id, head);
            }
        }
    }

    /// Records a stored event as a head of its stream.
    pub fn remember_event(&self, event: &crate::event::RecordedEvent) {
        let head = Head {
            version: event.stream_version,
            hash: event.hash,
            stream_type: event.stream_type.clone(),
            tenant_id: event.tenant_id,
        };
        self.remember(event.stream_id, head);
    }

    /// Forgets a stream whose head turned out to be stale.
    pub fn forget(&self, stream_id: Uuid) {
        self.lock().remove(&stream_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: u64) -> Head {
        Head {
            version,
            hash: [version as u8; 32],
            stream_type: "tenant".into(),
            tenant_id: None,
        }
    }

    #[test]
    fn keeps_the_highest_version_and_stays_bounded() {
        let heads = Heads::new(2);
        let s = Uuid::from_u128(1);
        heads.remember(s, head(3));
        heads.remember(s, head(2));
        assert_eq!(heads.get(s).map(|h| h.version), Some(3));
        heads.remember(Uuid::from_u128(2), head(1));
        heads.remember(Uuid::from_u128(3), head(1));
        assert!(heads.lock().len() <= 2);
        heads.forget(Uuid::from_u128(3));
        assert_eq!(heads.get(Uuid::from_u128(3)), None);
    }
}
