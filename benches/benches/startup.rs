//! Start-up to ready (issue 14): `flatrender serve` started as a child
//! process on a store of 100,000, 1,000,000 and 10,000,000 events, timed
//! from the spawn until `/readyz` answers 200, with its resident memory at
//! that moment. Each size is measured twice in the same run: from the
//! snapshot of the scheduler's view (the way `serve` starts) and with the
//! snapshot deleted (the view rebuilt from position 0: the baseline).
//!
//! The history is made by the scheduler itself, in process, on the same
//! store: renders of 100 frames in chunks of 10 leased by 100 simulated
//! nodes, every frame's output stored and reported, every task completed
//! and charged (about 24 events a task), until the log reaches the size.
//!
//! `cargo build --release -p api --bin flatrender && cargo bench -p benches
//! --bench startup` (`FLATRENDER_BIN` names another binary; by default the
//! `flatrender` beside this benchmark's own directory). Sizes:
//! `FLATRENDER_BENCH_STARTUP_EVENTS` (comma-separated, default
//! `100000,1000000,10000000`); `FLATRENDER_BENCH_BACKEND=postgres|sqlite`
//! runs one backend. Under `cargo test` it runs 3,000 events per backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::NodeId;
use eventstore::{AnyStore, EventStore, SnapshotRead, SystemClock};
use orchestrator::{Config, Orchestrator};
use uuid::Uuid;

const NODES: usize = 100;
const TENANTS: usize = 10;
const FRAMES: u32 = 100;
const CHUNK: u32 = 10;

/// The scheduler that makes the history, kept open from one size to the
/// next (so growing to 10,000,000 never replays the log).
struct Farm {
    orch: Orchestrator,
    tenants: Vec<(domain::TenantId, domain::FileId)>,
    nodes: Vec<NodeId>,
    store: AnyStore,
    /// Position and number of events counted so far.
    counted: tokio::sync::Mutex<(i64, i64)>,
    _blobs: tempfile::TempDir,
}

impl Farm {
    async fn open(store: &AnyStore) -> Self {
        let config = Config {
            lease_ttl: chrono::Duration::hours(1),
            offline_after: chrono::Duration::hours(1),
            ..Config::default()
        };
        let orch = Orchestrator::open(store.clone(), Arc::new(SystemClock), config)
            .await
            .expect("orchestrator");
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = api::files::BlobStore::open(dir.path(), 1 << 20)
            .await
            .expect("blobs");
        let mut tenants = Vec::new();
        for t in 0..TENANTS {
            let tenant = api::seed::tenant(&orch, &format!("tenant {t}"), 1, 1_000_000, 1 << 50)
                .await
                .expect("tenant");
            let scene = api::seed::scene(&orch, &blobs, tenant, "scene.json", b"{}")
                .await
                .expect("scene");
            tenants.push((tenant, scene));
        }
        let mut nodes = Vec::new();
        for n in 0..NODES {
            nodes.push(benches::farm::online_node(&orch, n).await);
        }
        Self {
            orch,
            tenants,
            nodes,
            store: store.clone(),
            counted: tokio::sync::Mutex::new((0, 0)),
            _blobs: dir,
        }
    }

    /// Events in the log (positions are not dense on PostgreSQL: counted
    /// from where the last count stopped).
    async fn events(&self) -> i64 {
        let mut counted = self.counted.lock().await;
        loop {
            let batch = self.store.read_all(counted.0, 10_000).await.expect("read");
            let Some(last) = batch.last() else {
                return counted.1;
            };
            counted.0 = last.global_position;
            counted.1 += batch.len() as i64;
        }
    }

    /// Renders until the log holds at least `events` events; progress on
    /// standard error.
    async fn grow(&self, events: i64) {
        let started = Instant::now();
        let from = self.events().await;
        let mut wave = 0usize;
        while self.events().await < events {
            // One wave: 20 renders (200 tasks, about 4,800 events), all
            // leased and completed before the next.
            for r in 0..20 {
                let (tenant, scene) = self.tenants[(wave * 20 + r) % self.tenants.len()];
                let render = api::seed::Render {
                    frames: (1, FRAMES),
                    chunk_size: CHUNK,
                    ..Default::default()
                };
                api::seed::submit(&self.orch, tenant, scene, &render)
                    .await
                    .expect("submit");
            }
            let mut workers = Vec::new();
            for &node in &self.nodes {
                let orch = self.orch.clone();
                workers.push(tokio::spawn(async move { work(&orch, node).await }));
            }
            for w in workers {
                w.await.expect("worker");
            }
            wave += 1;
            if wave.is_multiple_of(100) {
                let at = self.events().await;
                let rate = (at - from) as f64 / started.elapsed().as_secs_f64();
                eprintln!("  history: {at} of {events} events ({rate:.0} events/s)");
            }
        }
    }
}

/// One node: tasks until nothing is queued.
async fn work(orch: &Orchestrator, node: NodeId) {
    while benches::farm::one_task(orch, node).await {}
}

/// The `flatrender` binary: `FLATRENDER_BIN`, else the one cargo built
/// beside this benchmark (`target/<profile>/flatrender`).
fn flatrender_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("FLATRENDER_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("flatrender");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p api --bin flatrender, \
         or cargo test --workspace --all-targets), or set FLATRENDER_BIN",
        bin.display()
    );
    bin
}

