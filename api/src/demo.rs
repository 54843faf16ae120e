//! `flatrender demo`: the main job on the embedded default. Starts the
//! server, enrols and starts node agents as separate processes talking
//! signed HTTP, uploads the bundled scene, renders it with live progress,
//! writes the frames and a contact sheet, and verifies the whole log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use eventstore::{AnyStore, EventStore, Subscription};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use uuid::Uuid;

use crate::files::BlobStore;

/// Settings of `flatrender demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoConfig {
    /// Where the run's store, files and frames go (a new folder per run inside).
    #[arg(long, default_value = "flatrender-demo")]
    pub dir: PathBuf,
    /// How many node agents to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub nodes: u32,
    /// Frames per task.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=48))]
    pub chunk_size: u32,
    /// Hide the progress bars (plain log lines instead).
    #[arg(long)]
    pub quiet: bool,
    /// Keep the server and its agents running after the render, with the
    /// web monitor and an operator's token printed, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Where the server listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
}

/// What `--keep` keeps running: dropped (or [`Kept::stop`]ped), it stops.
pub struct Kept {
    /// The monitor's address, e.g. `http://127.0.0.1:43121/monitor/`.
    pub monitor_url: String,
    /// The server's base URL.
    pub server_url: String,
    /// A token of the demo tenant's operator (valid for 7 days).
    pub token: String,
    /// The operator's e-mail address and (random) password, for the
    /// monitor's sign-in page.
    pub sign_in: (String, String),
    agents: Agents,
    ticker: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    read_models: crate::read_models::ReadModels,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Kept")
            .field("monitor_url", &self.monitor_url)
            .finish_non_exhaustive()
    }
}

