//! The agent's typed configuration: a TOML file, overridden by flags and
//! `FLATRENDER_*` environment variables. The secret never travels on the
//! command line (it would show in `ps`): it comes from
//! `FLATRENDER_NODE_SECRET` or from the file named by `secret_file`.

use std::path::PathBuf;
use std::time::Duration;

use contracts::node_signing::NodeSecret;
use serde::Deserialize;
use uuid::Uuid;

use crate::agent::{Agent, AgentError, AgentSettings, Backoff, RunSummary};
use crate::client::{AgentClient, ServerUrlError, ServerUrls};
use crate::renderer::Renderers;
use crate::renderer::blender::{BlenderConfig, BlenderRenderer};
use crate::renderer::builtin::BuiltinRenderer;

/// Flags (each also read from its environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// A TOML file with any of the settings below, keys spelled with `_`
    /// (`server_url`, or `server_urls = [...]` for several; `secret_file`
    /// names a file holding the secret); flags and variables win.
    #[arg(long, env = "FLATRENDER_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The orchestrator, e.g. `http://127.0.0.1:8080`. Name several
    /// instances by repeating the flag or separating URLs with commas: on a
    /// connection failure, a timeout or a 502/503/504 the next request goes
    /// to the next URL, and the agent stays on one that works. Plain
    /// `http://` only (this build has no TLS).
    #[arg(
        long,
        env = "FLATRENDER_SERVER_URL",
        value_name = "URL[,URL…]",
        value_delimiter = ','
    )]
    pub server_url: Vec<String>,
    /// The node id printed by `flatrender node enroll`.
    #[arg(long, env = "FLATRENDER_NODE_ID")]
    pub node_id: Option<Uuid>,
    /// The key id printed by `flatrender node enroll`.
    #[arg(long, env = "FLATRENDER_KEY_ID")]
    pub key_id: Option<Uuid>,
    /// Where inputs are cached and frames rendered.
    #[arg(long, env = "FLATRENDER_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The Blender executable; without it the node offers only `builtin`.
    #[arg(long, env = "FLATRENDER_BLENDER")]
    pub blender: Option<PathBuf>,
    /// The node's price class.
    #[arg(long, env = "FLATRENDER_NODE_CLASS")]
    pub node_class: Option<String>,
    /// Tags matched against job requirements (comma-separated).
    #[arg(long, env = "FLATRENDER_NODE_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Seconds between heartbeats.
    #[arg(long, env = "FLATRENDER_HEARTBEAT_SECONDS")]
    pub heartbeat_seconds: Option<u64>,
    /// Exit after this many tasks (tests, benchmarks).
    #[arg(long)]
    pub max_tasks: Option<usize>,
}

/// The config file's keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// One orchestrator URL (or several, comma-separated); see
    /// [`NodeArgs::server_url`].
    pub server_url: Option<String>,
    /// Several orchestrator URLs, in failover order (after `server_url` if
    /// both are given).
    pub server_urls: Option<Vec<String>>,
    /// See [`NodeArgs::node_id`].
    pub node_id: Option<Uuid>,
    /// See [`NodeArgs::key_id`].
    pub key_id: Option<Uuid>,
    /// A file holding the secret's 64 hex digits.
    pub secret_file: Option<PathBuf>,
    /// See [`NodeArgs::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`NodeArgs::blender`].
    pub blender: Option<PathBuf>,
    /// See [`NodeArgs::node_class`].
    pub node_class: Option<String>,
    /// See [`NodeArgs::tags`].
    pub tags: Option<Vec<String>>,
    /// See [`NodeArgs::heartbeat_seconds`].
    pub heartbeat_seconds: Option<u64>,
}

/// A bad or missing setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("{0} is required (flag, FLATRENDER_* variable or config file)")]
    Missing(&'static str),
    /// The config file is unreadable or not valid TOML of the right shape.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The secret is not 64 hex digits.
    #[error("the node secret must be 64 hex digits (32 bytes)")]
    Secret,
    /// A server URL the agent cannot use.
    #[error(transparent)]
    ServerUrl(ServerUrlError),
}

/// A complete, checked configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The orchestrator instances, in failover order.
    pub server_urls: ServerUrls,
    /// This node.
    pub node_id: Uuid,
    /// Its key.
    pub key_id: Uuid,
    /// Its secret.
    pub secret: NodeSecret,
    /// Cache and work directory.
    pub data_dir: PathBuf,
    /// Blender, if configured.
    pub blender: Option<PathBuf>,
    /// Price class.
    pub node_class: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Stop after this many tasks.
    pub max_tasks: Option<usize>,
}

