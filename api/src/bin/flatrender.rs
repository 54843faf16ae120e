//! `flatrender`: wires configuration to running services.

use std::io::Write;
use std::process::ExitCode;

use api::config::{ServeConfig, StorageConfig};
use api::files::BlobStore;
use api::studio::{Client, ClientArgs, SubmitArgs};
use clap::{Parser, Subcommand};
use eventstore::ExportScope;
use tracing_subscriber::EnvFilter;

/// Prints a line to standard output; a reader that went away (`| head`)
/// ends the output, not the program with a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// FlatRender: event-sourced render orchestration.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

#[derive(Debug, Subcommand)]
enum UserCommand {
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
        /// `admin`, `member` or `auditor`.
        #[arg(long, default_value = "member", value_parser = ["admin", "member", "auditor"])]
        role: String,
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
enum TokenCommand {
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
enum ProjectionsCommand {
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
enum TenantCommand {
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
struct RenderRef {
    /// The render's id.
    id: uuid::Uuid,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum RenderCommand {
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
enum FileCommand {
    /// Upload a scene (`.json` builtin scene or `.blend`); prints its metadata.
    Upload {
        /// The file.
        path: std::path::PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
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
enum AuditCommand {
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flatrender: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(config) => {
            let store = config.storage.open_store().await?;
            let blobs = BlobStore::open(
                &config.storage.data_dir.join("blobs"),
                config.max_upload_bytes,
            )
            .await?;
            let auth = config.auth()?;
            let state = api::AppState::open(
                store,
                blobs,
                std::sync::Arc::new(eventstore::SystemClock),
                config.orchestrator(),
            )
            .await?
            .with_auth(auth)
            .with_log_cap(config.task_log_cap_bytes);
            let read_models = api::read_models::ReadModels::spawn(&state.store);
            let follower = state.orchestrator.spawn_follower();
            let ticker = state
                .orchestrator
                .spawn_ticker(std::time::Duration::from_secs(1));
            let app = api::router(state);
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            tracing::info!(address = %listener.local_addr()?, "flatrender listening");
            api::server::serve(listener, app, config.server_limits(), shutdown_signal()).await?;
            follower.abort();
            ticker.abort();
            read_models.stop().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    weight,
                    max_running_tasks,
                    credit_minor,
                    storage,
                },
        } => {
            let orch = open_orchestrator(&storage).await?;
            let id =
                api::seed::tenant(&orch, &name, weight, max_running_tasks, credit_minor).await?;
            say!("tenant_id = \"{id}\"");
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { command } => render_command(command).await,
        Command::File {
            command: FileCommand::Upload { path, client },
        } => {
            let file = Client::new(&client)?.upload(&path).await?;
            say!("{}", serde_json::to_string_pretty(&file)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant {
            command: TenantCommand::Show { client },
        } => {
            let client = Client::new(&client)?;
            let tenant = client.get("/v1/tenant").await?;
            let usage = client.get("/v1/tenant/usage").await?;
            say!("{}", serde_json::to_string_pretty(&tenant)?);
            for day in usage["items"].as_array().into_iter().flatten() {
                say!(
                    "{}  {:>6} tasks  {:>8} s  {:>10} minor",
                    day["day"].as_str().unwrap_or(""),
                    day["tasks"],
                    day["render_seconds"],
                    day["charged_minor"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command:
                UserCommand::Create {
                    tenant,
                    email,
                    name,
                    role,
                    storage,
                },
        } => {
            let store = storage.open_store().await?;
            let role: domain::identity::Role = serde_json::from_value(serde_json::json!(role))?;
            let user = api::users::create(
                &store,
                domain::TenantId::new(tenant)?,
                &email,
                name.as_deref().unwrap_or(&email),
                role,
                chrono::Utc::now(),
            )
            .await?;
            say!("user_id = \"{user}\"");
            Ok(ExitCode::SUCCESS)
        }
        Command::User {
            command: UserCommand::Remove { user, storage },
        } => {
            let store = storage.open_store().await?;
            api::users::remove(&store, domain::UserId::new(user)?, chrono::Utc::now()).await?;
            say!("removed {user}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command:
                TokenCommand::Issue {
                    user,
                    lifetime_seconds,
                    jwt,
                    storage,
                },
        } => {
            let jwt = jwt.load(&storage.data_dir)?;
            let store = storage.open_store().await?;
            let (identity, _) = api::users::load(&store, user).await?;
            let registered = identity
                .user()
                .filter(|_| identity.is_active())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no active user {user}: create one with `flatrender user create`"
                    )
                })?;
            let token = jwt
                .issue(
                    user,
                    registered.tenant_id.as_uuid(),
                    registered.role,
                    chrono::Duration::seconds(lifetime_seconds),
                )
                .ok_or_else(|| anyhow::anyhow!("only an HS256 secret can issue tokens"))?;
            say!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild { name, storage },
        } => {
            let store = storage.open_store().await?;
            let started = std::time::Instant::now();
            let applied = api::read_models::rebuild(&store, name.as_deref()).await?;
            say!(
                "rebuilt {} from {applied} events in {:.1} s",
                name.as_deref().unwrap_or("every projection"),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Projections {
            command: ProjectionsCommand::Status(storage),
        } => {
            let store = storage.open_store().await?;
            for lag in api::read_models::status(&store).await? {
                say!(
                    "{:<8} position {:>12}  head {:>12}  {} events behind  {:.1} s behind",
                    lag.name,
                    lag.position,
                    lag.head,
                    lag.events_behind,
                    lag.seconds_behind
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            let code = node_agent::config::main_with(args).await;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Demo(config) => {
            let exe = std::env::current_exe()?;
            let summary = api::demo::run(config, &exe).await?;
            say!();
            say!(
                "Rendered {} frames in {:.1} s",
                summary.frames,
                summary.elapsed.as_secs_f64()
            );
            for (node, frames) in &summary.frames_by_node {
                say!("  {node}: {frames} frames");
            }
            say!(
                "Charged {} render-seconds = {} minor units",
                summary.charged_seconds,
                summary.charged_minor
            );
            say!(
                "Audit: {} events in {} streams, every hash chain, version and payload verified",
                summary.events,
                summary.streams
            );
            say!("Frames: {}", summary.run_dir.join("frames").display());
            say!(
                "Contact sheet: {}",
                summary.run_dir.join("contact_sheet.png").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify(storage),
        } => {
            let store = storage.open_store().await?;
            let report = api::audit::verify(&store, |n| eprint!("\rverified {n} events")).await?;
            eprintln!();
            for problem in &report.problems {
                say!("PROBLEM {problem}");
            }
            say!(
                "{} events in {} streams up to position {}: {}",
                report.events,
                report.streams,
                report.last_position,
                if report.is_clean() {
                    "all hash chains, versions and payloads verify"
                } else {
                    "PROBLEMS FOUND"
                }
            );
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Node {
            command: NodeCommand::Enroll { name, storage },
        } => {
            let store = storage.open_store().await?;
            let enrolment = api::enroll::enrol(&store, &name, chrono::Utc::now()).await?;
            say!("node_id = \"{}\"", enrolment.node_id);
            say!("key_id = \"{}\"", enrolment.key_id);
            say!("secret = \"{}\"", enrolment.secret_hex);
            eprintln!(
                "Copy these into the node's configuration now: the secret is not shown again."
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command:
                AuditCommand::Export {
                    tenant,
                    stream,
                    storage,
                },
        } => {
            let store = storage.open_store().await?;
            let scope = match (tenant, stream) {
                (Some(t), _) => ExportScope::Tenant(t),
                (_, Some(s)) => ExportScope::Stream(s),
                _ => ExportScope::All,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = eventstore::export_jsonl(&store, scope, &mut out).await?;
            out.flush()?;
            eprintln!("exported {n} events");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn render_command(command: RenderCommand) -> anyhow::Result<ExitCode> {
    let ended = |r: &serde_json::Value| {
        if r["status"] == "completed" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match command {
        RenderCommand::Submit {
            render,
            watch,
            client,
        } => {
            let client = Client::new(&client)?;
            let submitted = client.submit(&render).await?;
            let id = submitted["id"].as_str().unwrap_or_default().to_string();
            say!("render_id = \"{id}\"");
            if submitted["schedulable"] == false {
                eprintln!(
                    "note: {}",
                    submitted["unschedulable_reason"]
                        .as_str()
                        .unwrap_or("no node can run it yet")
                );
            }
            if watch {
                let last = client.watch(&id).await?;
                return Ok(ended(&last));
            }
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::List {
            status,
            page,
            page_size,
            client,
        } => {
            let mut path = format!("/v1/renders?page={page}&page_size={page_size}");
            if let Some(s) = status {
                path.push_str(&format!("&status={s}"));
            }
            let list = Client::new(&client)?.get(&path).await?;
            for r in list["items"].as_array().into_iter().flatten() {
                say!("{}", api::studio::render_line(r));
            }
            eprintln!("page {}, {} renders in all", list["page"], list["total"]);
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::Show(r) => {
            let render = Client::new(&r.client)?
                .get(&format!("/v1/renders/{}", r.id))
                .await?;
            say!("{}", serde_json::to_string_pretty(&render)?);
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::Watch(r) => {
            let last = Client::new(&r.client)?.watch(&r.id.to_string()).await?;
            say!("{}: {}", r.id, last["status"].as_str().unwrap_or(""));
            Ok(ended(&last))
        }
        RenderCommand::Logs {
            render,
            task,
            attempt,
            tail,
            follow,
        } => {
            let client = Client::new(&render.client)?;
            let id = render.id.to_string();
            let mut out = std::io::stdout().lock();
            if follow {
                let task = task.map(|t| t.to_string());
                client.follow_logs(&id, task.as_deref(), &mut out).await?;
            } else {
                let task =
                    task.ok_or_else(|| anyhow::anyhow!("--task is required without --follow"))?;
                client
                    .print_log(&id, &task.to_string(), attempt, tail, &mut out)
                    .await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::Pause(r) => control(r, "pause").await,
        RenderCommand::Resume(r) => control(r, "resume").await,
        RenderCommand::Cancel(r) => control(r, "cancel").await,
        RenderCommand::Retry(r) => control(r, "retry").await,
        RenderCommand::Priority { render, priority } => {
            let answer = Client::new(&render.client)?
                .post(
                    &format!("/v1/renders/{}/priority", render.id),
                    Some(&serde_json::json!({ "priority": priority })),
                    None,
                )
                .await?;
            say!(
                "{}: {} at priority {priority}",
                render.id,
                answer["status"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        RenderCommand::Download { render, out } => {
            let n = Client::new(&render.client)?
                .download(&render.id.to_string(), &out)
                .await?;
            say!("{n} frames in {}, every SHA-256 checked", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn control(r: RenderRef, verb: &str) -> anyhow::Result<ExitCode> {
    let answer = Client::new(&r.client)?
        .post(&format!("/v1/renders/{}/{verb}", r.id), None, None)
        .await?;
    say!("{}: {}", r.id, answer["status"].as_str().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}

async fn open_orchestrator(storage: &StorageConfig) -> anyhow::Result<orchestrator::Orchestrator> {
    let store = storage.open_store().await?;
    Ok(orchestrator::Orchestrator::open(
        store,
        std::sync::Arc::new(eventstore::SystemClock),
        orchestrator::Config::default(),
    )
    .await?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
