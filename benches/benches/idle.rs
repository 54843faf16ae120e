//! Idle agents: 5,000 nodes long-polling one scheduler with no work
//! queued, then a 1,000-task render submitted. Two ways of waiting, each
//! on its own store, in the same run:
//!
//! - **poll** (the node API before issue 14, the baseline): each waiting
//!   claim watches one shared signal and claims again when it changes or
//!   after a second, whichever comes first;
//! - **queued** (now, `Orchestrator::claim_waiting`): the claim is queued
//!   and woken only for a task its node can run, one claim per task.
//!
//! Reported: the process's CPU seconds per second while idle, claims
//! answered empty per second while idle, the time from submitting the
//! render to its last task being leased, and the empty claims made
//! meanwhile. In process (the scheduler's side of the long poll; the HTTP
//! and HMAC of each request are not in it).
//!
//! `cargo bench -p benches --bench idle`. Sizes: `FLATRENDER_BENCH_NODES`
//! (5,000), `FLATRENDER_BENCH_FRAMES` (1,000 tasks), `FLATRENDER_BENCH_SECONDS`
//! (idle window, 5). Under `cargo test`: 100 nodes, 20 tasks, 1 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use domain::NodeId;
use eventstore::{AnyStore, SqliteStore, SystemClock};
use orchestrator::{Config, Orchestrator};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = stat.rsplit(')').next().expect("stat");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15.
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Poll,
    Queued,
}

/// One waiting agent: long polls of 30 s until it gets a lease.
async fn agent(orch: Orchestrator, node: NodeId, way: Way, leased: Arc<AtomicUsize>) {
    let wait = Duration::from_secs(30);
    loop {
        let got = match way {
            Way::Queued => orch.claim_waiting(node, wait).await.expect("claim"),
            Way::Poll => {
                // The node API's claim handler before issue 14.
                let deadline = tokio::time::Instant::now() + wait;
                let mut work = orch.work_signal();
                loop {
                    work.borrow_and_update();
                    if let Some(a) = orch.claim(node).await.expect("claim") {
                        break Some(a);
                    }
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        break None;
                    }
                    let nap = (deadline - now).min(Duration::from_secs(1));
                    let _ = tokio::time::timeout(nap, work.changed()).await;
                }
            }
        };
        if got.is_some() {
            leased.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

async fn run(way: Way, nodes: usize, tasks: u32, idle: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AnyStore::Sqlite(
        SqliteStore::open(&dir.path().join("events.sqlite"))
            .await
            .expect("sqlite"),
    );
    let config = Config {
        lease_ttl: chrono::Duration::hours(1),
        offline_after: chrono::Duration::hours(1),
        ..Config::default()
    };
    let orch = Orchestrator::open(store, Arc::new(SystemClock), config)
        .await
        .expect("orchestrator");
    let blobs = api::files::BlobStore::open(dir.path(), 1 << 20)
        .await
        .expect("blobs");
    let tenant = api::seed::tenant(&orch, "studio", 1, 1_000_000, 1 << 40)
        .await
        .expect("tenant");
    let scene = api::seed::scene(&orch, &blobs, tenant, "scene.json", b"{}")
        .await
        .expect("scene");
    let leased = Arc::new(AtomicUsize::new(0));
    let mut agents = Vec::new();
    for n in 0..nodes {
        let node = benches::farm::online_node(&orch, n).await;
        agents.push(tokio::spawn(agent(orch.clone(), node, way, leased.clone())));
    }
    // Let every agent make its first claim and settle into waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, empty0, t0) = (
        cpu_seconds(),
        orch.counter_totals().claims_empty,
        Instant::now(),
    );
    tokio::time::sleep(idle).await;
    let idle_s = t0.elapsed().as_secs_f64();
    let idle_cpu = (cpu_seconds() - cpu0) / idle_s;
    let idle_claims = (orch.counter_totals().claims_empty - empty0) as f64 / idle_s;
    let render = api::seed::Render {
        frames: (1, tasks),
        chunk_size: 1,
        ..Default::default()
    };
    let empty1 = orch.counter_totals().claims_empty;
    let submitted = Instant::now();
    api::seed::submit(&orch, tenant, scene, &render)
        .await
        .expect("submit");
    while leased.load(Ordering::SeqCst) < tasks as usize {
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            submitted.elapsed() < Duration::from_secs(120),
            "not all leased"
        );
    }
    let to_last = submitted.elapsed().as_secs_f64();
    let wasted = orch.counter_totals().claims_empty - empty1;
    println!(
        "| {:<6} | {nodes:>5} | {:>15.3} | {:>18.0} | {tasks:>5} | {:>16.3} | {:>18} |",
        format!("{way:?}").to_lowercase(),
        idle_cpu,
        idle_claims,
        to_last,
        wasted,
    );
    for a in agents {
        a.abort();
    }
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (nodes, tasks, idle) = if full {
        (
            env_or("FLATRENDER_BENCH_NODES", 5_000),
            env_or("FLATRENDER_BENCH_FRAMES", 1_000) as u32,
            Duration::from_secs(env_or("FLATRENDER_BENCH_SECONDS", 5) as u64),
        )
    } else {
        (100, 20, Duration::from_secs(1))
    };
    println!(
        "FlatRender idle agents: {nodes} waiting claims, then a {tasks}-task render (SQLite, in process)"
    );
    println!(
        "| way    | nodes | idle CPU s/s    | idle empty claims/s | tasks | to last lease, s | empty claims then |"
    );
    println!(
        "|--------|------:|----------------:|-------------------:|------:|-----------------:|------------------:|"
    );
    run(Way::Poll, nodes, tasks, idle).await;
    run(Way::Queued, nodes, tasks, idle).await;
}
