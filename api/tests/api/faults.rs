//! Faults with real processes: `flatrender serve` instances and
//! `flatrender agent`s as child processes, killed and raced as an operator
//! would see them. Money and frames must come out exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventstore::{AnyStore, RecordedEvent, SystemClock};
use uuid::Uuid;

use crate::{by, log, until};

/// A `flatrender serve` process.
pub(crate) struct Serve {
    child: Child,
    pub url: String,
    port: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Serve {
    pub(crate) async fn start(dir: &Path, database_url: Option<&str>, port: u16) -> Self {
        Self::start_with(dir, database_url, port, &[]).await
    }

    /// Like [`Serve::start`], with more environment.
    pub(crate) async fn start_with(
        dir: &Path,
        database_url: Option<&str>,
        port: u16,
        env: &[(&str, &str)],
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("serve-{port}.log")))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_flatrender"));
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        command.envs(env.iter().copied());
        let child = command.spawn().unwrap();
        let serve = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
        };
        serve.wait_listening().await;
        serve
    }

    async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "serve never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Like a power cut: SIGKILL, nothing flushed, nothing said.
    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

pub(crate) struct Agent {
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn agent(store: &AnyStore, dir: &Path, name: &str, urls: &[&str]) -> Agent {
    // The servers' master key: they share the data directory.
    let vault = eventstore::Vault::new(api::secrets::data_dir_key(dir).unwrap());
    let enrolment = api::enroll::enrol(store, &vault, name, chrono::Utc::now())
        .await
        .unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flatrender"));
    command.arg("agent");
    for url in urls {
        command.args(["--server-url", url]);
    }
    let child = command
        .args(["--node-id", &enrolment.node_id.to_string()])
        .args(["--key-id", &enrolment.key_id.to_string()])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--heartbeat-seconds", "1"])
        .env("FLATRENDER_NODE_SECRET", &enrolment.secret_hex)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Agent { child }
}

/// The operator's side, in this process: tenants, scenes and renders
/// through an orchestrator of its own on the same store (as `flatrender
/// tenant create` and `render submit` do).
async fn submit(
    orch: &orchestrator::Orchestrator,
    dir: &Path,
    tenant: domain::TenantId,
    frames: u32,
    chunk: u32,
) -> domain::JobId {
    let blobs = api::files::BlobStore::open(&dir.join("blobs"), 1 << 24)
        .await
        .unwrap();
    crate::demo_render(orch, &blobs, tenant, frames, chunk, Some((64, 36))).await
}

/// A fresh PostgreSQL database for one test (dropped at the end), or
/// `None` when there is no server and services are not required.
pub(crate) struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub(crate) async fn create() -> Option<Self> {
        use sqlx::Connection;
        use sqlx::Executor;
        let admin = match std::env::var("FLATRENDER_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!("FLATRENDER_REQUIRE_SERVICES=1 but FLATRENDER_TEST_DATABASE_URL is not set")
            }
            _ => {
                eprintln!("!!! SKIPPED: FLATRENDER_TEST_DATABASE_URL is not set");
                return None;
            }
        };
        let name = format!("fr_faults_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        let base = admin.split('?').next().unwrap_or(&admin);
        let (server, _) = base.rsplit_once('/').unwrap();
        Some(Self {
            url: format!("{server}/{name}"),
            admin,
            name,
        })
    }

    pub(crate) async fn drop_it(self) {
        use sqlx::Connection;
        use sqlx::Executor;
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .await
        .unwrap();
    }
}

