//! Catalog codes: the `smallint` an event row stores in place of its routing
//! key, event type, schema version and stream type. The names live once in
//! the `event_types` table; the store adds every row of the contract catalog
//! to it when it opens (codes are assigned by the database and never change)
//! and keeps the table in memory. A code this process does not know (another
//! instance with a newer catalog added it) makes the store reload the table.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::StoreError;

/// One row of `event_types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType {
    /// e.g. `render.job.submitted.v1`.
    pub routing_key: String,
    /// e.g. `render.job.submitted`.
    pub event_type: String,
    /// The routing key's version.
    pub schema_version: u32,
    /// The stream type whose streams carry it.
    pub stream_type: String,
}

/// A row of `event_types` as read: (code, routing key, event type, schema
/// version, stream type).
pub(crate) type CodeRow = (i16, String, String, i32, String);

/// The code table, in memory.
#[derive(Debug, Default)]
pub(crate) struct Codes {
    map: RwLock<CodeMap>,
}

#[derive(Debug, Default)]
struct CodeMap {
    by_code: HashMap<i16, Arc<EventType>>,
    by_key: HashMap<String, i16>,
    /// The codes of each stream type's events.
    by_stream_type: HashMap<String, Vec<i16>>,
}

impl Codes {
    /// Replaces the table with `rows` (all of `event_types`).
    pub fn replace(&self, rows: Vec<CodeRow>) {
        let mut map = CodeMap::default();
        for (code, routing_key, event_type, schema_version, stream_type) in rows {
            map.by_key.insert(routing_key.clone(), code);
            map.by_stream_type
                .entry(stream_type.clone())
                .or_default()
                .push(code);
            map.by_code.insert(
                code,
                Arc::new(EventType {
                    routing_key,
                    event_type,
                    schema_version: schema_version as u32,
                    stream_type,
                }),
            );
        }
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = map;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CodeMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The code of a routing key.
    pub fn code_of(&self, routing_key: &str) -> Option<i16> {
        self.read().by_key.get(routing_key).copied()
    }

    /// The codes of those of `routing_keys` that have one.
    pub fn codes_of(&self, routing_keys: &[&str]) -> Vec<i16> {
        routing_keys
            .iter()
            .filter_map(|k| self.code_of(k))
            .collect()
    }

    /// The names behind a code.
    pub fn get(&self, code: i16) -> Option<Arc<EventType>> {
        self.read().by_code.get(&code).cloned()
    }

    /// Whether every code is known.
    pub fn knows_all(&self, codes: impl IntoIterator<Item = i16>) -> bool {
        let map = self.read();
        codes.into_iter().all(|c| map.by_code.contains_key(&c))
    }

    /// The codes whose events belong to streams of `stream_type`.
    pub fn of_stream_type(&self, stream_type: &str) -> Vec<i16> {
        self.read()
            .by_stream_type
            .get(stream_type)
            .cloned()
            .unwrap_or_default()
    }

    /// The names behind a code, as a decoding error when it has none.
    pub fn resolve(&self, code: i16) -> Result<Arc<EventType>, StoreError> {
        self.get(code)
            .ok_or_else(|| StoreError::Corrupt(format!("type code {code} is not in event_types")))
    }
}

/// The catalog rows `stored` lacks, to be added; an error when a stored row
/// names a catalog routing key with other names (the catalog changed a
/// published event, which it must never do).
pub(crate) fn missing(stored: &[CodeRow]) -> Result<Vec<EventType>, StoreError> {
    let by_key: HashMap<&str, &CodeRow> = stored.iter().map(|r| (r.1.as_str(), r)).collect();
    let mut out = Vec::new();
    for entry in contracts::catalog().entries() {
        match by_key.get(entry.routing_key.as_str()) {
            None => out.push(EventType {
                routing_key: entry.routing_key.clone(),
                event_type: entry.event_type.clone(),
                schema_version: entry.schema_version,
                stream_type: entry.stream_type.clone(),
            }),
            Some((_, _, event_type, version, stream_type))
                if *event_type == entry.event_type
                    && *version as u32 == entry.schema_version
                    && *stream_type == entry.stream_type => {}
            Some((code, ..)) => {
                return Err(StoreError::Corrupt(format!(
                    "event_types code {code} names `{}` with another event type, version or \
                     stream type than the catalog",
                    entry.routing_key
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_resolve_both_ways_and_group_by_stream_type() {
        let codes = Codes::default();
        codes.replace(vec![
            (
                1,
                "tenant.created.v1".into(),
                "tenant.created".into(),
                1,
                "tenant".into(),
            ),
            (
                2,
                "tenant.credit_added.v1".into(),
                "tenant.credit_added".into(),
                1,
                "tenant".into(),
            ),
            (
                3,
                "node.registered.v1".into(),
                "node.registered".into(),
                1,
                "node".into(),
            ),
        ]);
        assert_eq!(codes.code_of("tenant.credit_added.v1"), Some(2));
        assert_eq!(codes.get(3).unwrap().stream_type, "node");
        assert_eq!(codes.of_stream_type("tenant"), vec![1, 2]);
        assert!(codes.knows_all([1, 3]));
        assert!(!codes.knows_all([1, 4]));
        assert!(codes.resolve(9).is_err());
    }

    #[test]
    fn missing_lists_new_catalog_rows_and_refuses_renamed_ones() {
        let all = missing(&[]).unwrap();
        assert_eq!(all.len(), contracts::catalog().entries().count());
        let first = &all[0];
        let stored = vec![(
            1,
            first.routing_key.clone(),
            first.event_type.clone(),
            first.schema_version as i32,
            first.stream_type.clone(),
        )];
        assert_eq!(missing(&stored).unwrap().len(), all.len() - 1);
        let renamed = vec![(
            1,
            first.routing_key.clone(),
            first.event_type.clone(),
            first.schema_version as i32,
            "elsewhere".into(),
        )];
        assert!(missing(&renamed).is_err());
    }
}
