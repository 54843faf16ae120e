//! Errors of the event store.

use uuid::Uuid;

use crate::event::ExpectedVersion;

/// Why an operation on the store failed. The first group are expected
/// outcomes a caller handles; `Database`, `Migrate` and `Corrupt` are not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the version the writer expected (optimistic concurrency).
    #[error("stream {stream_id} is at version {actual}, expected {expected:?}")]
    WrongExpectedVersion {
        /// The stream.
        stream_id: Uuid,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused.
        actual: u64,
    },
    /// The stream exists with another stream type or tenant.
    #[error("stream {stream_id} belongs to another stream type or tenant")]
    StreamMismatch {
        /// The stream.
        stream_id: Uuid,
    },
    /// The event id is already stored with different content.
    #[error("event {event_id} is already stored with different content")]
    IdempotencyConflict {
        /// The event id.
        event_id: Uuid,
    },
    /// The event type has no catalog row, or its row names another stream type.
    #[error("`{routing_key}` is not a catalog event of stream type `{stream_type}`")]
    NotInCatalog {
        /// The routing key the event would have.
        routing_key: String,
        /// The stream type of the append.
        stream_type: String,
    },
    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// An append with more events than one append may carry.
    #[error("an append carries at most 65536 events, not {0}")]
    TooManyEvents(usize),
    /// A stored row could not be decoded.
    #[error("corrupt stored event: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A secret could not be sealed or opened (see [`crate::vault`]).
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    /// A migration failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
