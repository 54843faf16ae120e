//! Typed configuration: command-line flags, each with an environment
//! variable, and defaults that run on a laptop (SQLite and files under
//! `./flatrender-data`, no broker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::server::ServerLimits;

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
    /// The master key that seals secrets at rest.
    #[command(flatten)]
    pub master_key: crate::secrets::MasterKeyArgs,
}

impl StorageConfig {
    /// Opens the configured event store, applying migrations.
    pub async fn open_store(&self) -> anyhow::Result<eventstore::AnyStore> {
        Ok(eventstore::AnyStore::open(self.database_url.as_deref(), &self.data_dir).await?)
    }

    /// The vault of the configured master key (and the previous one during
    /// a rotation).
    pub fn vault(&self) -> anyhow::Result<eventstore::Vault> {
        self.master_key.vault(&self.data_dir)
    }
}

/// How the public API checks tokens (and `token issue` signs them).
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// `HS256` (a shared secret: the embedded default), `RS256` or `EdDSA`
    /// (a public key; tokens come from your identity provider).
    #[arg(long, env = "FLATRENDER_JWT_ALGORITHM", default_value = "HS256",
          value_parser = ["HS256", "RS256", "EdDSA"])]
    pub jwt_algorithm: String,
    /// The HS256 secret (at least 32 bytes); unset: read from
    /// `--jwt-secret-file`.
    #[arg(long, env = "FLATRENDER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The file holding the HS256 secret, created with a random one when
    /// missing; default `<data dir>/jwt-secret`.
    #[arg(long, env = "FLATRENDER_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The PEM public key for RS256 or EdDSA.
    #[arg(long, env = "FLATRENDER_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// The `iss` tokens must carry.
    #[arg(long, env = "FLATRENDER_JWT_ISSUER", default_value = crate::public::auth::ISSUER)]
    pub jwt_issuer: String,
    /// The `aud` tokens must carry.
    #[arg(long, env = "FLATRENDER_JWT_AUDIENCE", default_value = crate::public::auth::AUDIENCE)]
    pub jwt_audience: String,
}

impl JwtArgs {
    /// The token checks these settings describe.
    pub fn load(&self, data_dir: &std::path::Path) -> anyhow::Result<crate::public::auth::Jwt> {
        use crate::public::auth::Jwt;
        let (iss, aud) = (self.jwt_issuer.as_str(), self.jwt_audience.as_str());
        Ok(match self.jwt_algorithm.as_str() {
            "HS256" => match &self.jwt_secret {
                Some(secret) => Jwt::hs256(secret.as_bytes(), iss, aud)?,
                None => {
                    let file = self
                        .jwt_secret_file
                        .clone()
                        .unwrap_or_else(|| data_dir.join("jwt-secret"));
                    Jwt::hs256_file(&file, iss, aud)?
                }
            },
            algorithm => {
                let path = self.jwt_public_key_file.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("--jwt-public-key-file is required with {algorithm}")
                })?;
                let pem =
                    std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Jwt::public_key(algorithm, &pem, iss, aud)?
            }
        })
    }
}

