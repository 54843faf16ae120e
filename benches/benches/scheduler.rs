//! Scheduler throughput: simulated nodes claiming queued single-frame tasks
//! and completing each (claim → complete), in process, against PostgreSQL
//! and SQLite (see `benches/README.md`).
//!
//! Every lease and every completion is an event appended through the
//! store, and every completion charges its tenant (another event), exactly
//! as through the API; only HTTP and signatures are left out. One tokio
//! task per node claims, completes at once, and claims again until nothing
//! is left. Reported per backend: leases, wall seconds, leases per second,
//! claim latency p50/p99 (claims that granted a lease) and completion
//! latency p50/p99. Setup (tenants, scenes, renders, nodes) is not timed.
//!
//! `cargo bench -p benches --bench scheduler`: 1,000 nodes, 10 tenants,
//! 100 renders of 1,000 single-frame tasks (100,000 leases). Sizes:
//! `FLATRENDER_BENCH_NODES`, `FLATRENDER_BENCH_RENDERS`,
//! `FLATRENDER_BENCH_FRAMES` (frames per render), `FLATRENDER_BENCH_TENANTS`;
//! `FLATRENDER_BENCH_BACKEND=postgres|sqlite` runs one backend.
//! `FLATRENDER_BENCH_DATABASE_URL` (default: `FLATRENDER_TEST_DATABASE_URL`,
//! then postgres://postgres@127.0.0.1:5432/postgres) names the server (a
//! fresh database is created and dropped). Without `--bench` (as under
//! `cargo test --all-targets`) it runs 20 nodes on 4 renders of 25 frames
//! from 2 tenants.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::file::UploadKind;
use domain::node::{Capabilities, RendererInfo};
use domain::render_job::Requirements;
use domain::{
    AmountMinor, ChunkSize, ContentType, FileCommand, FileId, FileName, FrameRange, Identifier,
    JobId, Label, LeaseRef, NodeId, Priority, SecretKeyId, Sha256Digest, ShareWeight, SubmitJob,
    TaskId, TenantCommand, TenantId,
};
use eventstore::{AnyStore, PgOptions, PgStore, SqliteStore, SystemClock};
use orchestrator::{Config, Orchestrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};
use uuid::Uuid;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    nodes: usize,
    tenants: usize,
    renders: usize,
    frames: u32,
}

