//! Live progress and task logs (see `benches/README.md`), against the real
//! `flatrender` server on the embedded store (SQLite), its CPU measured
//! on its own runtime's threads (`server-*`), the clients and the load on
//! another runtime in the same process.
//!
//! 1. **WebSocket fan-out.** Watchers connect to `/v1/ws/renders/{id}`;
//!    in-process nodes then render at a fixed pace (claim, start, a frame,
//!    complete: four events of the render's stream per task). For every
//!    event and every client: arrival time minus the event's `at` (when
//!    the store recorded it), p50/p99; and per event, the arrival at its
//!    last client (p99). The server's CPU per delivered message is the
//!    CPU of the run minus that of the same pace with nobody watching
//!    (measured first, in the same run), over the messages delivered.
//!    Scenarios: 1,000 watchers of one render; 100 renders × 10 watchers.
//! 2. **Task logs.** Signed agents, each holding a lease, post 100 lines
//!    a second (`POST /v1/agent/tasks/{id}/logs`) while in-process nodes
//!    run the scheduler's claim → complete loop; leases per second of
//!    that loop with the log load against without it (same run), lines
//!    ingested per second, and the server's CPU per line (the log phase's
//!    CPU minus the phase without logs).
//!
//! 3. **Webhooks.** The same claim → complete loop while renders of ten
//!    hooked tenants are cancelled at `FLATRENDER_BENCH_NOTIFICATIONS_PER_SECOND`
//!    (default 1,000) and the dispatcher requests and delivers each
//!    notification to a local receiver: leases per second with against
//!    without (same run, before and after), notifications delivered per
//!    second.
//!
//! `cargo bench -p benches --bench live` (`FLATRENDER_BENCH_ONLY=fanout|logs|notifications`
//! for one phase); `FLATRENDER_BENCH_SECONDS`
//! (default 10) per phase, `FLATRENDER_BENCH_EVENTS_PER_SECOND` (default
//! 100), `FLATRENDER_BENCH_LOG_AGENTS` (default 200). Under `cargo test`
//! it runs briefly (20 watchers, 10 agents, 1 s).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::AppState;
use api::files::BlobStore;
use api::public::auth::{Auth, Jwt, RateLimit};
use contracts::node_signing::NodeSecret;
use domain::identity::Role;
use domain::{JobId, NodeId, TenantId};
use eventstore::{AnyStore, SqliteStore, SystemClock};
use futures_util::StreamExt;
use node_agent::client::AgentClient;
use tokio::runtime::Runtime;

const SECRET: &[u8] = b"the live benchmark's secret, 32 bytes or more";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile, in milliseconds.
fn quantile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable_by(f64::total_cmp);
    values[((values.len() as f64 * p) as usize).min(values.len() - 1)]
}

struct Farm {
    state: AppState,
    url: String,
    jwt: Jwt,
    _dir: tempfile::TempDir,
}

