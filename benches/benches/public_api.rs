//! The public API under load, against the same work done directly, in the
//! same run (see `benches/README.md`).
//!
//! - `GET /v1/renders?page_size=20` with 10,000 renders in the read model
//!   (PostgreSQL), from a second process (this benchmark re-run as a load
//!   client) holding 200 connections, each sending its next request when
//!   the last is answered: requests/s and p99. The baseline runs the same
//!   two queries (the page, and the tenant row with its render count)
//!   through the same pool, 200 at a time.
//! - `POST /v1/renders` with an `Idempotency-Key`: renders accepted per
//!   second over HTTP (16 at a time), against the orchestrator's own
//!   `submit` of the same renders.
//!
//! `cargo bench -p benches --bench public_api`; `FLATRENDER_BENCH_SECONDS`
//! (default 5) per measurement, `FLATRENDER_BENCH_CONNECTIONS` (default
//! 200). `cargo test --all-targets` runs it briefly (fewer renders).

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::public::auth::{Auth, Jwt, RateLimit};
use domain::identity::Role;
use eventstore::AnyStore;
use projections::query::{Param, rows};
use serde_json::json;
use uuid::Uuid;

const SECRET: &[u8] = b"the benchmark's secret, at least 32 bytes long";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p99 of latencies in microseconds.
fn p99(latencies: &mut [u64]) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort_unstable();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)] as f64 / 1000.0
}

/// The load client (a second process): `connections` loops of GET for
/// `seconds`; prints `requests latencies_p99_ms errors`.
async fn client(url: String, token: String, connections: usize, seconds: u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let started = Instant::now();
                match http.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(started.elapsed().as_micros() as u64);
                    }
                    other => {
                        if errors == 0 {
                            match other {
                                Ok(r) => eprintln!(
                                    "load client: {} {}",
                                    r.status(),
                                    r.text().await.unwrap_or_default()
                                ),
                                Err(e) => eprintln!("load client: {e}"),
                            }
                        }
                        errors += 1
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("task");
        all.extend(l);
        errors += e;
    }
    println!("{} {:.3} {errors}", all.len(), p99(&mut all));
}