/// One start: seconds from spawn to `/readyz` 200, resident memory then
/// (MiB), events replayed (from the server's log line).
#[derive(Debug, Clone, Copy)]
struct Start {
    ready_s: f64,
    rss_mib: f64,
    replayed: Option<u64>,
}

/// A `/proc/<pid>/status` field in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Starts `flatrender serve` on the store, waits for `/readyz`, then stops
/// it with SIGTERM (a graceful stop writes a snapshot unless
/// `snapshot_seconds` is 0).
async fn start_serve(data_dir: &Path, database_url: Option<&str>, snapshot_seconds: u64) -> Start {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let log_path = data_dir.join(format!("serve-{}.log", Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = tokio::process::Command::new(flatrender_bin());
    command
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--snapshot-seconds")
        .arg(snapshot_seconds.to_string())
        .env("RUST_LOG", "info")
        .env("FLATRENDER_LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    let spawned = Instant::now();
    let mut child = command.spawn().expect("spawn flatrender serve");
    let pid = child.id().expect("pid");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let ready_s = loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            break spawned.elapsed().as_secs_f64();
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("flatrender serve exited before it was ready ({status}):\n{log}");
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(1_800),
            "flatrender serve not ready after 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let rss_mib = status_mib(pid, "VmRSS:");
    let stopped = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(stopped.success(), "SIGTERM to flatrender serve");
    let status = tokio::time::timeout(Duration::from_secs(600), child.wait())
        .await
        .expect("flatrender serve stops within 10 minutes of SIGTERM")
        .expect("wait");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "flatrender serve failed ({status}):\n{log}"
    );
    // `{"fields":{"message":"scheduler's view built","replayed":N,…},…}`
    let replayed = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "scheduler's view built")
        .and_then(|l| l["fields"]["replayed"].as_u64());
    let _ = std::fs::remove_file(&log_path);
    Start {
        ready_s,
        rss_mib,
        replayed,
    }
}

/// Every size on one backend: grow, then start from the snapshot and from
/// zero.
async fn run(backend: &str, store: AnyStore, data_dir: &Path, url: Option<&str>, sizes: &[i64]) {
    let farm = Farm::open(&store).await;
    for &size in sizes {
        let making = Instant::now();
        farm.grow(size).await;
        let events = farm.events().await;
        let making_s = making.elapsed().as_secs_f64();
        // The view's position moves when it reads the log (its own appends
        // apply at once): read to the end, then snapshot.
        farm.orch.catch_up().await.expect("catch up");
        let written = farm.orch.write_snapshot().await.expect("snapshot");
        assert!(written.is_some(), "the farm wrote no snapshot");
        let SnapshotRead::Verified(snapshot) = store
            .load_view_snapshot(orchestrator::SNAPSHOT_NAME)
            .await
            .expect("load snapshot")
        else {
            panic!("the farm's snapshot does not verify");
        };
        let snapshot_kib = snapshot.body.len() as f64 / 1024.0;
        // From zero first (the snapshot set aside), then from it.
        store
            .delete_view_snapshot(orchestrator::SNAPSHOT_NAME)
            .await
            .expect("delete snapshot");
        let cold = start_serve(data_dir, url, 0).await;
        store
            .save_view_snapshot(orchestrator::SNAPSHOT_NAME, &snapshot)
            .await
            .expect("restore snapshot");
        let warm = start_serve(data_dir, url, 60).await;
        assert!(
            warm.replayed
                .is_some_and(|r| (r as i64) < events / 2 + 1_000),
            "the start from the snapshot replayed {:?} of {events} events",
            warm.replayed
        );
        let show = |r: Option<u64>| r.map_or("?".to_string(), |r| r.to_string());
        println!(
            "| {backend:<8} | {events:>10} | {making_s:>7.0} | {snapshot_kib:>8.0} | {:>8.2} | {:>7.0} | {:>10} | {:>8.2} | {:>7.0} | {:>8} |",
            cold.ready_s,
            cold.rss_mib,
            show(cold.replayed),
            warm.ready_s,
            warm.rss_mib,
            show(warm.replayed),
        );
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<i64> = if full {
        std::env::var("FLATRENDER_BENCH_STARTUP_EVENTS")
            .unwrap_or_else(|_| "100000,1000000,10000000".into())
            .split(',')
            .map(|s| s.trim().parse().expect("FLATRENDER_BENCH_STARTUP_EVENTS"))
            .collect()
    } else {
        vec![3_000]
    };
    let only = std::env::var("FLATRENDER_BENCH_BACKEND").unwrap_or_default();
    println!("FlatRender start-up to ready: `flatrender serve` until /readyz answers");
    println!(
        "| backend  | events     | make s  | snap KiB | zero s   | MiB     | replayed   | snap s   | MiB     | replayed |"
    );
    println!(
        "|----------|------------|---------|----------|----------|---------|------------|----------|---------|----------|"
    );
    if only.is_empty() || only == "postgres" {
        let db = benches::FreshPg::create(16).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let url = db.url();
        let store = AnyStore::Postgres(db.store.clone());
        run("postgres", store, dir.path(), Some(&url), &sizes).await;
        db.drop_now().await;
    }
    if only.is_empty() || only == "sqlite" {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AnyStore::open(None, dir.path()).await.expect("sqlite");
        run("sqlite", store, dir.path(), None, &sizes).await;
    }
}