impl Farm {
    fn open(server: &Runtime) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let jwt = Jwt::hs256(SECRET, "flatrender", "flatrender-api").expect("jwt");
        let (state, url) = server.block_on(async {
            let store = AnyStore::Sqlite(
                SqliteStore::open(&dir.path().join("events.sqlite"))
                    .await
                    .expect("sqlite"),
            );
            let blobs = BlobStore::open(&dir.path().join("blobs"), 1 << 20)
                .await
                .expect("blobs");
            let config = orchestrator::Config {
                lease_ttl: chrono::Duration::hours(1),
                offline_after: chrono::Duration::hours(1),
                ..orchestrator::Config::default()
            };
            let state = AppState::open(store, blobs, Arc::new(SystemClock), config)
                .await
                .expect("state")
                .with_auth(Auth::new(jwt.clone(), RateLimit::new(1_000_000, 1_000_000)));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let app = api::router(state.clone());
            let limits = api::server::ServerLimits {
                max_connections: 20_000,
                ..Default::default()
            };
            tokio::spawn(api::server::serve(
                listener,
                app,
                limits,
                std::future::pending(),
            ));
            (state, url)
        });
        Self {
            state,
            url,
            jwt,
            _dir: dir,
        }
    }

    async fn tenant(&self, name: &str) -> (TenantId, String) {
        let tenant = api::seed::tenant(&self.state.orchestrator, name, 1, 1_000_000, 1 << 40)
            .await
            .expect("tenant");
        let user = api::users::create(
            &self.state.store,
            tenant,
            "bench@example.com",
            "Bench",
            Role::Member,
            chrono::Utc::now(),
        )
        .await
        .expect("user");
        let token = self
            .jwt
            .issue(
                user.as_uuid(),
                tenant.as_uuid(),
                Role::Member,
                chrono::Duration::hours(2),
            )
            .expect("token");
        (tenant, token)
    }

    async fn renders(
        &self,
        tenant: TenantId,
        count: usize,
        frames: u32,
        priority: u8,
    ) -> Vec<JobId> {
        let orch = &self.state.orchestrator;
        let scene = api::seed::scene(orch, &self.state.blobs, tenant, "s.json", b"{}")
            .await
            .expect("scene");
        let mut out = Vec::new();
        for _ in 0..count {
            let render = api::seed::Render {
                frames: (1, frames),
                chunk_size: 1,
                priority,
                ..Default::default()
            };
            out.push(
                api::seed::submit(orch, tenant, scene, &render)
                    .await
                    .expect("submit"),
            );
        }
        out
    }

    async fn nodes(&self, count: usize) -> Vec<NodeId> {
        let mut out = Vec::new();
        for n in 0..count {
            let node = NodeId::new(uuid::Uuid::new_v4()).expect("id");
            self.state
                .orchestrator
                .register_node(
                    node,
                    domain::Label::parse(format!("sim-{n}")).expect("label"),
                    domain::node::Capabilities {
                        cores: 8,
                        memory_bytes: 1 << 34,
                        gpus: vec![],
                        renderers: vec![domain::node::RendererInfo {
                            name: domain::Identifier::parse("builtin").expect("id"),
                            version: domain::Identifier::parse("1").expect("id"),
                        }],
                        tags: vec![],
                        node_class: domain::Identifier::parse("standard").expect("id"),
                    },
                    domain::SecretKeyId::new(uuid::Uuid::new_v4()).expect("id"),
                )
                .await
                .expect("register");
            self.state
                .orchestrator
                .heartbeat(node, &[])
                .await
                .expect("online");
            out.push(node);
        }
        out
    }
}

/// Nodes rendering tasks at `tasks_per_second` in all for `seconds`;
/// answers the tasks done.
async fn paced(
    orch: &orchestrator::Orchestrator,
    nodes: &[NodeId],
    tasks_per_second: f64,
    seconds: f64,
) -> usize {
    let every = Duration::from_secs_f64(nodes.len() as f64 / tasks_per_second);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    let n = nodes.len() as f64;
    for (i, node) in nodes.iter().enumerate() {
        let (orch, node) = (orch.clone(), *node);
        workers.push(tokio::spawn(async move {
            // Spread the nodes over the period.
            tokio::time::sleep(every.mul_f64(i as f64 / n)).await;
            let mut done = 0;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if !benches::farm::one_task(&orch, node).await {
                    break;
                }
                done += 1;
                next += every;
                tokio::time::sleep_until(next.into()).await;
            }
            done
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.expect("node");
    }
    total
}

/// What the watchers saw: each delivery's latency, and per event the
/// latest arrival.
#[derive(Default)]
struct Seen {
    latencies_ms: Vec<f64>,
    last_by_position: HashMap<i64, f64>,
}

/// What follows `key` in a message's text.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.find(key).map(|i| &text[i + key.len()..])
}

async fn watch(
    url: String,
    until: Arc<tokio::sync::Notify>,
    ready: Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<(i64, f64)> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let mut out = Vec::new();
    let stop = until.notified();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            frame = socket.next() => {
                let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = frame else {
                    if frame.is_none() { break; }
                    continue;
                };
                let now = chrono::Utc::now();
                if text.as_str().starts_with("{\"position\"") || text.as_str().contains("\"type\":\"snapshot\"") {
                    ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                // Only `position` and `at` are read (a cheap client, so that
                // the machine's time goes to the server).
                if let (Some(p), Some(at)) = (field(&text, "\"position\":"), field(&text, "\"at\":\"")) {
                    let p: i64 = p.split(|c: char| !c.is_ascii_digit()).next().unwrap_or("").parse().expect("position");
                    let at = chrono::DateTime::parse_from_rfc3339(at.split('"').next().unwrap_or("")).expect("at");
                    let ms = (now - at.with_timezone(&chrono::Utc)).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                    out.push((p, ms));
                }
            }
            () = &mut stop => break,
        }
    }
    out
}

