#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod digest;
pub mod error;
pub mod event;
pub mod file;
pub mod frame_range;
pub mod identity;
pub mod ids;
pub mod money;
pub mod node;
pub mod notification;
pub mod priority;
pub mod render_job;
pub mod tenant;
pub mod text;

pub use digest::Sha256Digest;
pub use error::{DomainError, EventDecodeError, ValidationError};
pub use event::{Aggregate, DomainEvent, EventPayload};
pub use file::{File, FileCommand, FileEvent};
pub use frame_range::{ChunkSize, FrameRange, chunk};
pub use identity::{Identity, IdentityCommand, IdentityEvent};
pub use ids::{
    ApiKeyId, EndpointId, FileId, JobId, NodeId, NotificationId, SecretKeyId, TaskId, TenantId,
    UserId,
};
pub use money::AmountMinor;
pub use node::{Node, NodeCommand, NodeEvent};
pub use notification::{NotificationCommand, NotificationEndpoint, NotificationEvent};
pub use priority::{Priority, ShareWeight};
pub use render_job::{LeaseRef, RenderJob, RenderJobCommand, RenderJobEvent, SubmitJob};
pub use tenant::{Tenant, TenantCommand, TenantEvent};
pub use text::{ContentType, Email, FileName, Identifier, KeyPrefix, Label, Note, WebhookUrl};

/// The stream type and routing keys of every event enum, in one list.
fn catalog() -> [(&'static str, &'static [&'static str]); 6] {
    [
        (TenantEvent::STREAM_TYPE, TenantEvent::ROUTING_KEYS),
        (RenderJobEvent::STREAM_TYPE, RenderJobEvent::ROUTING_KEYS),
        (NodeEvent::STREAM_TYPE, NodeEvent::ROUTING_KEYS),
        (FileEvent::STREAM_TYPE, FileEvent::ROUTING_KEYS),
        (IdentityEvent::STREAM_TYPE, IdentityEvent::ROUTING_KEYS),
        (
            NotificationEvent::STREAM_TYPE,
            NotificationEvent::ROUTING_KEYS,
        ),
    ]
}

/// Every routing key any aggregate can emit.
pub fn all_routing_keys() -> Vec<&'static str> {
    catalog()
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .collect()
}

/// The stream type whose events carry `routing_key`, if any aggregate emits it.
pub fn stream_type_of(routing_key: &str) -> Option<&'static str> {
    catalog()
        .iter()
        .find(|(_, keys)| keys.contains(&routing_key))
        .map(|(stream_type, _)| *stream_type)
}

/// One sample of every event of every aggregate, as
/// `(stream type, routing key, payload)`.
pub fn all_samples() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    fn of<E: DomainEvent>() -> impl Iterator<Item = (&'static str, &'static str, serde_json::Value)>
    {
        E::samples()
            .into_iter()
            .map(|e| (E::STREAM_TYPE, e.routing_key(), e.to_payload()))
    }
    of::<TenantEvent>()
        .chain(of::<RenderJobEvent>())
        .chain(of::<NodeEvent>())
        .chain(of::<FileEvent>())
        .chain(of::<IdentityEvent>())
        .chain(of::<NotificationEvent>())
        .collect()
}

/// Decodes a stored event of any stream type and re-encodes it, proving the
/// payload is a valid instance of its Rust type. Used by audits; returns the
/// decode error otherwise.
pub fn check_payload(
    routing_key: &str,
    payload: &serde_json::Value,
) -> Result<(), EventDecodeError> {
    fn roundtrip<E: DomainEvent>(
        key: &str,
        payload: &serde_json::Value,
    ) -> Result<(), EventDecodeError> {
        E::from_payload(key, payload).map(|_| ())
    }
    match stream_type_of(routing_key) {
        Some(TenantEvent::STREAM_TYPE) => roundtrip::<TenantEvent>(routing_key, payload),
        Some(RenderJobEvent::STREAM_TYPE) => roundtrip::<RenderJobEvent>(routing_key, payload),
        Some(NodeEvent::STREAM_TYPE) => roundtrip::<NodeEvent>(routing_key, payload),
        Some(FileEvent::STREAM_TYPE) => roundtrip::<FileEvent>(routing_key, payload),
        Some(IdentityEvent::STREAM_TYPE) => roundtrip::<IdentityEvent>(routing_key, payload),
        Some(NotificationEvent::STREAM_TYPE) => {
            roundtrip::<NotificationEvent>(routing_key, payload)
        }
        _ => Err(EventDecodeError::UnknownRoutingKey(routing_key.to_string())),
    }
}