pub(crate) fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flatrender-{what}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One charge per completed task, and every tenant's balance is its top-ups
/// minus its charges (read from the log, the source of truth).
fn assert_money_exactly_once(events: &[RecordedEvent]) -> usize {
    let completed: BTreeSet<String> = by(events, "render.task.completed.v1")
        .map(|e| e.payload["task_id"].to_string())
        .collect();
    assert_eq!(
        completed.len(),
        by(events, "render.task.completed.v1").count(),
        "a task completed twice"
    );
    let mut charges: BTreeMap<String, usize> = BTreeMap::new();
    for e in by(events, "tenant.credit_charged.v1") {
        *charges.entry(e.payload["task_id"].to_string()).or_default() += 1;
    }
    let twice: Vec<_> = charges.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks charged more than once: {twice:?}");
    assert_eq!(
        charges.keys().cloned().collect::<BTreeSet<_>>(),
        completed,
        "charges equal completions"
    );
    let mut tenants: BTreeMap<String, (i64, i64, (u64, i64))> = BTreeMap::new();
    for e in events {
        let minor = |field: &str| e.payload[field].as_i64().unwrap_or(0);
        let t = tenants
            .entry(e.payload["tenant_id"].to_string())
            .or_default();
        match e.routing_key.as_str() {
            "tenant.credit_added.v1" => t.0 += minor("amount_minor"),
            "tenant.credit_charged.v1" => {
                t.1 += minor("amount_minor");
                if e.stream_version > t.2.0 {
                    t.2 = (e.stream_version, minor("balance_after_minor"));
                }
            }
            _ => {}
        }
    }
    for (tenant, (added, charged, (_, balance))) in tenants {
        if charged > 0 {
            assert_eq!(added - charged, balance, "tenant {tenant}'s balance");
        }
    }
    completed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_postgres_charge_every_completed_task_exactly_once_and_agents_fail_over() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let dir = temp_dir("two-servers");
    let store = AnyStore::open(Some(&pg.url), &dir).await.unwrap();
    let mut first = Serve::start(&dir, Some(&pg.url), free_port()).await;
    let second = Serve::start(&dir, Some(&pg.url), free_port()).await;
    let orch = orchestrator::Orchestrator::open(
        store.clone(),
        Arc::new(SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    let mut jobs = Vec::new();
    for name in ["Studio A", "Studio B"] {
        let tenant = api::seed::tenant(&orch, name, 1, 100, 1_000_000)
            .await
            .unwrap();
        jobs.push(submit(&orch, &dir, tenant, 100, 1).await);
    }
    // Four agents, two preferring each instance: hundreds of completions
    // race on the same job streams through both instances.
    let (a, b) = (first.url.as_str(), second.url.as_str());
    let mut agents = Vec::new();
    for i in 0..4 {
        let urls = if i % 2 == 0 { [a, b] } else { [b, a] };
        agents.push(agent(&store, &dir, &format!("node-{i}"), &urls).await);
    }
    // One instance dies mid-render: its agents move to the other one, and
    // what it completed but had not charged yet is charged there.
    until(&store, 300, "a quarter of the work", |events| {
        by(events, "render.task.completed.v1").count() >= 50
    })
    .await;
    first.kill_9();
    let killed_at = log(&store).await.last().map_or(0, |e| e.global_position);
    until(&store, 300, "both renders to complete", |events| {
        by(events, "render.job.completed.v1").count() == jobs.len()
    })
    .await;
    until(&store, 30, "every completion's charge", |events| {
        by(events, "tenant.credit_charged.v1").count()
            >= by(events, "render.task.completed.v1").count()
    })
    .await;
    // Quiet for a while: nothing is charged again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = log(&store).await;
    assert_eq!(assert_money_exactly_once(&events), 200);
    let by_node = |events: &[RecordedEvent]| -> BTreeSet<String> {
        by(events, "render.task.completed.v1")
            .map(|e| e.payload["node_id"].to_string())
            .collect()
    };
    assert_eq!(by_node(&events).len(), 4, "every agent worked");
    // Every agent completed tasks after the first instance died (those that
    // preferred it failed over to the second).
    let after_kill: Vec<RecordedEvent> = events
        .iter()
        .filter(|e| e.global_position > killed_at)
        .cloned()
        .collect();
    assert_eq!(by_node(&after_kill).len(), 4, "an agent did not fail over");
    drop(agents);
    drop((first, second));
    drop(orch);
    drop(store);
    pg.drop_it().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_for_40_s_mid_render_finishes_within_seconds_of_its_return() {
    let dir = temp_dir("outage");
    let store = AnyStore::open(None, &dir).await.unwrap();
    let port = free_port();
    // Default lease (60 s) and offline period (30 s): the outage is longer
    // than the offline period, shorter than a lease.
    let mut serve = Serve::start(&dir, None, port).await;
    let orch = orchestrator::Orchestrator::open(
        store.clone(),
        Arc::new(SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    let tenant = api::seed::tenant(&orch, "Studio", 1, 10, 1_000_000)
        .await
        .unwrap();
    let job = submit(&orch, &dir, tenant, 40, 4).await;
    let url = serve.url.clone();
    let _agents = [
        agent(&store, &dir, "node-a", &[&url]).await,
        agent(&store, &dir, "node-b", &[&url]).await,
    ];
    until(&store, 120, "the first frames", |events| {
        by(events, "render.task.progressed.v1").count() >= 2
    })
    .await;
    serve.kill_9();
    let killed_with = by(&log(&store).await, "render.task.progressed.v1").count();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let back = Instant::now();
    let _serve = Serve::start(&dir, None, port).await;
    until(&store, 180, "the render to complete", |events| {
        by(events, "render.job.completed.v1").count() == 1
    })
    .await;
    let recovery = back.elapsed();
    eprintln!(
        "outage test: {killed_with} frames before the kill; the render completed {:.1} s after the server came back",
        recovery.as_secs_f64()
    );
    // Within seconds, not a lease length (60 s) nor a backed-off claim.
    assert!(
        recovery < Duration::from_secs(30),
        "the render took {recovery:?} after the server came back"
    );

    // Every frame has exactly one current output, and its bytes are there.
    let events = log(&store).await;
    assert_money_exactly_once(&events);
    let reader = orchestrator::Orchestrator::open(
        store.clone(),
        Arc::new(SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    let outputs = reader.current_outputs(job).await;
    assert_eq!(
        outputs.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        (1..=40).collect::<Vec<_>>()
    );
    let stored: BTreeMap<String, String> = by(&events, "file.output_stored.v1")
        .map(|e| {
            (
                e.payload["file_id"].as_str().unwrap().to_owned(),
                e.payload["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let blobs = api::files::BlobStore::open(&dir.join("blobs"), 1 << 24)
        .await
        .unwrap();
    for (frame, file_id) in outputs {
        let sha = &stored[&file_id.to_string()];
        let bytes = blobs.get(sha).await.unwrap();
        assert!(bytes.is_some(), "frame {frame}'s current output is missing");
    }
    let _ = std::fs::remove_dir_all(dir);
}