impl Sizes {
    fn tasks(&self) -> usize {
        self.renders * self.frames as usize
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn id<T>(new: fn(Uuid) -> Result<T, domain::ValidationError>) -> T {
    new(Uuid::new_v4()).expect("id")
}

fn label(text: &str) -> Label {
    Label::parse(text).expect("label")
}

fn ident(text: &str) -> Identifier {
    Identifier::parse(text).expect("identifier")
}

fn capabilities() -> Capabilities {
    Capabilities {
        cores: 8,
        memory_bytes: 1 << 34,
        gpus: vec![],
        renderers: vec![RendererInfo {
            name: ident("builtin"),
            version: ident("1"),
        }],
        tags: vec![],
        node_class: ident("standard"),
    }
}

/// Tenants with credit and a scene each, the renders (round-robin over the
/// tenants), and online nodes. Returns the nodes and the renders.
async fn setup(orch: &Orchestrator, sizes: Sizes) -> (Vec<NodeId>, Vec<JobId>) {
    let mut tenants = Vec::new();
    for t in 0..sizes.tenants {
        let tenant_id = id(TenantId::new);
        orch.tenant_command(
            tenant_id,
            TenantCommand::Create {
                tenant_id,
                name: label(&format!("tenant-{t}")),
                weight: ShareWeight::new(1).expect("weight"),
                max_running_tasks: 100_000,
                at: Utc::now(),
            },
        )
        .await
        .expect("create tenant");
        orch.tenant_command(
            tenant_id,
            TenantCommand::AddCredit {
                amount: AmountMinor::new(1_000_000_000).expect("amount"),
                reference: label("bench"),
                at: Utc::now(),
            },
        )
        .await
        .expect("add credit");
        let file_id = id(FileId::new);
        orch.record_upload(
            file_id,
            FileCommand::Upload {
                file_id,
                tenant_id,
                kind: UploadKind::Scene,
                name: FileName::parse("s.json").expect("name"),
                content_type: ContentType::parse("application/json").expect("type"),
                size_bytes: 5,
                sha256: Sha256Digest::parse(
                    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                )
                .expect("digest"),
                at: Utc::now(),
            },
        )
        .await
        .expect("scene");
        tenants.push((tenant_id, file_id));
    }
    let mut jobs = Vec::new();
    for r in 0..sizes.renders {
        let (tenant_id, scene_file_id) = tenants[r % tenants.len()];
        let job_id = id(JobId::new);
        orch.submit(SubmitJob {
            job_id,
            tenant_id,
            name: label(&format!("render-{r}")),
            scene_file_id,
            renderer: ident("builtin"),
            frames: FrameRange::new(1, sizes.frames).expect("frames"),
            chunk_size: ChunkSize::new(1).expect("chunk"),
            resolution: None,
            samples: None,
            priority: Priority::new(50).expect("priority"),
            requirements: Requirements::default(),
            max_retries: 3,
            at: Utc::now(),
        })
        .await
        .expect("submit");
        jobs.push(job_id);
    }
    let mut nodes = Vec::new();
    for n in 0..sizes.nodes {
        let node_id = id(NodeId::new);
        orch.register_node(
            node_id,
            label(&format!("node-{n}")),
            capabilities(),
            id(SecretKeyId::new),
        )
        .await
        .expect("register");
        orch.heartbeat(node_id, &[]).await.expect("online");
        nodes.push(node_id);
    }
    (nodes, jobs)
}

/// What one simulated node saw.
#[derive(Default)]
struct NodeLog {
    claims: Vec<Duration>,
    completions: Vec<Duration>,
    empty_claims: usize,
}

/// One node: claim, complete at once, again, until every task is leased.
async fn node_loop(
    orch: Orchestrator,
    node_id: NodeId,
    granted: Arc<AtomicUsize>,
    total: usize,
) -> NodeLog {
    let mut log = NodeLog::default();
    let mut signal = orch.work_signal();
    let mut idle_since: Option<Instant> = None;
    loop {
        let t = Instant::now();
        let claimed = orch.claim(node_id).await.expect("claim");
        let took = t.elapsed();
        let Some(a) = claimed else {
            log.empty_claims += 1;
            // Nothing is ever requeued here, so once every task has been
            // leased no work can appear again.
            if granted.load(Ordering::SeqCst) >= total {
                return log;
            }
            let idle = *idle_since.get_or_insert_with(Instant::now);
            assert!(
                idle.elapsed() < Duration::from_secs(60),
                "scheduler stalled: no lease for a minute with tasks queued"
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), signal.changed()).await;
            continue;
        };
        idle_since = None;
        log.claims.push(took);
        granted.fetch_add(1, Ordering::SeqCst);
        let lease = LeaseRef {
            task_id: TaskId::new(a.task_id).expect("task id"),
            node_id,
            lease_epoch: a.lease_epoch,
        };
        let t = Instant::now();
        orch.complete(lease).await.expect("complete");
        log.completions.push(t.elapsed());
    }
}

/// The `p` quantile of sorted `samples`, in milliseconds.
fn quantile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[i].as_secs_f64() * 1000.0
}

