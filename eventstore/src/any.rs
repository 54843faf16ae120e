//! One type for "whichever backend the configuration names".

use std::path::Path;

use tokio::sync::watch;
use uuid::Uuid;

use crate::error::StoreError;
use crate::event::{AppendRequest, AppendResult, RecordedEvent};
use crate::postgres::{PgOptions, PgStore};
use crate::sqlite::SqliteStore;
use crate::store::{EventStore, Filtered};

/// The configured backend.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// PostgreSQL (production).
    Postgres(PgStore),
    /// SQLite (the embedded default).
    Sqlite(SqliteStore),
}

impl AnyStore {
    /// Opens PostgreSQL when `database_url` is a `postgres://` URL, a SQLite
    /// URL when it is `sqlite:`, and otherwise the embedded default
    /// `events.sqlite` under `data_dir`.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(
                Self::Postgres(PgStore::connect(url, PgOptions::default()).await?),
            ),
            Some(url) if url.starts_with("sqlite:") => {
                Ok(Self::Sqlite(SqliteStore::open_url(url).await?))
            }
            Some(_) => Err(StoreError::Database(sqlx::Error::Configuration(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into(),
            ))),
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Database(e.into()))?;
                Ok(Self::Sqlite(
                    SqliteStore::open(&data_dir.join("events.sqlite")).await?,
                ))
            }
        }
    }

    /// The migrations this binary has that the database has not applied
    /// successfully (none once the store is open, unless someone changed
    /// the database's record of them): their versions.
    pub async fn missing_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let (migrator, applied): (sqlx::migrate::Migrator, Vec<i64>) = match self {
            AnyStore::Postgres(s) => (
                sqlx::migrate!("../migrations/postgres"),
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(s.pool())
                    .await?,
            ),
            AnyStore::Sqlite(s) => (
                sqlx::migrate!("../migrations/sqlite"),
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(s.readers())
                    .await?,
            ),
        };
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Postgres($store) => $call,
            AnyStore::Sqlite($store) => $call,
        }
    };
}

impl EventStore for AnyStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        delegate!(self, s => s.append(request).await)
    }

    async fn append_many(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<AppendResult, StoreError>> {
        delegate!(self, s => s.append_many(requests).await)
    }

    async fn read_stream(
        &self,
        stream_id: Uuid,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.read_stream(stream_id, from_version, limit).await)
    }

    async fn read_all(
        &self,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.read_all(after_position, limit).await)
    }

    async fn read_all_of(
        &self,
        after_position: i64,
        routing_keys: &[&str],
        scan: usize,
    ) -> Result<Filtered, StoreError> {
        delegate!(self, s => s.read_all_of(after_position, routing_keys, scan).await)
    }

    async fn read_tenant(
        &self,
        tenant_id: Uuid,
        after_position: i64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.read_tenant(tenant_id, after_position, limit).await)
    }

    async fn stream_version(&self, stream_id: Uuid) -> Result<u64, StoreError> {
        delegate!(self, s => s.stream_version(stream_id).await)
    }

    fn appended(&self) -> watch::Receiver<i64> {
        delegate!(self, s => s.appended())
    }
}
