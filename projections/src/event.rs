//! Stored events, decoded once per batch for every projection.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use domain::{FileEvent, NodeEvent, RenderJobEvent, TenantEvent};
use eventstore::RecordedEvent;

use crate::error::ProjectionError;

/// A stored event, decoded.
#[derive(Debug)]
pub(crate) struct Ev {
    /// Its global position.
    pub position: i64,
    /// When the store recorded it, as read-model text.
    pub recorded_at: String,
    /// The event, for the aggregates read models are made of.
    pub event: Decoded,
}

/// The domain event inside.
#[derive(Debug)]
pub(crate) enum Decoded {
    Render(RenderJobEvent),
    Tenant(TenantEvent),
    Node(NodeEvent),
    File(FileEvent),
    /// Identity and notification events: no read model here needs them.
    Other,
}

impl Ev {
    /// Decodes a stored event; one that does not decode stops the
    /// projection (skipping it would leave the read model wrong for good).
    pub fn decode(event: &RecordedEvent) -> Result<Self, ProjectionError> {
        let fail = |message: String| ProjectionError::Decode {
            position: event.global_position,
            routing_key: event.routing_key.clone(),
            message,
        };
        let decoded = match event.stream_type.as_str() {
            "render_job" => Decoded::Render(event.to_domain().map_err(|e| fail(e.to_string()))?),
            "tenant" => Decoded::Tenant(event.to_domain().map_err(|e| fail(e.to_string()))?),
            "node" => Decoded::Node(event.to_domain().map_err(|e| fail(e.to_string()))?),
            "file" => Decoded::File(event.to_domain().map_err(|e| fail(e.to_string()))?),
            _ => Decoded::Other,
        };
        Ok(Self {
            position: event.global_position,
            recorded_at: time(event.recorded_at),
            event: decoded,
        })
    }
}

/// A time as read models store it: RFC 3339, UTC, microseconds (orders as text).
pub fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The rows a batch will look at, by table: loaded before the batch applies.
#[derive(Debug, Default)]
pub(crate) struct Needs {
    keys: HashMap<&'static str, BTreeSet<String>>,
    /// (table, column, value): every row whose column has that value.
    wheres: Vec<(&'static str, &'static str, String)>,
}

impl Needs {
    /// The row of `table` with this key.
    pub fn key(&mut self, table: &'static str, key: impl ToString) {
        self.keys.entry(table).or_default().insert(key.to_string());
    }

    /// Every row of `table` whose `column` is `value`.
    pub fn rows_where(&mut self, table: &'static str, column: &'static str, value: impl ToString) {
        self.wheres.push((table, column, value.to_string()));
    }

    /// The keys needed of a table.
    pub fn keys_of(&self, table: &str) -> Vec<String> {
        self.keys
            .get(table)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The lookups by column of a table.
    pub fn wheres_of(&self, table: &str) -> impl Iterator<Item = (&'static str, &str)> {
        self.wheres
            .iter()
            .filter(move |(t, _, _)| *t == table)
            .map(|(_, c, v)| (*c, v.as_str()))
    }
}
