//! `flatrender`: wires configuration to running services.

use std::io::Write;
use std::process::ExitCode;

use api::config::StorageConfig;
use api::files::BlobStore;
use api::studio::Client;
use clap::Parser;
use eventstore::ExportScope;
use tracing_subscriber::EnvFilter;

use cli::{
    AuditCommand, Cli, Command, FileCommand, NodeCommand, ProjectionsCommand, SecretsCommand,
    TenantCommand, TokenCommand, UserCommand,
};

/// Prints a line to standard output; a reader that went away (`| head`)
/// ends the output, not the program with a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[path = "flatrender/cli.rs"]
mod cli;
#[path = "flatrender/render.rs"]
mod render;

#[tokio::main]
async fn main() -> ExitCode {
    // `FLATRENDER_LOG_FORMAT=json`: one JSON object per line (for log
    // collectors); otherwise lines for people.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("FLATRENDER_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
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
            let blobs = match &config.blob_url {
                Some(url) => blobs.with_remote(api::files::object_storage(url)?),
                None => blobs,
            };
            tracing::info!(blobs = %blobs.describe(), "blob storage");
            let auth = config.auth()?;
            let vault = config.storage.vault()?;
            let resealed = store.reseal_secrets(&vault).await?;
            if resealed > 0 {
                tracing::info!(resealed, key = %vault.current_id(), "sealed stored secrets under the current master key");
            }
            let state = api::AppState::open(
                store,
                blobs,
                std::sync::Arc::new(eventstore::SystemClock),
                config.orchestrator(),
            )
            .await?
            .with_auth(auth)
            .with_log_cap(config.task_log_cap_bytes)
            .with_vault(vault)
            .with_webhooks(config.webhooks())
            .with_metrics_token(config.metrics_token.clone());
            let broker = config.amqp_url.as_deref().map(|url| {
                std::sync::Arc::new(api::broker::Broker::spawn(
                    &state.store,
                    url,
                    &config.amqp_exchange,
                ))
            });
            let state = match &broker {
                Some(b) => state.with_broker(b.clone()),
                None => state,
            };
            let read_models = api::read_models::ReadModels::spawn(&state.store);
            let (stop_webhooks, webhooks_stopped) = tokio::sync::watch::channel(false);
            let webhooks = state
                .dispatcher
                .clone()
                .map(|d| tokio::spawn(d.run(webhooks_stopped)));
            let follower = state.orchestrator.spawn_follower();
            let ticker = state
                .orchestrator
                .spawn_ticker(std::time::Duration::from_secs(1));
            let snapshots = (config.snapshot_seconds > 0).then(|| {
                state.orchestrator.spawn_snapshotter(
                    std::time::Duration::from_secs(config.snapshot_seconds),
                    config.snapshot_min_events,
                )
            });
            let orchestrator = state.orchestrator.clone();
            let app = api::router(state);
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            tracing::info!(address = %listener.local_addr()?, "flatrender listening");
            api::server::serve(listener, app, config.server_limits(), shutdown_signal()).await?;
            follower.abort();
            ticker.abort();
            if let Some(task) = snapshots {
                task.abort();
                // The next start replays only what comes after this.
                if let Err(e) = orchestrator.write_snapshot().await {
                    tracing::warn!(error = %e, "writing a snapshot of the view at shutdown failed");
                }
            }
            read_models.stop().await;
            let _ = stop_webhooks.send(true);
            if let Some(task) = webhooks {
                let _ = task.await;
            }
            if let Some(broker) = broker {
                broker.stop().await;
            }
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
        Command::Render { command } => render::render_command(command).await,
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
                    password_stdin,
                    storage,
                },
        } => {
            // The password first: a bad one registers nobody.
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                let line = line.trim_end_matches(['\r', '\n']).to_string();
                let chars = line.chars().count();
                if !(api::users::MIN_PASSWORD_CHARS..=1024).contains(&chars) {
                    anyhow::bail!(
                        "a password has {} to 1024 characters",
                        api::users::MIN_PASSWORD_CHARS
                    );
                }
                Some(line)
            } else {
                None
            };
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
            if let Some(password) = password {
                api::users::set_password(&store, user.as_uuid(), &password, chrono::Utc::now())
                    .await?;
            }
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
        Command::Secrets {
            command: SecretsCommand::NewKey,
        } => {
            say!("{}", eventstore::MasterKey::generate()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Secrets {
            command: SecretsCommand::Reseal(storage),
        } => {
            let store = storage.open_store().await?;
            let vault = storage.vault()?;
            let resealed = store.reseal_secrets(&vault).await?;
            say!(
                "sealed {resealed} stored secrets under master key {}",
                vault.current_id()
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
            if let Some(kept) = summary.kept {
                say!();
                say!("Monitor: {}", kept.monitor_url);
                say!("Server:  {}", kept.server_url);
                say!(
                    "Sign in as {} with the password {}",
                    kept.sign_in.0,
                    kept.sign_in.1
                );
                say!("or with this operator's token (valid 7 days):");
                say!("{}", kept.token);
                say!("Serving until Ctrl-C.");
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                kept.stop().await;
            }
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
            let vault = storage.vault()?;
            let enrolment = api::enroll::enrol(&store, &vault, &name, chrono::Utc::now()).await?;
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