/// Settings of `flatrender serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "FLATRENDER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Keep blobs (scenes, frames) in S3-compatible object storage shared by
    /// every instance, e.g. `s3://bucket` or `s3://bucket/prefix`, with the
    /// usual `AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION` (and `AWS_ALLOW_HTTP=true` for an `http://` endpoint).
    /// Without it, blobs live in `<data dir>/blobs`.
    #[arg(long, env = "FLATRENDER_BLOB_URL")]
    pub blob_url: Option<String>,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "FLATRENDER_MAX_UPLOAD_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Largest log of one task attempt, in bytes (later lines are counted
    /// and dropped; logs live in `<data dir>/blobs/logs`).
    #[arg(long, env = "FLATRENDER_TASK_LOG_CAP_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub task_log_cap_bytes: u64,
    /// How often, in seconds, the scheduler writes a snapshot of its view
    /// beside the log (when the log grew by `--snapshot-min-events` since
    /// the last one; also when `serve` stops), so that a restart replays
    /// only the events after it. 0 writes none (every start then reads
    /// the whole log).
    #[arg(long, env = "FLATRENDER_SNAPSHOT_SECONDS", default_value_t = 60)]
    pub snapshot_seconds: u64,
    /// Events the log must grow by before the next snapshot.
    #[arg(long, env = "FLATRENDER_SNAPSHOT_MIN_EVENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub snapshot_min_events: i64,
    /// How long a lease lives unless the node renews it (heartbeat or
    /// progress), in seconds.
    #[arg(long, env = "FLATRENDER_LEASE_SECONDS",
          default_value_t = orchestrator::Config::default().lease_ttl.num_seconds(),
          value_parser = clap::value_parser!(i64).range(1..))]
    pub lease_seconds: i64,
    /// A node not heard from for this many seconds goes offline and its
    /// leases are requeued.
    #[arg(long, env = "FLATRENDER_OFFLINE_AFTER_SECONDS",
          default_value_t = orchestrator::Config::default().offline_after.num_seconds(),
          value_parser = clap::value_parser!(i64).range(1..))]
    pub offline_after_seconds: i64,
    /// Connections served at once; more wait until one closes.
    #[arg(long, env = "FLATRENDER_MAX_CONNECTIONS",
          default_value_t = ServerLimits::default().max_connections,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds from a request's first byte to the end of its headers.
    #[arg(long, env = "FLATRENDER_HEADER_READ_TIMEOUT_SECONDS",
          default_value_t = ServerLimits::default().header_read_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_seconds: u64,
    /// Seconds a request body may go without sending data (then 408).
    #[arg(long, env = "FLATRENDER_BODY_READ_TIMEOUT_SECONDS",
          default_value_t = ServerLimits::default().body_read_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_seconds: u64,
    /// Seconds a kept-alive connection may wait for its next request.
    #[arg(long, env = "FLATRENDER_IDLE_TIMEOUT_SECONDS",
          default_value_t = ServerLimits::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_seconds: u64,
    /// Public API requests per second per tenant (bursts of twice that).
    #[arg(long, env = "FLATRENDER_RATE_LIMIT_PER_SECOND", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_per_second: u32,
    /// Bearer token `GET /metrics` asks for (none: it answers anyone who
    /// reaches it; keep it behind your balancer then). A secret: never
    /// shown or logged.
    #[arg(long, env = "FLATRENDER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Deliver webhooks to private, loopback and link-local addresses too
    /// (a farm's own receivers); refused by default.
    #[arg(long, env = "FLATRENDER_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Seconds a webhook receiver may take to answer.
    #[arg(long, env = "FLATRENDER_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_seconds: u64,
    /// RabbitMQ to publish every event to, e.g.
    /// `amqp://user:password@host:5672/%2f` (none: no relay). A secret:
    /// never shown or logged.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// The durable topic exchange the relay publishes to.
    #[arg(long, env = "FLATRENDER_AMQP_EXCHANGE", default_value = relay::DEFAULT_EXCHANGE)]
    pub amqp_exchange: String,
    /// Tokens of the public API.
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Storage.
    #[command(flatten)]
    pub storage: StorageConfig,
}

impl ServeConfig {
    /// The public API's authentication.
    pub fn auth(&self) -> anyhow::Result<std::sync::Arc<crate::public::auth::Auth>> {
        Ok(crate::public::auth::Auth::new(
            self.jwt.load(&self.storage.data_dir)?,
            crate::public::auth::RateLimit::new(
                self.rate_limit_per_second,
                self.rate_limit_per_second.saturating_mul(2),
            ),
        ))
    }

    /// How webhooks are delivered.
    pub fn webhooks(&self) -> crate::webhooks::WebhookConfig {
        crate::webhooks::WebhookConfig {
            allow_private: self.webhook_allow_private,
            timeout: Duration::from_secs(self.webhook_timeout_seconds),
            ..crate::webhooks::WebhookConfig::default()
        }
    }

    /// The scheduler's settings.
    pub fn orchestrator(&self) -> orchestrator::Config {
        orchestrator::Config {
            lease_ttl: chrono::Duration::seconds(self.lease_seconds),
            offline_after: chrono::Duration::seconds(self.offline_after_seconds),
            ..orchestrator::Config::default()
        }
    }

    /// The HTTP server's limits.
    pub fn server_limits(&self) -> ServerLimits {
        ServerLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            ..ServerLimits::default()
        }
    }
}
