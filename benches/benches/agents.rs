//! End to end through the node-agent API: simulated agents with a
//! zero-cost renderer (a fixed 1×1 PNG per frame), each on its own HTTP
//! connection with HMAC-signed requests, against the real `flatrender`
//! application on the embedded store (SQLite). Reports frames per second
//! end to end and the server's CPU time per frame.
//!
//! The server runs on its own Tokio runtime whose threads are named
//! `server-*`; its CPU time is the sum of those threads' user + system time
//! from `/proc/self/task/*/stat`, so the simulated agents' own work (on
//! `agents-*` threads) is not counted.
//!
//! `cargo bench -p benches --bench agents`; `FLATRENDER_BENCH_AGENTS`
//! (default 200), `FLATRENDER_BENCH_FRAMES` (default 10,000) and
//! `FLATRENDER_BENCH_CHUNK` (frames per task, default 10). Under `cargo
//! test` it runs 8 agents and 80 frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::AppState;
use api::files::BlobStore;
use contracts::node_signing::NodeSecret;
use eventstore::{AnyStore, SqliteStore, SystemClock};
use node_agent::client::{AgentClient, LeaseRef};
use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A valid 1×1 PNG: the zero-cost renderer's every frame.
fn tiny_png() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 1, 1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("png header");
        writer.write_image_data(&[200, 100, 50]).expect("png data");
    }
    out
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (agents, frames, chunk) = if full {
        (
            env_or("FLATRENDER_BENCH_AGENTS", 200),
            env_or("FLATRENDER_BENCH_FRAMES", 10_000),
            env_or("FLATRENDER_BENCH_CHUNK", 10),
        )
    } else {
        (8, 80, 10)
    };
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server-rt")
        .enable_all()
        .build()
        .expect("server runtime");
    let agents_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("agents-rt")
        .enable_all()
        .build()
        .expect("agents runtime");

    let dir = tempfile::tempdir().expect("tempdir");
    let (state, url) = server_rt.block_on(async {
        let store = AnyStore::Sqlite(
            SqliteStore::open(&dir.path().join("events.sqlite"))
                .await
                .expect("sqlite"),
        );
        let blobs = BlobStore::open(&dir.path().join("blobs"), 1 << 20)
            .await
            .expect("blobs");
        let state = AppState::open(
            store,
            blobs,
            Arc::new(SystemClock),
            orchestrator::Config::default(),
        )
        .await
        .expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = api::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (state, url)
    });

    // Enrol and register the agents (not timed).
    let capabilities = json!({
        "cores": 8, "memory_bytes": 1u64 << 34, "gpus": [],
        "renderers": [{ "name": "builtin", "version": "1" }], "tags": [], "node_class": "standard",
    });
    let clients: Vec<AgentClient> = agents_rt.block_on(async {
        let mut clients = Vec::new();
        for n in 0..agents {
            let e = api::enroll::enrol(
                &state.store,
                &state.vault,
                &format!("bench-{n}"),
                chrono::Utc::now(),
            )
            .await
            .expect("enrol");
            let client = AgentClient::new(
                &url,
                e.node_id,
                e.key_id,
                NodeSecret::from_hex(&e.secret_hex).expect("secret"),
            );
            client.register(&capabilities).await.expect("register");
            client.heartbeat(&[]).await.expect("heartbeat");
            clients.push(client);
        }
        clients
    });
    // The render (not timed).
    server_rt.block_on(async {
        let orch = &state.orchestrator;
        let tenant = api::seed::tenant(orch, "Bench", 1, 100_000, 1_000_000_000)
            .await
            .expect("tenant");
        let scene = api::seed::scene(orch, &state.blobs, tenant, "s.json", b"{}")
            .await
            .expect("scene");
        let render = api::seed::Render {
            frames: (1, frames as u32),
            chunk_size: chunk as u32,
            ..Default::default()
        };
        api::seed::submit(orch, tenant, scene, &render)
            .await
            .expect("submit");
    });

    let png = Arc::new(tiny_png());
    let cpu_before = benches::cpu_seconds_of_threads("server");
    let started = Instant::now();
    let rendered: u64 = agents_rt.block_on(async {
        let mut workers = Vec::new();
        for client in clients {
            let png = png.clone();
            workers.push(tokio::spawn(async move {
                let mut frames = 0u64;
                loop {
                    let Some(a) = client.claim(0).await.expect("claim") else {
                        return frames;
                    };
                    let lease = LeaseRef {
                        task_id: a.task_id,
                        lease_epoch: a.lease_epoch,
                    };
                    client.progress(lease, None, None).await.expect("start");
                    for frame in a.frames.start..=a.frames.end {
                        let file = client
                            .upload_output(lease, frame, png.to_vec())
                            .await
                            .expect("upload");
                        client
                            .progress(lease, Some(frame), Some(file))
                            .await
                            .expect("progress");
                        frames += 1;
                    }
                    client.complete(lease).await.expect("complete");
                }
            }));
        }
        let mut total = 0;
        for w in workers {
            total += w.await.expect("agent");
        }
        total
    });
    let elapsed = started.elapsed();
    let cpu = benches::cpu_seconds_of_threads("server") - cpu_before;
    assert_eq!(rendered, frames, "every frame rendered once");
    let fps = rendered as f64 / elapsed.as_secs_f64();
    println!(
        "agents over HTTP+HMAC (SQLite): {agents} agents, {frames} frames in tasks of {chunk}: \
         {:.1} s, {fps:.0} frames/s end to end, server CPU {:.2} ms/frame",
        elapsed.as_secs_f64(),
        cpu * 1000.0 / rendered as f64
    );
    drop(state);
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
