//! Typed configuration: command-line flags, each with an environment
//! variable, and defaults that run on a laptop (SQLite and files under
//! `./flatrender-data`, no broker).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the store and files live.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageConfig {
    /// PostgreSQL (`postgres://…`) or SQLite (`sqlite://…`) URL; unset: the
    /// embedded SQLite store under the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The data directory (embedded store, files).
    #[arg(long, env = "FLATRENDER_DATA_DIR", default_value = "flatrender-data")]
    pub data_dir: PathBuf,
}

impl StorageConfig {
    /// Opens the configured event store, applying migrations.
    pub async fn open_store(&self) -> anyhow::Result<eventstore::AnyStore> {
        Ok(eventstore::AnyStore::open(self.database_url.as_deref(), &self.data_dir).await?)
    }
}

/// Settings of `flatrender serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "FLATRENDER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "FLATRENDER_MAX_UPLOAD_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Storage.
    #[command(flatten)]
    pub storage: StorageConfig,
}