impl Kept {
    /// Stops the agents (gracefully), the read models and the server.
    pub async fn stop(mut self) {
        for child in &mut self.agents.0 {
            terminate(child);
        }
        for child in &mut self.agents.0 {
            let _ = child.wait();
        }
        self.agents.0.clear();
        self.read_models.stop().await;
        self.ticker.abort();
        self.server.abort();
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoSummary {
    /// The run's folder.
    pub run_dir: PathBuf,
    /// Frames written.
    pub frames: usize,
    /// Frames per node (by node name).
    pub frames_by_node: BTreeMap<String, u64>,
    /// Render-seconds charged and amount in minor units.
    pub charged_seconds: u64,
    /// Amount charged in minor units.
    pub charged_minor: i64,
    /// Events in the log, all verified.
    pub events: u64,
    /// Streams verified.
    pub streams: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// With `--keep`: what still runs.
    pub kept: Option<Kept>,
}

struct Agents(Vec<std::process::Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn terminate(child: &mut std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Runs the demo; `agent_exe` is the program started (with `agent` and
/// flags) as each node agent.
pub async fn run(config: DemoConfig, agent_exe: &Path) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let stamp = chrono::Utc::now()
        .format("run-%Y%m%d-%H%M%S-%3f")
        .to_string();
    let run_dir = std::path::absolute(config.dir.join(stamp))?;
    let data_dir = run_dir.join("data");
    let frames_dir = run_dir.join("frames");
    std::fs::create_dir_all(&frames_dir)
        .with_context(|| format!("creating {}", frames_dir.display()))?;

    // The server, on the embedded default.
    let store = AnyStore::open(None, &data_dir).await?;
    let blobs = BlobStore::open(&data_dir.join("blobs"), 64 * 1024 * 1024).await?;
    let clock: Arc<dyn eventstore::Clock> = Arc::new(eventstore::SystemClock);
    let orchestration = orchestrator::Config {
        lease_ttl: chrono::Duration::seconds(10),
        offline_after: chrono::Duration::seconds(6),
        ..orchestrator::Config::default()
    };
    // The public API (and so the monitor) takes tokens signed with the
    // run's own secret.
    let jwt = crate::public::auth::Jwt::hs256_file(
        &data_dir.join("jwt-secret"),
        crate::public::auth::ISSUER,
        crate::public::auth::AUDIENCE,
    )?;
    let auth =
        crate::public::auth::Auth::new(jwt.clone(), crate::public::auth::RateLimit::default());
    let vault = crate::secrets::data_dir_key(&data_dir).map(eventstore::Vault::new)?;
    let state = crate::AppState::open(store.clone(), blobs.clone(), clock, orchestration)
        .await?
        .with_auth(auth)
        .with_vault(vault.clone());
    let orch = state.orchestrator.clone();
    let ticker = orch.spawn_ticker(Duration::from_millis(500));
    let read_models = crate::read_models::ReadModels::spawn(&store);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let address = listener.local_addr()?;
    let server = eventstore::task::spawn_named("demo-server", async move {
        let limits = crate::server::ServerLimits::default();
        let _ = crate::server::serve(
            listener,
            crate::router(state),
            limits,
            std::future::pending(),
        )
        .await;
    });

    // Node agents: enrolled here, started as processes, the secret passed
    // in their environment (never on the command line).
    let mut agents = Agents(Vec::new());
    let mut node_names = BTreeMap::new();
    for n in 1..=config.nodes {
        let name = format!("demo-node-{n}");
        let enrolment = crate::enroll::enrol(&store, &vault, &name, chrono::Utc::now()).await?;
        node_names.insert(enrolment.node_id, name.clone());
        let node_dir = run_dir.join("nodes").join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let log = std::fs::File::create(node_dir.join("agent.log"))?;
        let child = std::process::Command::new(agent_exe)
            .arg("agent")
            .arg("--server-url")
            .arg(format!("http://{address}"))
            .arg("--node-id")
            .arg(enrolment.node_id.to_string())
            .arg("--key-id")
            .arg(enrolment.key_id.to_string())
            .arg("--data-dir")
            .arg(&node_dir)
            .arg("--heartbeat-seconds")
            .arg("1")
            .env("FLATRENDER_NODE_SECRET", &enrolment.secret_hex)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", agent_exe.display()))?;
        agents.0.push(child);
    }

    // A tenant with credit, the bundled scene, and the render.
    let tenant_id = crate::seed::tenant(&orch, "Demo Studio", 1, 100, 1_000_000).await?;
    let scene = node_agent::renderer::builtin::DEMO_SCENE.as_bytes();
    let scene_file_id = crate::seed::scene(&orch, &blobs, tenant_id, "demo.json", scene).await?;
    let frames = node_agent::renderer::builtin::DEMO_FRAMES;
    let render = crate::seed::Render {
        frames: (*frames.start(), *frames.end()),
        chunk_size: config.chunk_size,
        ..crate::seed::Render::default()
    };
    let job_id = crate::seed::submit(&orch, tenant_id, scene_file_id, &render).await?;
    let total = u64::from(frames.end() - frames.start() + 1);

    // Follow the log: frames per node, outputs, charges.
    let bars = MultiProgress::new();
    if config.quiet {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style =
        ProgressStyle::with_template("{prefix:>12} [{bar:40.cyan/blue}] {pos:>3}/{len} {msg}")?
            .progress_chars("=> ");
    let overall = bars.add(ProgressBar::new(total));
    overall.set_style(style.clone());
    overall.set_prefix("all frames");
    let mut node_bars: BTreeMap<Uuid, ProgressBar> = BTreeMap::new();
    for (id, name) in &node_names {
        let bar = bars.add(ProgressBar::new(total));
        bar.set_style(style.clone());
        bar.set_prefix(name.clone());
        node_bars.insert(*id, bar);
    }
    let mut log =
        Subscription::new(store.clone(), 0).with_poll_interval(Duration::from_millis(100));
    // Every stored output by file id; the frames' current ones are chosen
    // at the end (a frame re-rendered under a later lease supersedes).
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    let mut frames_by_node: BTreeMap<Uuid, u64> = BTreeMap::new();
    let (mut charged_seconds, mut charged_minor) = (0u64, 0i64);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let batch = tokio::time::timeout(Duration::from_millis(500), log.next_batch()).await;
        if let Ok(batch) = batch {
            for event in batch? {
                let p = &event.payload;
                match event.routing_key.as_str() {
                    "render.task.progressed.v1" if p["job_id"] == job_id.to_string() => {
                        if let Some(node) = p["node_id"].as_str().and_then(|s| s.parse().ok()) {
                            *frames_by_node.entry(node).or_default() += 1;
                            if let Some(bar) = node_bars.get(&node) {
                                bar.inc(1);
                            }
                        }
                    }
                    "file.output_stored.v1" if p["job_id"] == job_id.to_string() => {
                        if let (Some(file_id), Some(sha)) =
                            (p["file_id"].as_str(), p["sha256"].as_str())
                        {
                            stored.insert(file_id.to_owned(), sha.to_owned());
                        }
                    }
                    "tenant.credit_charged.v1" => {
                        charged_seconds += p["render_seconds"].as_u64().unwrap_or(0);
                        charged_minor += p["amount_minor"].as_i64().unwrap_or(0);
                    }
                    "render.task.requeued.v1" => {
                        overall.set_message(format!("requeued: {}", p["reason"]));
                    }
                    _ => {}
                }
            }
        }
        if let Some(progress) = orch.job_progress(job_id).await {
            overall.set_position(progress.frames_done);
            if orch.is_finished(job_id).await {
                overall.finish_with_message(progress.status);
                if progress.status != "completed" {
                    bail!(
                        "the render ended {}; agent logs are in {}",
                        progress.status,
                        run_dir.join("nodes").display()
                    );
                }
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the render did not finish in 5 minutes; agent logs are in {}",
                run_dir.join("nodes").display()
            );
        }
    }
    for bar in node_bars.values() {
        // `abandon` keeps each node's count where it is (`finish` would fill it).
        bar.abandon();
    }

    // Stop the agents gracefully, then the server (unless kept).
    if !config.keep {
        for child in &mut agents.0 {
            terminate(child);
        }
        for child in &mut agents.0 {
            let _ = child.wait();
        }
        agents.0.clear();
        ticker.abort();
        server.abort();
    }

    // The charges of the last completions may still be on their way.
    let rest = tokio::time::timeout(Duration::from_secs(1), log.next_batch()).await;
    for event in rest.ok().and_then(Result::ok).unwrap_or_default() {
        if event.routing_key == "tenant.credit_charged.v1" {
            charged_seconds += event.payload["render_seconds"].as_u64().unwrap_or(0);
            charged_minor += event.payload["amount_minor"].as_i64().unwrap_or(0);
        }
    }

    // Frames (each frame's current output) and the contact sheet.
    let mut outputs: BTreeMap<u32, String> = BTreeMap::new();
    for (frame, file_id) in orch.current_outputs(job_id).await {
        let sha = match stored.get(&file_id.to_string()) {
            Some(sha) => sha.clone(),
            // Stored after the last batch this loop read.
            None => store
                .read_stream(file_id.as_uuid(), 1, 1)
                .await?
                .first()
                .and_then(|e| e.payload["sha256"].as_str().map(str::to_owned))
                .with_context(|| format!("the output of frame {frame} was never stored"))?,
        };
        outputs.insert(frame, sha);
    }
    let mut images = Vec::new();
    for (frame, sha) in &outputs {
        let bytes = blobs
            .get(sha)
            .await?
            .with_context(|| format!("output of frame {frame} missing"))?;
        let path = frames_dir.join(node_agent::renderer::frame_file_name(*frame));
        std::fs::write(&path, &bytes)?;
        images.push(bytes);
    }
    if outputs.len() as u64 != total {
        bail!("{} of {total} frames were stored", outputs.len());
    }
    crate::contact_sheet::write(&images, 8, &run_dir.join("contact_sheet.png"))?;

    // The audit: every stream's versions, hash chain and payloads.
    let report = crate::audit::verify(&store, |_| {}).await?;
    if !report.is_clean() {
        bail!("the audit found problems: {:?}", report.problems);
    }

    // The read model the public API serves says the same.
    read_models.stop().await;
    let mut runner = projections::Runner::new(store.clone(), projections::RunnerOptions::default());
    runner.catch_up(|_, _, _| {}).await?;
    let row = projections::query::render(&store, tenant_id.as_uuid(), job_id.as_uuid())
        .await?
        .context("the read model has no row for the render")?;
    if row.status != "completed" || row.frames_done as u64 != total {
        bail!(
            "the read model says {} with {}/{} frames",
            row.status,
            row.frames_done,
            row.frames_total
        );
    }
    let kept = if config.keep {
        let user = crate::users::create(
            &store,
            tenant_id,
            "operator@demo.example",
            "Demo operator",
            domain::identity::Role::Operator,
            chrono::Utc::now(),
        )
        .await?;
        let mut random = [0u8; 9];
        getrandom::fill(&mut random).context("a random password")?;
        let password = hex::encode(random);
        crate::users::set_password(&store, user.as_uuid(), &password, chrono::Utc::now()).await?;
        let token = jwt
            .issue(
                user.as_uuid(),
                tenant_id.as_uuid(),
                domain::identity::Role::Operator,
                chrono::Duration::days(7),
            )
            .context("issuing the operator's token")?;
        Some(Kept {
            monitor_url: format!("http://{address}/monitor/"),
            server_url: format!("http://{address}"),
            token,
            sign_in: ("operator@demo.example".into(), password),
            agents: std::mem::replace(&mut agents, Agents(Vec::new())),
            ticker,
            server,
            read_models: crate::read_models::ReadModels::spawn(&store),
        })
    } else {
        None
    };
    Ok(DemoSummary {
        kept,
        run_dir,
        frames: outputs.len(),
        frames_by_node: frames_by_node
            .into_iter()
            .map(|(id, n)| (node_names.get(&id).cloned().unwrap_or(id.to_string()), n))
            .collect(),
        charged_seconds,
        charged_minor,
        events: report.events,
        streams: report.streams,
        elapsed: started.elapsed(),
    })
}
