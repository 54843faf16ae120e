#![doc = include_str!("../README.md")]

pub mod any;
pub mod audit;
pub mod clock;
mod codes;
pub mod credentials;
pub mod error;
pub mod event;
pub mod hashing;
mod heads;
pub mod idempotency;
mod liveness;
pub mod postgres;
pub mod snapshots;
pub mod sqlite;
pub mod store;
pub mod subscription;
pub mod task;
pub mod vault;

pub use any::AnyStore;
pub use audit::{AuditProblem, AuditReport, ExportScope, export_jsonl, verify_all};
pub use clock::{Clock, ManualClock, SystemClock};
pub use credentials::{ApiKeySecretRow, NodeKey, UserPassword};
pub use error::StoreError;
pub use event::{
    Actor, AppendRequest, AppendResult, AsOf, EventMetadata, ExpectedVersion, NewEvent,
    RecordedEvent,
};
pub use hashing::{ChainError, verify_stream};
pub use idempotency::{IdempotencyBegin, StoredAnswer};
pub use postgres::{PgOptions, PgStore};
pub use snapshots::{SnapshotRead, ViewSnapshot};
pub use sqlite::SqliteStore;
pub use store::{EventStore, Filtered};
pub use subscription::Subscription;
pub use vault::{MasterKey, Vault, VaultError};
