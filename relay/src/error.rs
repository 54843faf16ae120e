//! What can stop a batch of the relay.

/// Why a batch was not published and checkpointed; every one is retried.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The broker refused, or the connection to it was lost.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker answered a publish without a confirm: confirms were not
    /// on, so nothing says the message is stored. Never taken as success.
    #[error("the broker did not confirm a publish (confirms not requested)")]
    NotConfirmed,
    /// The broker refused the batch's first message (`Nack`): published
    /// again from there.
    #[error("the broker refused a message (nack)")]
    Nacked,
    /// The store could not be read.
    #[error("store: {0}")]
    Store(#[from] eventstore::StoreError),
    /// The checkpoint could not be read or written.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Another relay moved the checkpoint (it held the lock meanwhile).
    #[error("the checkpoint moved under this relay")]
    CheckpointMoved,
    /// Another relay holds the lock of this database.
    #[error("another relay holds the lock")]
    LockHeld,
    /// A fault injected by a test, between the confirms and the checkpoint.
    #[error("injected failure before the checkpoint")]
    Injected,
}
