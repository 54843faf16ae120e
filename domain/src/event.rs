//! The [`DomainEvent`] and [`Aggregate`] traits, and the `domain_events!`
//! macro that declares an event enum in one place.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DomainError, EventDecodeError};

/// An event enum of one stream type: every variant has exactly one routing
/// key and one payload struct.
pub trait DomainEvent: Sized + Clone + std::fmt::Debug + PartialEq {
    /// The stream type of the aggregate, e.g. `render_job`.
    const STREAM_TYPE: &'static str;
    /// Every routing key this enum can produce, e.g. `render.job.submitted.v1`.
    const ROUTING_KEYS: &'static [&'static str];
    /// The routing key of this event, e.g. `render.job.submitted.v1`.
    fn routing_key(&self) -> &'static str;
    /// The routing key without its version, e.g. `render.job.submitted`.
    fn event_type(&self) -> &'static str;
    /// The version of the payload schema (the `N` of `.vN`).
    fn schema_version(&self) -> u32 {
        1
    }
    /// The payload only (the variant's struct), as JSON, without any tag.
    fn to_payload(&self) -> serde_json::Value;
    /// Rebuilds an event from its routing key and payload.
    fn from_payload(
        routing_key: &str,
        payload: &serde_json::Value,
    ) -> Result<Self, EventDecodeError>;
    /// One sample value of every variant, built from fixed ids and times.
    fn samples() -> Vec<Self>;
}

/// An event-sourced aggregate: commands are decided against the state, and
/// the resulting events evolve it.
pub trait Aggregate: Default + Clone + std::fmt::Debug + PartialEq {
    /// The events of this aggregate's streams.
    type Event: DomainEvent;
    /// The commands it decides.
    type Command;
    /// Decides a command: pure, returns the events to append or why not.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, DomainError>;
    /// Applies one event. Never fails: events are facts.
    fn evolve(self, event: &Self::Event) -> Self;
    /// Folds [`Aggregate::evolve`] over a stream from the empty state.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        events
            .into_iter()
            .fold(Self::default(), |state, event| state.evolve(event))
    }
}

/// A payload struct of one event variant.
pub trait EventPayload: Serialize + DeserializeOwned + Clone + std::fmt::Debug + PartialEq {
    /// A fixed sample value, for the catalog test and documentation.
    fn sample() -> Self;
}

/// The routing key without its `.vN` suffix.
pub(crate) fn strip_version(routing_key: &'static str) -> &'static str {
    routing_key
        .rsplit_once(".v")
        .map_or(routing_key, |(event_type, _)| event_type)
}

/// Serializes a payload struct; these hold only strings, numbers, ids and
/// times, so this cannot fail.
pub(crate) fn payload_to_json<P: Serialize>(payload: &P) -> serde_json::Value {
    match serde_json::to_value(payload) {
        Ok(value) => value,
        Err(e) => unreachable!("payload structs always serialize: {e}"),
    }
}

/// The fixed time used by samples: 2026-01-02T03:04:05Z.
pub(crate) fn sample_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .unwrap_or_default()
}

/// Declares an event enum: one line per variant ties its payload struct to
/// its routing key (and names the payload field holding the stream id), and the [`DomainEvent`] impl, `From` impls and samples
/// are generated from those lines so they cannot drift apart. A routing key
/// listed twice is an unreachable match arm, which the lints deny.
macro_rules! domain_events {
    (
        $(#[$doc:meta])*
        pub enum $name:ident : $stream:literal, stream_id = $id_field:ident {
            $( $(#[$vdoc:meta])* $variant:ident($payload:ty) => $key:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $( $(#[$vdoc])* $variant($payload), )+
        }

        impl $crate::event::DomainEvent for $name {
            const STREAM_TYPE: &'static str = $stream;
            const ROUTING_KEYS: &'static [&'static str] = &[$($key),+];

            fn routing_key(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $key, )+
                }
            }

            fn event_type(&self) -> &'static str {
                $crate::event::strip_version(self.routing_key())
            }

            fn to_payload(&self) -> serde_json::Value {
                match self {
                    $( Self::$variant(p) => $crate::event::payload_to_json(p), )+
                }
            }

            fn from_payload(
                routing_key: &str,
                payload: &serde_json::Value,
            ) -> Result<Self, $crate::error::EventDecodeError> {
                match routing_key {
                    $( $key => <$payload as serde::Deserialize>::deserialize(payload)
                        .map(Self::$variant)
                        .map_err(|source| $crate::error::EventDecodeError::Payload {
                            routing_key: routing_key.to_string(),
                            source,
                        }), )+
                    other => Err($crate::error::EventDecodeError::UnknownRoutingKey(other.to_string())),
                }
            }

            fn samples() -> Vec<Self> {
                vec![ $( Self::$variant(<$payload as $crate::event::EventPayload>::sample()), )+ ]
            }
        }

        impl $name {
            /// The id of the stream (aggregate instance) the event belongs to.
            pub fn stream_id(&self) -> uuid::Uuid {
                match self {
                    $( Self::$variant(p) => p.$id_field.as_uuid(), )+
                }
            }

            /// The tenant the event belongs to, if its payload names one.
            pub fn tenant_id(&self) -> Option<$crate::ids::TenantId> {
                use $crate::event::DomainEvent as _;
                self.to_payload()
                    .get("tenant_id")
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
            }
        }

        $(
            impl From<$payload> for $name {
                fn from(payload: $payload) -> Self {
                    Self::$variant(payload)
                }
            }
        )+
    };
}

pub(crate) use domain_events;