/// Fills the read model with `n` renders of one tenant (submitted through
/// the orchestrator, projected by the runner).
async fn fill(state: &api::AppState, tenant: domain::TenantId, n: usize) {
    let scene = api::seed::scene(
        &state.orchestrator,
        &state.blobs,
        tenant,
        "demo.json",
        node_agent::renderer::builtin::DEMO_SCENE.as_bytes(),
    )
    .await
    .expect("scene");
    let render = api::seed::Render {
        frames: (1, 4),
        chunk_size: 2,
        ..api::seed::Render::default()
    };
    let orch = Arc::new(state.orchestrator.clone());
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (orch, render) = (orch.clone(), render.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (w..n).step_by(8) {
                api::seed::submit(&orch, tenant, scene, &render)
                    .await
                    .expect("submit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("fill");
    }
    let mut runner =
        projections::Runner::new(state.store.clone(), projections::RunnerOptions::default());
    runner.catch_up(|_, _, _| {}).await.expect("projections");
    runner.release().await;
}

/// The baseline: the handler's two queries, `connections` at a time.
async fn direct(store: &AnyStore, tenant: Uuid, connections: usize, seconds: u64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let params = vec![Param::Text(tenant.to_string())];
            while Instant::now() < deadline {
                let t = Instant::now();
                projections::query::tenant(&store, tenant)
                    .await
                    .expect("tenant")
                    .expect("a tenant row");
                let mut paged = params.clone();
                paged.extend([Param::Int(20), Param::Int(0)]);
                rows::<projections::RenderRow>(
                    &store,
                    "tenant_id = $1 ORDER BY submitted_at DESC, render_id LIMIT $2 OFFSET $3",
                    &paged,
                )
                .await
                .expect("rows");
                latencies.push(t.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    (rate, p99(&mut all))
}

async fn submit_rate(
    state: &api::AppState,
    url: &str,
    token: &str,
    tenant: domain::TenantId,
    n: usize,
) -> (f64, f64) {
    let scene = {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{url}/v1/files?name=bench.json"))
            .bearer_auth(token)
            .body(node_agent::renderer::builtin::DEMO_SCENE)
            .send()
            .await
            .expect("upload");
        let v: serde_json::Value = r.json().await.expect("json");
        v["id"].as_str().expect("id").to_string()
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (http, url, token, scene) = (
            http.clone(),
            url.to_string(),
            token.to_string(),
            scene.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                let r = http
                    .post(format!("{url}/v1/renders"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("bench-{i}"))
                    .json(&json!({ "scene_file_id": scene, "renderer": "builtin", "frames": { "start": 1, "end": 4 }, "chunk_size": 2 }))
                    .send()
                    .await
                    .expect("submit");
                assert_eq!(r.status(), reqwest::StatusCode::CREATED);
            }
        }));
    }
    for t in tasks {
        t.await.expect("submit");
    }
    let api_rate = n as f64 / started.elapsed().as_secs_f64();
    let scene_id = domain::FileId::new(Uuid::parse_str(&scene).expect("uuid")).expect("id");
    let render = api::seed::Render {
        frames: (1, 4),
        chunk_size: 2,
        ..api::seed::Render::default()
    };
    let orch = Arc::new(state.orchestrator.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (orch, render) = (orch.clone(), render.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (w..n).step_by(16) {
                api::seed::submit(&orch, tenant, scene_id, &render)
                    .await
                    .expect("submit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("submit");
    }
    (api_rate, n as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Ok(spec) = std::env::var("FLATRENDER_BENCH_CLIENT") {
        let mut parts = spec.split(' ');
        let url = parts.next().expect("url").to_string();
        let token = parts.next().expect("token").to_string();
        let connections: usize = parts
            .next()
            .and_then(|c| c.parse().ok())
            .expect("connections");
        let seconds: u64 = parts.next().and_then(|c| c.parse().ok()).expect("seconds");
        client(url, token, connections, seconds).await;
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (renders, seconds, submits) = if full {
        (10_000, env_or("FLATRENDER_BENCH_SECONDS", 5), 2_000)
    } else {
        (200, 1, 50)
    };
    let connections = env_or("FLATRENDER_BENCH_CONNECTIONS", if full { 200 } else { 20 }) as usize;
    let pg = benches::FreshPg::create(32).await;
    let store = AnyStore::Postgres(pg.store.clone());
    let dir = tempfile::tempdir().expect("temp dir");
    let blobs = api::files::BlobStore::open(&dir.path().join("blobs"), 1 << 24)
        .await
        .expect("blobs");
    let jwt = Jwt::hs256(SECRET, "flatrender", "flatrender-api").expect("jwt");
    let state = api::AppState::open(
        store.clone(),
        blobs,
        Arc::new(eventstore::SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .expect("state")
    .with_auth(Auth::new(jwt.clone(), RateLimit::new(1_000_000, 1_000_000)));
    let tenant = api::seed::tenant(&state.orchestrator, "Bench", 1, 1000, 1_000_000_000)
        .await
        .expect("tenant");
    fill(&state, tenant, renders).await;
    let read_models = api::read_models::ReadModels::spawn(&store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let limits = api::server::ServerLimits {
        max_connections: (connections as u32 + 50).max(256),
        ..api::server::ServerLimits::default()
    };
    let server = tokio::spawn(api::server::serve(
        listener,
        api::router(state.clone()),
        limits,
        std::future::pending(),
    ));
    let user = api::users::create(
        &store,
        tenant,
        "bench@example.com",
        "Bench",
        Role::Member,
        chrono::Utc::now(),
    )
    .await
    .expect("user");
    let token = jwt
        .issue(
            user.as_uuid(),
            tenant.as_uuid(),
            Role::Member,
            chrono::Duration::hours(1),
        )
        .expect("token");
    // One request first: an answer that is not 200 says why at once.
    let probe = reqwest::Client::new()
        .get(format!("{url}/v1/renders?page_size=20"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("probe");
    let status = probe.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        probe.text().await.unwrap_or_default()
    );

    println!(
        "Public API: GET /v1/renders?page_size=20 with {renders} renders (PostgreSQL), {connections} connections, {seconds} s"
    );
    let (direct_rate, direct_p99) = direct(&store, tenant.as_uuid(), connections, seconds).await;
    let exe = std::env::current_exe().expect("exe");
    let out = tokio::process::Command::new(exe)
        .env(
            "FLATRENDER_BENCH_CLIENT",
            format!("{url}/v1/renders?page_size=20 {token} {connections} {seconds}"),
        )
        .output()
        .await
        .expect("load client");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let requests: f64 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .expect("requests");
    let api_p99: f64 = fields.next().and_then(|v| v.parse().ok()).expect("p99");
    let errors: u64 = fields.next().and_then(|v| v.parse().ok()).expect("errors");
    let api_rate = requests / seconds as f64;
    println!("| path | requests/s | p99 ms |");
    println!("|---|---:|---:|");
    println!("| direct (same two queries, same pool) | {direct_rate:.0} | {direct_p99:.2} |");
    println!("| HTTP, second process | {api_rate:.0} | {api_p99:.2} |");
    println!("ratio {:.2}, {errors} errors", api_rate / direct_rate);
    assert_eq!(errors, 0, "the API answered errors under load");

    let (api_submits, direct_submits) = submit_rate(&state, &url, &token, tenant, submits).await;
    println!(
        "Submit ({submits} renders, 16 at a time): HTTP with Idempotency-Key {api_submits:.0}/s, orchestrator directly {direct_submits:.0}/s, ratio {:.2}",
        api_submits / direct_submits
    );
    server.abort();
    read_models.stop().await;
    pg.drop_now().await;
}
