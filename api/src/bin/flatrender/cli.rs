//! The `flatrender` command line: every subcommand and its arguments
//! (`--help` is written from these). The handlers are in `main` (operator
//! commands that open the store, `serve`, `demo`) and `render.rs` (the
//! studio's `render …` commands, clients of the public API).

use api::config::{ServeConfig, StorageConfig};
use api::studio::{ClientArgs, SubmitArgs};
use clap::{Parser, Subcommand};

/// FlatRender: event-sourced render orchestration.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The main job: a real render on local node agents, on the embedded
    /// default (SQLite, local files, no broker), with progress bars, ending
    /// with the frames on disk and a verified audit.
    Demo(api::demo::DemoConfig),
    /// Run the server: node-agent API and scheduler.
    Serve(ServeConfig),
    /// Run a node agent (the same program as `flatrender-node`).
    #[command(hide = true)]
    Agent(node_agent::config::NodeArgs),
    /// Read-only checks of the event log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Render nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Tenants: `create` is an operator command (it opens the store
    /// directly); `show` asks the server.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Renders, through the server's public API (`--server`, token from
    /// `FLATRENDER_TOKEN` or a token file).
    Render {
        #[command(subcommand)]
        command: RenderCommand,
    },
    /// Files, through the server's public API.
    File {
        #[command(subcommand)]
        command: FileCommand,
    },
    /// Users of the public API (operator commands: they open the store
    /// directly).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Access tokens for the public API (operator command: it reads the
    /// server's HS256 secret directly).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read models (operator commands: they open the store directly).
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Secrets at rest: the master key that seals node secrets (operator
    /// commands: they open the store directly).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretsCommand {
    /// Print a new random master key (64 hex digits) to keep in a file
    /// readable by the server only.
    NewKey,
    /// Seal every stored secret under the current master key: after giving
    /// every instance the new key (`--master-key-file`) and the old one
    /// (`--previous-master-key-file`), run this, then drop the old key.
    /// `serve` does it too at every start.
    Reseal(StorageConfig),
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Register a user of a tenant; prints its id.
    Create {
        /// The tenant.
        #[arg(long)]
        tenant: uuid::Uuid,
        /// Its e-mail address.
        #[arg(long)]
        email: String,
        /// Its name for people (default: the e-mail address).
        #[arg(long)]
        name: Option<String>,
        /// `admin`, `member`, `auditor` or `operator` (a member who also
        /// manages the farm's nodes).
        #[arg(long, default_value = "member", value_parser = ["admin", "member", "auditor", "operator"])]
        role: String,
        /// Read a password (one line, at least 12 characters) from standard
        /// input: the user can then sign in with it (`POST /v1/auth/token`,
        /// the web monitor's sign-in page). Never on the command line.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        storage: StorageConfig,
    },
    /// Remove a user: its tokens stop working (within seconds).
    Remove {
        /// The user.
        #[arg(long)]
        user: uuid::Uuid,
        #[command(flatten)]
        storage: StorageConfig,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a token for a user (from `user create`) with the user's
    /// tenant and role (development and scripts; production tokens come
    /// from your identity provider with RS256 or EdDSA).
    Issue {
        /// The user.
        #[arg(long)]
        user: uuid::Uuid,
        /// How long the token is valid, in seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(i64).range(1..=31_536_000))]
        lifetime_seconds: i64,
        #[command(flatten)]
        jwt: api::config::JwtArgs,
        #[command(flatten)]
        storage: StorageConfig,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// Empty a projection's tables and replay the whole log into them
    /// (every projection when no NAME is given: renders, nodes, files).
    /// A running server keeps serving meanwhile; its reads see the rows
    /// come back as the replay goes.
    Rebuild {
        /// `renders`, `nodes` or `files`.
        name: Option<String>,
        #[command(flatten)]
        storage: StorageConfig,
    },
    /// Each projection's checkpoint and how far it is behind the log.
    Status(StorageConfig),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// The caller's tenant: balance, quota, usage per day (asks the server).
    Show {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a tenant with a quota and credit; prints its id (operator
    /// command: opens the store directly).
    Create {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Fair-share weight.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Most tasks running at once.
        #[arg(long, default_value_t = 100)]
        max_running_tasks: u32,
        /// Initial credit in minor units.
        #[arg(long, default_value_t = 100_000)]
        credit_minor: i64,
        #[command(flatten)]
        storage: StorageConfig,
    },
}

/// A render's id and the server.
#[derive(Debug, clap::Args)]
pub(crate) struct RenderRef {
    /// The render's id.
    pub(crate) id: uuid::Uuid,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RenderCommand {
    /// Upload a scene and submit a render of it; prints the render's id.
    Submit {
        #[command(flatten)]
        render: SubmitArgs,
        /// Then follow it until it ends.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The tenant's renders, newest first.
    List {
        /// Only renders in this state.
        #[arg(long, value_parser = ["waiting", "active", "paused", "completed", "failed", "cancelled"])]
        status: Option<String>,
        /// Page (from 1).
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// Renders per page (up to 100).
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One render as JSON.
    Show(RenderRef),
    /// Follows the render live over the WebSocket until it ends (exit
    /// status 1 unless it completed).
    Watch(RenderRef),
    /// A task's log (every attempt, or one), or with `--follow` new lines
    /// of the render's tasks as they arrive; control characters are shown
    /// escaped, never passed to the terminal.
    Logs {
        #[command(flatten)]
        render: RenderRef,
        /// The task (see `render show` or `GET /v1/renders/{id}/tasks`);
        /// without it, `--follow` prints every task's lines.
        #[arg(long)]
        task: Option<uuid::Uuid>,
        /// One attempt (the lease epoch); default every attempt.
        #[arg(long)]
        attempt: Option<u32>,
        /// Only the last N lines of each attempt.
        #[arg(long)]
        tail: Option<usize>,
        /// Print new lines as they arrive, until the render ends.
        #[arg(long)]
        follow: bool,
    },
    /// No new tasks start; running ones finish.
    Pause(RenderRef),
    /// A paused render gets nodes again.
    Resume(RenderRef),
    /// The render takes no more work.
    Cancel(RenderRef),
    /// Queue every failed task again.
    Retry(RenderRef),
    /// Change the priority (0 to 100, higher first) of an active or paused render.
    Priority {
        #[command(flatten)]
        render: RenderRef,
        /// The new priority.
        #[arg(long)]
        priority: u8,
    },
    /// Write every frame to a folder, each checked by SHA-256.
    Download {
        #[command(flatten)]
        render: RenderRef,
        /// The folder.
        #[arg(long, default_value = "frames")]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FileCommand {
    /// Upload a scene (`.json` builtin scene or `.blend`); prints its metadata.
    Upload {
        /// The file.
        path: std::path::PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Create a node id and secret; prints them once.
    Enroll {
        /// The operator's name for the machine.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        storage: StorageConfig,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify every stream's versions and hash chain and every payload.
    Verify(StorageConfig),
    /// Write history as JSON Lines to standard output.
    Export {
        /// Only this tenant's events.
        #[arg(long, conflicts_with = "stream")]
        tenant: Option<uuid::Uuid>,
        /// Only this stream's events.
        #[arg(long)]
        stream: Option<uuid::Uuid>,
        #[command(flatten)]
        storage: StorageConfig,
    },
}
