//! What can go wrong while projecting.

use thiserror::Error;

/// A projection could not read, apply or write.
#[derive(Debug, Error)]
pub enum ProjectionError {
    /// The event store refused a read.
    #[error("event store: {0}")]
    Store(#[from] eventstore::StoreError),
    /// The read-model database failed.
    #[error("read-model database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event does not decode into its domain event.
    #[error("event at position {position} ({routing_key}) does not decode: {message}")]
    Decode {
        /// Where it is.
        position: i64,
        /// What it claims to be.
        routing_key: String,
        /// Why it does not decode.
        message: String,
    },
    /// A stored row does not have the shape its table has.
    #[error("read-model row of {table} is malformed: {message}")]
    Row {
        /// The table.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Another runner moved a checkpoint (or a rebuild reset it) while this
    /// one was writing: the batch was rolled back and the runner reloads.
    #[error("checkpoint of projection {0} moved under this runner")]
    CheckpointMoved(&'static str),
    /// Another instance holds the projections' lock (PostgreSQL).
    #[error("another instance runs the projections")]
    LockHeld,
    /// An unknown projection name.
    #[error("no projection is called {0:?} (known: renders, nodes, files)")]
    UnknownProjection(String),
    /// The failure a test injected between the rows and the commit.
    #[error("injected failure before commit")]
    Injected,
}