impl NodeConfig {
    /// Merges flags/variables over the file; `secret_hex` is
    /// `FLATRENDER_NODE_SECRET` if set.
    pub fn resolve(args: NodeArgs, secret_hex: Option<String>) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let secret_hex = match (secret_hex, &file.secret_file) {
            (Some(s), _) => s,
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?,
            (None, None) => return Err(ConfigError::Missing("FLATRENDER_NODE_SECRET")),
        };
        let secret = NodeSecret::from_hex(secret_hex.trim()).map_err(|_| ConfigError::Secret)?;
        let urls: Vec<String> = if args.server_url.is_empty() {
            file.server_url
                .into_iter()
                .chain(file.server_urls.into_iter().flatten())
                .collect()
        } else {
            args.server_url
        };
        let server_urls = ServerUrls::parse(&urls).map_err(|e| match e {
            ServerUrlError::Empty => ConfigError::Missing("server_url"),
            invalid => ConfigError::ServerUrl(invalid),
        })?;
        Ok(Self {
            server_urls,
            node_id: args
                .node_id
                .or(file.node_id)
                .ok_or(ConfigError::Missing("node_id"))?,
            key_id: args
                .key_id
                .or(file.key_id)
                .ok_or(ConfigError::Missing("key_id"))?,
            secret,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("flatrender-node-data")),
            blender: args.blender.or(file.blender),
            node_class: args
                .node_class
                .or(file.node_class)
                .unwrap_or_else(|| "standard".into()),
            tags: if args.tags.is_empty() {
                file.tags.unwrap_or_default()
            } else {
                args.tags
            },
            heartbeat: Duration::from_secs(
                args.heartbeat_seconds
                    .or(file.heartbeat_seconds)
                    .unwrap_or(5)
                    .clamp(1, 300),
            ),
            max_tasks: args.max_tasks,
        })
    }

    /// The renderers this machine is configured to run.
    pub fn renderers(&self) -> Renderers {
        let mut renderers = Renderers::new();
        renderers.register(Box::new(BuiltinRenderer::new()));
        if let Some(blender) = &self.blender {
            renderers.register(Box::new(BlenderRenderer::new(BlenderConfig::new(
                blender.clone(),
            ))));
        }
        renderers
    }

    /// The capabilities reported at registration.
    pub fn capabilities(&self, renderers: &Renderers) -> serde_json::Value {
        let detected = crate::capabilities::detect();
        serde_json::json!({
            "cores": detected.cores.max(1),
            "memory_bytes": detected.memory_bytes,
            "gpus": detected.gpus,
            "renderers": renderers
                .names()
                .map(|name| serde_json::json!({ "name": name, "version": "1" }))
                .collect::<Vec<_>>(),
            "tags": self.tags,
            "node_class": self.node_class,
        })
    }

    /// Runs the agent until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<RunSummary, AgentError> {
        let renderers = self.renderers();
        let settings = AgentSettings {
            data_dir: std::path::absolute(&self.data_dir).unwrap_or(self.data_dir.clone()),
            capabilities: self.capabilities(&renderers),
            heartbeat_every: self.heartbeat,
            claim_wait_seconds: 20,
            max_tasks: self.max_tasks,
            backoff: Backoff::DEFAULT,
            give_up_after: AgentSettings::GIVE_UP_AFTER,
        };
        let client =
            AgentClient::with_servers(self.server_urls, self.node_id, self.key_id, self.secret);
        Agent::new(client, renderers, settings).run(shutdown).await
    }
}

/// Resolves when the process gets SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The whole `flatrender-node` program after argument parsing: returns the
/// process exit code.
pub async fn main_with(args: NodeArgs) -> i32 {
    let secret = std::env::var("FLATRENDER_NODE_SECRET").ok();
    let config = match NodeConfig::resolve(args, secret) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flatrender-node: {e}");
            return 2;
        }
    };
    tracing::info!(node_id = %config.node_id, servers = %config.server_urls, "node agent starting");
    match config.run(shutdown_signal()).await {
        Ok(summary) => {
            tracing::info!(?summary, "node agent stopped");
            0
        }
        Err(e) => {
            eprintln!("flatrender-node: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    const SECRET: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn resolve(argv: &[&str]) -> Result<NodeConfig, ConfigError> {
        let mut full = vec![
            "flatrender-node",
            "--node-id",
            "8c5d1f5e-3b0a-4c55-9a53-0d6b6f1e2a77",
        ];
        full.extend(["--key-id", "2f6a8e1c-7d4b-4e0f-b1a2-5c3d9e8f7a61"]);
        full.extend(argv);
        let args = Cli::try_parse_from(full).unwrap().node;
        NodeConfig::resolve(args, Some(SECRET.into()))
    }

    fn urls(config: &NodeConfig) -> Vec<&str> {
        config
            .server_urls
            .as_slice()
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn server_urls_come_from_repeated_and_comma_separated_flags() {
        let config = resolve(&[
            "--server-url",
            "http://a:8080,http://b:8080/",
            "--server-url",
            "http://c:8080",
        ])
        .unwrap();
        assert_eq!(
            urls(&config),
            ["http://a:8080", "http://b:8080", "http://c:8080"]
        );
    }

    #[test]
    fn server_urls_come_from_the_file_unless_flags_name_some() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "server_url = \"http://a:8080\"\nserver_urls = [\"http://b:8080\", \"http://c:8080\"]\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let config = resolve(&["--config", file]).unwrap();
        assert_eq!(
            urls(&config),
            ["http://a:8080", "http://b:8080", "http://c:8080"]
        );
        let config = resolve(&["--config", file, "--server-url", "http://d:8080"]).unwrap();
        assert_eq!(urls(&config), ["http://d:8080"]);

        std::fs::write(&path, "server_urls = [\"http://b:8080\"]\n").unwrap();
        assert_eq!(
            urls(&resolve(&["--config", file]).unwrap()),
            ["http://b:8080"]
        );
    }

    #[test]
    fn missing_or_unusable_server_urls_are_refused_clearly() {
        let missing = resolve(&[]).unwrap_err();
        assert!(
            matches!(missing, ConfigError::Missing("server_url")),
            "{missing}"
        );
        let empty = resolve(&["--server-url", ","]).unwrap_err();
        assert!(
            matches!(empty, ConfigError::Missing("server_url")),
            "{empty}"
        );
        let bad = resolve(&["--server-url", "http://a:8080,ftp://b:21"]).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "server URL \"ftp://b:21\" must start with http:// (for example http://127.0.0.1:8080)"
        );
        let bare = resolve(&["--server-url", "127.0.0.1:8080"]).unwrap_err();
        assert!(bare.to_string().contains("is not a URL"), "{bare}");
    }
}