fn fan_out(
    farm: &Farm,
    server: &Runtime,
    clients: &Runtime,
    renders: usize,
    per_render: usize,
    events_per_second: f64,
    seconds: f64,
) {
    let (tenant, token) = server.block_on(farm.tenant(&format!("fan-out {renders}x{per_render}")));
    let tasks_needed = (events_per_second / 4.0 * seconds * 3.0) as u32 + 10;
    let jobs =
        server.block_on(farm.renders(tenant, renders, tasks_needed / renders as u32 + 2, 50));
    let nodes = server.block_on(farm.nodes(4));
    let orch = farm.state.orchestrator.clone();
    let tasks_per_second = events_per_second / 4.0;

    // The same pace with nobody watching: the baseline CPU.
    let cpu = benches::cpu_seconds_of_threads("server");
    let base_tasks = clients.block_on(paced(&orch, &nodes, tasks_per_second, seconds));
    let base_cpu = benches::cpu_seconds_of_threads("server") - cpu;

    let stop = Arc::new(tokio::sync::Notify::new());
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let base = farm.url.replace("http://", "ws://");
    let watchers: Vec<_> = clients.block_on(async {
        let mut handles = Vec::new();
        for job in &jobs {
            for _ in 0..per_render {
                let url = format!("{base}/v1/ws/renders/{job}?token={token}");
                handles.push(tokio::spawn(watch(url, stop.clone(), ready.clone())));
                if handles.len() % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        // Every watcher has its snapshot before the measured phase.
        let want = jobs.len() * per_render;
        while ready.load(std::sync::atomic::Ordering::Relaxed) < want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handles
    });
    let cpu = benches::cpu_seconds_of_threads("server");
    let tasks = clients.block_on(paced(&orch, &nodes, tasks_per_second, seconds));
    clients.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
    let watched_cpu = benches::cpu_seconds_of_threads("server") - cpu;
    eprintln!(
        "fan-out {renders}×{per_render}: {tasks} tasks rendered while watched ({base_tasks} unwatched), {} watchers still connected",
        farm.state.live.watchers()
    );
    stop.notify_waiters();
    let mut seen = Seen::default();
    clients.block_on(async {
        for h in watchers {
            for (position, ms) in h.await.expect("watcher") {
                seen.latencies_ms.push(ms);
                let last = seen.last_by_position.entry(position).or_insert(ms);
                *last = last.max(ms);
            }
        }
    });
    let deliveries = seen.latencies_ms.len();
    let mut last: Vec<f64> = seen.last_by_position.values().copied().collect();
    let extra_cpu = (watched_cpu - base_cpu * tasks as f64 / base_tasks.max(1) as f64).max(0.0);
    println!(
        "| {renders:>3} × {per_render:<5} | {:>6} | {:>9} | {:>7.1} | {:>7.1} | {:>12.1} | {:>10.2} | {:>11.1} |",
        seen.last_by_position.len(),
        deliveries,
        quantile(&mut seen.latencies_ms, 0.50),
        quantile(&mut seen.latencies_ms, 0.99),
        quantile(&mut last, 0.99),
        watched_cpu,
        extra_cpu * 1e6 / deliveries.max(1) as f64,
    );
}

fn logs(farm: &Farm, server: &Runtime, clients: &Runtime, agents: usize, seconds: f64) {
    let (tenant, _) = server.block_on(farm.tenant("logs"));
    let (work_tenant, _) = server.block_on(farm.tenant("scheduler"));
    // The agents' tasks first (highest priority), then the scheduler's.
    server.block_on(farm.renders(tenant, 1, agents as u32, 100));
    let state = farm.state.clone();
    let url = farm.url.clone();
    let capabilities = serde_json::json!({
        "cores": 8, "memory_bytes": 1u64 << 34, "gpus": [],
        "renderers": [{ "name": "builtin", "version": "1" }], "tags": [], "node_class": "standard",
    });
    let held: Vec<(AgentClient, node_agent::client::LeaseRef)> = clients.block_on(async {
        let mut out = Vec::new();
        for n in 0..agents {
            let e = api::enroll::enrol(
                &state.store,
                &state.vault,
                &format!("logger-{n}"),
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
            let a = client.claim(0).await.expect("claim").expect("a task");
            let lease = node_agent::client::LeaseRef {
                task_id: a.task_id,
                lease_epoch: a.lease_epoch,
            };
            client.progress(lease, None, None).await.expect("start");
            out.push((client, lease));
        }
        out
    });
    // Enough for both phases at well over the rate this machine reaches.
    let tasks_needed = (4_000.0 * seconds * 3.0) as u32 + 1_000;
    server.block_on(farm.renders(work_tenant, 50, tasks_needed / 50, 10));
    let nodes = server.block_on(farm.nodes(50));
    let orch = farm.state.orchestrator.clone();
    let scheduler = |clients: &Runtime| {
        clients.block_on(async {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut workers = Vec::new();
            for node in &nodes {
                let (orch, node) = (orch.clone(), *node);
                workers.push(tokio::spawn(async move {
                    let mut done = 0usize;
                    while Instant::now() < deadline && benches::farm::one_task(&orch, node).await {
                        done += 1;
                    }
                    done
                }));
            }
            let mut total = 0;
            for w in workers {
                total += w.await.expect("node");
            }
            total
        })
    };
    let cpu = benches::cpu_seconds_of_threads("server");
    let started = Instant::now();
    let quiet = scheduler(clients);
    let quiet_rate = quiet as f64 / started.elapsed().as_secs_f64();
    let quiet_cpu = benches::cpu_seconds_of_threads("server") - cpu;

    // The same loop while every agent posts 100 lines a second.
    let line = "Fra:12 Mem:1024.00M (Peak 1100.00M) | Time:00:42.17 | Rendering 37 / 128 samples";
    let load = clients.spawn(async move {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let mut posters = Vec::new();
        for (i, (client, lease)) in held.into_iter().enumerate() {
            posters.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis((i * 1000 / agents.max(1)) as u64)).await;
                let mut sent = 0usize;
                let mut next = Instant::now();
                while Instant::now() < deadline {
                    let batch: Vec<(&str, String)> = (0..100)
                        .map(|n| ("stdout", format!("{line} #{n}")))
                        .collect();
                    client.logs(lease, &batch).await.expect("logs");
                    sent += batch.len();
                    next += Duration::from_secs(1);
                    tokio::time::sleep_until(next.into()).await;
                }
                sent
            }));
        }
        let mut total = 0;
        for p in posters {
            total += p.await.expect("poster");
        }
        total
    });
    let cpu = benches::cpu_seconds_of_threads("server");
    let started = Instant::now();
    let loaded = scheduler(clients);
    let loaded_rate = loaded as f64 / started.elapsed().as_secs_f64();
    let lines = clients.block_on(load).expect("load");
    let log_seconds = started.elapsed().as_secs_f64();
    let loaded_cpu = benches::cpu_seconds_of_threads("server") - cpu;
    // Quiet again: the baseline is the mean of the phases before and after
    // (this machine drifts).
    let started = Instant::now();
    let after = scheduler(clients);
    let after_rate = after as f64 / started.elapsed().as_secs_f64();
    let baseline = (quiet_rate + after_rate) / 2.0;
    let per_line = (loaded_cpu - quiet_cpu).max(0.0) * 1e6 / lines.max(1) as f64;
    println!(
        "| {agents:>6} | {:>9.0} | {:>6.0} / {:<6.0} | {:>10.0} | {:>5.2} | {:>13.1} |",
        lines as f64 / log_seconds,
        quiet_rate,
        after_rate,
        loaded_rate,
        loaded_rate / baseline,
        per_line,
    );
}

