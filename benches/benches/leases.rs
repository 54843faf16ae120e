//! Scheduler throughput: simulated nodes claiming from queued single-frame
//! tasks and completing each (claim → start → store and report the frame's
//! output → complete, every step an event, every completion charged), in
//! process, against PostgreSQL and
//! SQLite. Reports leases per second and claim latency p50/p99, with the
//! committer unpipelined and pipelined (alternating on fresh stores,
//! `FLATRENDER_BENCH_REPEAT` times each, default 2) and their ratio.
//!
//! `FLATRENDER_BENCH_SCALE=1` runs three rounds per backend instead (issue
//! 14): the default sizes on an empty store; the same on a store that
//! already holds a long history (`FLATRENDER_BENCH_HISTORY_RENDERS`, default
//! 8,500 finished renders of 20 frames, about 1,000,000 events), with a new
//! orchestrator opened on it; and 10,000 queued renders of 10 frames on an
//! empty store. Each round reports its ratio to the empty-store round.
//!
//! `cargo bench -p benches --bench leases`. Sizes: `FLATRENDER_BENCH_NODES`
//! (default 1,000), `FLATRENDER_BENCH_RENDERS` (100), `FLATRENDER_BENCH_FRAMES`
//! (frames per render, 1,000), `FLATRENDER_BENCH_TENANTS` (10);
//! `FLATRENDER_BENCH_BACKEND=postgres|sqlite` runs one backend;
//! `FLATRENDER_BENCH_RENDER_MS` (default 0) makes each node "render" about
//! that long (0.5–1.5 × it, varying) between claim and complete (0: every node claims again at once, the
//! throughput ceiling; with render time, claim latency under an offered load
//! of nodes ÷ render time). Under
//! `cargo test` it runs 20 nodes on 4 renders of 25 frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{LeaseRef, NodeId, TaskId};
use eventstore::{AnyStore, EventStore, SqliteStore, SystemClock};
use orchestrator::{Config, Orchestrator};