async fn run(backend: &str, store: AnyStore, sizes: Sizes) {
    let orch = Orchestrator::open(store, Arc::new(SystemClock), Config::default())
        .await
        .expect("orchestrator");
    let setup_started = Instant::now();
    let (nodes, jobs) = setup(&orch, sizes).await;
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    let total = sizes.tasks();
    let granted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = nodes
        .iter()
        .map(|&node_id| tokio::spawn(node_loop(orch.clone(), node_id, granted.clone(), total)))
        .collect();
    let (mut claims, mut completions, mut empty) = (Vec::new(), Vec::new(), 0);
    for w in workers {
        let log = w.await.expect("node task");
        claims.extend(log.claims);
        completions.extend(log.completions);
        empty += log.empty_claims;
    }
    let seconds = started.elapsed().as_secs_f64();

    assert_eq!(claims.len(), total, "every task leased exactly once");
    for job in &jobs {
        assert!(orch.is_finished(*job).await, "render {job} finished");
    }
    claims.sort_unstable();
    completions.sort_unstable();
    println!(
        "| {backend:<8} | {:>5} | {:>7} | {:>5} | {:>7.1} | {:>8.0} | {:>12.2} | {:>12.2} | {:>15.2} | {:>15.2} |",
        sizes.nodes,
        total,
        empty,
        seconds,
        total as f64 / seconds,
        quantile_ms(&claims, 0.50),
        quantile_ms(&claims, 0.99),
        quantile_ms(&completions, 0.50),
        quantile_ms(&completions, 0.99),
    );
    println!("({backend}: setup {setup_seconds:.1} s, not timed)");
}

/// A fresh database on the benchmark server, with the store on it as the
/// server binary opens it (`PgOptions::default()`); dropped afterwards.
async fn postgres(sizes: Sizes) {
    let url = std::env::var("FLATRENDER_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("FLATRENDER_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = PgConnectOptions::from_str(&url).expect("database url");
    let name = format!("fr_bench_{}", Uuid::new_v4().simple());
    let mut conn = admin.connect().await.expect("connect to PostgreSQL");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create database");
    let options = PgOptions::default();
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .connect_with(eventstore::postgres::tuned(admin.clone().database(&name)))
        .await
        .expect("connect");
    let store = PgStore::from_pool(pool.clone(), options, Arc::new(SystemClock))
        .await
        .expect("store");
    run("postgres", AnyStore::Postgres(store), sizes).await;
    pool.close().await;
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .await
    .expect("drop database");
    conn.close().await.expect("close");
}

/// A fresh SQLite file in a temporary directory, removed afterwards.
async fn sqlite(sizes: Sizes) {
    let dir = std::env::temp_dir().join(format!("flatrender-bench-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = SqliteStore::open(&dir.join("events.sqlite"))
        .await
        .expect("store");
    run("sqlite", AnyStore::Sqlite(store), sizes).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` passes
    // nothing else and expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (nodes, tenants, renders, frames) = if quick {
        (20, 2, 4, 25)
    } else {
        (1_000, 10, 100, 1_000)
    };
    let sizes = Sizes {
        nodes: env_or("FLATRENDER_BENCH_NODES", nodes),
        tenants: env_or("FLATRENDER_BENCH_TENANTS", tenants).max(1),
        renders: env_or("FLATRENDER_BENCH_RENDERS", renders),
        frames: u32::try_from(env_or("FLATRENDER_BENCH_FRAMES", frames)).expect("frames"),
    };
    let only = std::env::var("FLATRENDER_BENCH_BACKEND").unwrap_or_default();
    println!(
        "FlatRender scheduler benchmark: {} nodes claim → complete {} single-frame tasks \
         ({} renders of {} frames from {} tenants)",
        sizes.nodes,
        sizes.tasks(),
        sizes.renders,
        sizes.frames,
        sizes.tenants
    );
    println!(
        "| backend  | nodes | leases  | empty | seconds | leases/s | claim p50 ms | claim p99 ms | complete p50 ms | complete p99 ms |"
    );
    println!(
        "|----------|-------|---------|-------|---------|----------|--------------|--------------|-----------------|-----------------|"
    );
    if only.is_empty() || only == "postgres" {
        postgres(sizes).await;
    }
    if only.is_empty() || only == "sqlite" {
        sqlite(sizes).await;
    }
}