/// The scheduler's claim → complete loop with and without webhook
/// notifications being requested and delivered at `rate` a second to a
/// local receiver (10 tenants, one endpoint each). With `hooked` false the
/// same cancellations are appended but no endpoint is registered and no
/// dispatcher runs: what the load alone costs the scheduler.
fn notifications(
    farm: &Farm,
    server: &Runtime,
    clients: &Runtime,
    rate: u64,
    seconds: f64,
    hooked: bool,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let received = Arc::new(AtomicU64::new(0));
    let receiver_url = server.block_on(async {
        let counter = received.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    });
    let defaults = api::webhooks::WebhookConfig::default();
    let config = api::webhooks::WebhookConfig {
        allow_private: true,
        min_round: Duration::from_millis(env_or(
            "FLATRENDER_BENCH_WEBHOOK_ROUND_MS",
            defaults.min_round.as_millis() as u64,
        )),
        ..defaults
    };
    let state = farm.state.clone().with_webhooks(config.clone());
    let dispatcher = state.dispatcher.clone().expect("dispatcher");
    let mut tenants = Vec::new();
    for n in 0..10 {
        let (tenant, _) = server.block_on(farm.tenant(&format!("hooked-{n}")));
        tenants.push(tenant);
        if !hooked {
            continue;
        }
        server
            .block_on(api::webhooks::register(
                &state.store,
                &state.vault,
                &config,
                tenant,
                &receiver_url,
                vec![domain::notification::NotificationKind::RenderCancelled],
                eventstore::Actor::System {
                    component: "bench".into(),
                },
            ))
            .expect("register");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = hooked.then(|| server.spawn(dispatcher.clone().run(stopped)));
    let (work_tenant, _) = server.block_on(farm.tenant("scheduled"));
    let tasks_needed = (4_000.0 * seconds * 3.0) as u32 + 1_000;
    server.block_on(farm.renders(work_tenant, 50, tasks_needed / 50, 10));
    let nodes = server.block_on(farm.nodes(50));
    let orch = farm.state.orchestrator.clone();
    let scheduler = |clients: &Runtime| {
        let started = Instant::now();
        let done: usize = clients.block_on(async {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut workers = Vec::new();
            for node in &nodes {
                let (orch, node) = (orch.clone(), *node);
                workers.push(tokio::spawn(async move {
                    let mut done = 0usize;
                    while Instant::now() < deadline && benches::farm::one_task(&orch, node).await {
                        done += 1;
                    }
                    done
                }));
            }
            let mut total = 0;
            for w in workers {
                total += w.await.expect("node");
            }
            total
        });
        done as f64 / started.elapsed().as_secs_f64()
    };
    let quiet = scheduler(clients);
    // Renders of the hooked tenants cancelled at `rate` a second (the
    // events alone, appended in batches every 10 ms), while the loop runs.
    let store = farm.state.store.clone();
    let feeder = clients.spawn(async move {
        use eventstore::EventStore;
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let per_tick = (rate / 100).max(1) as usize;
        let mut next = Instant::now();
        let mut sent = 0u64;
        while Instant::now() < deadline {
            let requests = (0..per_tick)
                .map(|i| {
                    let job = JobId::new(uuid::Uuid::new_v4()).expect("id");
                    let tenant = tenants[(sent as usize + i) % tenants.len()];
                    let event =
                        domain::RenderJobEvent::Cancelled(domain::render_job::JobCancelled {
                            job_id: job,
                            tenant_id: tenant,
                            reason: None,
                            cancelled_at: chrono::Utc::now(),
                        });
                    eventstore::AppendRequest {
                        stream_id: job.as_uuid(),
                        stream_type: "render_job".into(),
                        tenant_id: Some(tenant.as_uuid()),
                        expected: eventstore::ExpectedVersion::NoStream,
                        events: vec![eventstore::NewEvent::from_domain(
                            uuid::Uuid::new_v4(),
                            &event,
                            eventstore::EventMetadata {
                                correlation_id: uuid::Uuid::new_v4(),
                                causation_id: None,
                                actor: eventstore::Actor::System {
                                    component: "bench".into(),
                                },
                                trace_id: None,
                            },
                        )],
                    }
                })
                .collect();
            for r in store.append_many(requests).await {
                r.expect("append");
            }
            sent += per_tick as u64;
            next += Duration::from_millis(10);
            tokio::time::sleep_until(next.into()).await;
        }
        sent
    });
    let before = dispatcher.counts().delivered;
    let started = Instant::now();
    let loaded = scheduler(clients);
    let requested = clients.block_on(feeder).expect("feeder");
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = dispatcher.counts().delivered - before;
    let after = scheduler(clients);
    let baseline = (quiet + after) / 2.0;
    println!(
        "| {:>9} | {:>8.0} | {:>9.0} | {:>6.0} / {:<6.0} | {:>10.0} | {:>5.2} | {:>8} |",
        if hooked { "delivered" } else { "load only" },
        requested as f64 / elapsed,
        delivered as f64 / elapsed,
        quiet,
        after,
        loaded,
        loaded / baseline,
        received.load(Ordering::Relaxed),
    );
    stop.send(true).ok();
    if let Some(running) = running {
        server.block_on(running).expect("dispatcher");
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = if full {
        env_or("FLATRENDER_BENCH_SECONDS", 10) as f64
    } else {
        1.0
    };
    let events_per_second = env_or("FLATRENDER_BENCH_EVENTS_PER_SECOND", 100) as f64;
    let agents = if full {
        env_or("FLATRENDER_BENCH_LOG_AGENTS", 200) as usize
    } else {
        10
    };
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server-rt")
        .enable_all()
        .build()
        .expect("server runtime");
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("clients-rt")
        .enable_all()
        .build()
        .expect("clients runtime");
    let farm = Farm::open(&server);
    println!(
        "FlatRender live benchmark ({seconds} s per phase, {events_per_second} render events/s)"
    );
    println!(
        "| renders × watchers | events | deliveries | p50 ms | p99 ms | p99 last client ms | server CPU s | µs/delivery |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let watchers = env_or("FLATRENDER_BENCH_WATCHERS", 1000) as usize;
    let (big, spread) = if full {
        ((1, watchers), (100, watchers / 100))
    } else {
        ((1, 20), (4, 5))
    };
    let only = std::env::var("FLATRENDER_BENCH_ONLY").unwrap_or_default();
    let runs = |phase: &str| only.is_empty() || only == phase;
    if runs("fanout") {
        fan_out(
            &farm,
            &server,
            &clients,
            big.0,
            big.1,
            events_per_second,
            seconds,
        );
        fan_out(
            &farm,
            &server,
            &clients,
            spread.0,
            spread.1,
            events_per_second,
            seconds,
        );
    }
    println!();
    println!(
        "| agents | lines/s | leases/s without logs (before / after) | leases/s with logs | ratio | server µs/line |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    if runs("logs") {
        logs(&farm, &server, &clients, agents, seconds);
    }
    println!();
    println!(
        "| webhooks | cancellations/s | delivered/s | leases/s without (before / after) | leases/s with | ratio | received |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let rate = if full {
        env_or("FLATRENDER_BENCH_NOTIFICATIONS_PER_SECOND", 1000)
    } else {
        100
    };
    if runs("notifications") {
        // FLATRENDER_BENCH_WEBHOOKS=off: the same load with no endpoint.
        let hooked = std::env::var("FLATRENDER_BENCH_WEBHOOKS").map_or(true, |v| v != "off");
        notifications(&farm, &server, &clients, rate, seconds, hooked);
    }
    drop(farm);
    server.shutdown_timeout(Duration::from_secs(1));
}