#[derive(Debug, Clone, Copy)]
struct Sizes {
    nodes: usize,
    renders: usize,
    frames: u32,
    tenants: usize,
    /// Simulated render time between claim and complete.
    render_ms: u64,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sets up tenants, renders and online nodes (not timed).
async fn setup(orch: &Orchestrator, store: &AnyStore, sizes: Sizes) -> Vec<NodeId> {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = api::files::BlobStore::open(dir.path(), 1 << 20)
        .await
        .expect("blobs");
    let mut tenants = Vec::new();
    for t in 0..sizes.tenants {
        let tenant = api::seed::tenant(orch, &format!("tenant {t}"), 1, 1_000_000, 1 << 40)
            .await
            .expect("tenant");
        let scene = api::seed::scene(orch, &blobs, tenant, "scene.json", b"{}")
            .await
            .expect("scene");
        tenants.push((tenant, scene));
    }
    for r in 0..sizes.renders {
        let (tenant, scene) = tenants[r % tenants.len()];
        let render = api::seed::Render {
            frames: (1, sizes.frames),
            chunk_size: 1,
            ..Default::default()
        };
        api::seed::submit(orch, tenant, scene, &render)
            .await
            .expect("submit");
    }
    let mut nodes = Vec::new();
    for n in 0..sizes.nodes {
        nodes.push(benches::farm::online_node(orch, n).await);
    }
    let _ = store;
    nodes
}

/// One round's figures.
#[derive(Debug, Clone, Copy)]
struct Round {
    leases_per_s: f64,
    p99_ms: f64,
    /// `Orchestrator::open` on the round's store, seconds.
    open_s: f64,
}

/// One row of the default table: the committer pipelined or not.
async fn run(backend: &str, store: AnyStore, sizes: Sizes, pipeline: bool) -> Round {
    let label = if pipeline { "" } else { UNPIPELINED };
    run_round(backend, label, store, sizes).await
}

/// The label of a round run with the committer unpipelined.
const UNPIPELINED: &str = "unpipelined";

async fn run_round(backend: &str, label: &str, store: AnyStore, sizes: Sizes) -> Round {
    let config = Config {
        // Nothing expires during the run.
        lease_ttl: chrono::Duration::hours(1),
        offline_after: chrono::Duration::hours(1),
        pipeline: label != UNPIPELINED,
        ..Config::default()
    };
    let opening = Instant::now();
    let orch = Orchestrator::open(store.clone(), Arc::new(SystemClock), config)
        .await
        .expect("orchestrator");
    let open_s = opening.elapsed().as_secs_f64();
    let nodes = setup(&orch, &store, sizes).await;
    let started = Instant::now();
    let mut workers = Vec::new();
    for node in nodes {
        let orch = orch.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut seed = node.as_uuid().as_u128() as u64;
            loop {
                let t = Instant::now();
                let claimed = orch.claim(node).await.expect("claim");
                latencies.push(t.elapsed());
                let Some(a) = claimed else {
                    return latencies;
                };
                let lease = LeaseRef {
                    task_id: TaskId::new(a.task_id).expect("id"),
                    node_id: node,
                    lease_epoch: a.lease_epoch,
                };
                if sizes.render_ms > 0 {
                    // Render times vary (0.5–1.5 × the mean), so nodes do not
                    // claim in lockstep.
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let spread = (seed >> 33) % (sizes.render_ms + 1);
                    let ms = sizes.render_ms / 2 + spread;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                benches::farm::render_leased(&orch, lease, (a.frames.start, a.frames.end)).await;
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    let mut later: Vec<Duration> = Vec::new();
    for w in workers {
        let mine = w.await.expect("worker");
        later.extend(mine.iter().skip(1));
        latencies.extend(mine);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let leases = sizes.renders * sizes.frames as usize;
    let round = Round {
        leases_per_s: leases as f64 / elapsed,
        p99_ms: percentile(&mut latencies, 0.99),
        open_s,
    };
    if label.is_empty() || label == UNPIPELINED {
        let totals = orch.counter_totals();
        println!(
            "| {backend:<8} | {:<11} | {:>5} | {:>6} | {:>7} | {:>8.1} | {:>9.0} | {:>8.2} | {:>8.2} | {:>10.2} | {:>7} | {:>9} | {:>10.2} |",
            if label.is_empty() { "pipelined" } else { label },
            sizes.nodes,
            sizes.render_ms,
            leases,
            elapsed,
            round.leases_per_s,
            percentile(&mut latencies, 0.50),
            round.p99_ms,
            percentile(&mut later, 0.99),
            totals.append_latency.count(),
            totals.batches_pipelined,
            totals.append_latency.sum_seconds / elapsed,
        );
        return round;
    }
    let stats = orch.view_stats().await;
    note_view(label, &stats);
    round
}

/// The view's size after a round (it should follow the live work only).
fn note_view(label: &str, stats: &orchestrator::ViewStats) {
    if !label.is_empty() {
        eprintln!(
            "  {label}: view after the round: {} jobs, {} retired, {} files, {} leases",
            stats.jobs, stats.retired, stats.files, stats.leases
        );
    }
}

/// Events in the store (positions are not dense on PostgreSQL: counted).
async fn count_events(store: &AnyStore) -> usize {
    let mut after = 0;
    let mut n = 0;
    loop {
        let batch = store.read_all(after, 10_000).await.expect("read");
        let Some(last) = batch.last() else {
            return n;
        };
        after = last.global_position;
        n += batch.len();
    }
}

/// The three rounds of issue 14 on one backend: empty store, long
/// history, many small renders.
async fn scale(backend: &str, open: impl AsyncFn() -> AnyStore, sizes: Sizes, history: Sizes) {
    let empty = run_round(backend, "empty", open().await, sizes).await;
    let store = open().await;
    let making = Instant::now();
    run_round(backend, "history (making it)", store.clone(), history).await;
    let events = count_events(&store).await;
    let making_s = making.elapsed().as_secs_f64();
    let with_history = run_round(backend, "after the history", store, sizes).await;
    let wide_sizes = Sizes {
        renders: sizes.renders * sizes.frames as usize / 10,
        frames: 10,
        ..sizes
    };
    let wide = run_round(backend, "many renders", open().await, wide_sizes).await;
    let row = |name: &str, r: Round| {
        println!(
            "| {backend:<8} | {name:<44} | {:>9.0} ({:.2}) | {:>8.1} ({:.2}) | {:>7.2} |",
            r.leases_per_s,
            r.leases_per_s / empty.leases_per_s,
            r.p99_ms,
            empty.p99_ms / r.p99_ms.max(f64::MIN_POSITIVE),
            r.open_s,
        );
    };
    row(
        &format!("empty, {} × {}", sizes.renders, sizes.frames),
        empty,
    );
    row(
        &format!(
            "{} finished renders, {events} events ({making_s:.0} s to make)",
            history.renders
        ),
        with_history,
    );
    row(
        &format!("empty, {} × {}", wide_sizes.renders, wide_sizes.frames),
        wide,
    );
}

/// The `p` quantile of `latencies`, in milliseconds.
fn percentile(latencies: &mut [Duration], p: f64) -> f64 {
    latencies.sort_unstable();
    let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
    latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            nodes: env_or("FLATRENDER_BENCH_NODES", 1_000),
            renders: env_or("FLATRENDER_BENCH_RENDERS", 100),
            frames: env_or("FLATRENDER_BENCH_FRAMES", 1_000) as u32,
            tenants: env_or("FLATRENDER_BENCH_TENANTS", 10),
            render_ms: env_or("FLATRENDER_BENCH_RENDER_MS", 0) as u64,
        }
    } else {
        Sizes {
            nodes: 20,
            renders: 4,
            frames: 25,
            tenants: 2,
            render_ms: 0,
        }
    };
    let only = std::env::var("FLATRENDER_BENCH_BACKEND").unwrap_or_default();
    // Under `cargo test` the three rounds run tiny (the default round is
    // their first).
    if !full || std::env::var("FLATRENDER_BENCH_SCALE").is_ok_and(|v| v == "1") {
        let history = Sizes {
            renders: if full {
                env_or("FLATRENDER_BENCH_HISTORY_RENDERS", 8_500)
            } else {
                40
            },
            frames: if full { 20 } else { 5 },
            ..sizes
        };
        println!("FlatRender scheduler over history ({sizes:?}; history {history:?})");
        println!(
            "| backend  | round                                        | leases/s (ratio) | p99 ms (empty ÷ this) | open s |"
        );
        println!(
            "|----------|----------------------------------------------|------------------|-----------------------|--------|"
        );
        if only.is_empty() || only == "postgres" {
            let dbs = std::sync::Mutex::new(Vec::new());
            let open = async || {
                let db = benches::FreshPg::create(16).await;
                let store = AnyStore::Postgres(db.store.clone());
                dbs.lock().expect("dbs").push(db);
                store
            };
            scale("postgres", open, sizes, history).await;
            let dbs: Vec<benches::FreshPg> = std::mem::take(&mut *dbs.lock().expect("dbs"));
            for db in dbs {
                db.drop_now().await;
            }
        }
        if only.is_empty() || only == "sqlite" {
            let dir = tempfile::tempdir().expect("tempdir");
            let n = std::sync::atomic::AtomicUsize::new(0);
            let open = async || {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = dir.path().join(format!("events-{i}.sqlite"));
                AnyStore::Sqlite(SqliteStore::open(&path).await.expect("sqlite"))
            };
            scale("sqlite", open, sizes, history).await;
        }
        return;
    }
    println!("FlatRender scheduler benchmark: claim → complete of every task ({sizes:?})");
    // "p99 later": every claim but each node's first, which at the start
    // all 1,000 nodes make in the same instant (one in a hundred claims of
    // the default run, so it alone can set the p99).
    // "appends": batches appended; "pipelined": of them, decided while the
    // one before was appended; "store busy": the time an append was in
    // flight ÷ the run's (1.0: the committer always waited on the store).
    println!(
        "| backend  | commit      | nodes | render | leases  | seconds  | leases/s  | p50 ms   | p99 ms   | p99 later  | appends | pipelined | store busy |"
    );
    println!(
        "|----------|-------------|-------|--------|---------|----------|-----------|----------|----------|------------|---------|-----------|------------|"
    );
    // Unpipelined and pipelined alternate on fresh stores, twice each
    // (`FLATRENDER_BENCH_REPEAT`), so that both see the same machine.
    let repeat = env_or("FLATRENDER_BENCH_REPEAT", 2);
    let mut ratios = Vec::new();
    if only.is_empty() || only == "postgres" {
        let mut sums = [0.0, 0.0];
        for _ in 0..repeat {
            for (i, pipeline) in [false, true].into_iter().enumerate() {
                let db = benches::FreshPg::create(16).await;
                sums[i] += run(
                    "postgres",
                    AnyStore::Postgres(db.store.clone()),
                    sizes,
                    pipeline,
                )
                .await
                .leases_per_s;
                db.drop_now().await;
            }
        }
        ratios.push(("postgres", sums));
    }
    if only.is_empty() || only == "sqlite" {
        let mut sums = [0.0, 0.0];
        for _ in 0..repeat {
            for (i, pipeline) in [false, true].into_iter().enumerate() {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(&dir.path().join("events.sqlite"))
                    .await
                    .expect("sqlite");
                sums[i] += run("sqlite", AnyStore::Sqlite(store), sizes, pipeline)
                    .await
                    .leases_per_s;
            }
        }
        ratios.push(("sqlite", sums));
    }
    for (backend, [unpipelined, pipelined]) in ratios {
        println!(
            "{backend}: pipelined {:.0} leases/s vs unpipelined {:.0} (mean of {repeat}): {:.2}x",
            pipelined / repeat as f64,
            unpipelined / repeat as f64,
            pipelined / unpipelined
        );
    }
}
