//! The agent through orchestrator outages, against the real application:
//! a first URL that is dead or answers 503, uploads the orchestrator cannot
//! take, and claims after an outage. An outage is a layer in front of the
//! application that answers 503 with the contract's error body (what a
//! server whose store does not answer says), switched on and off by the
//! test.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use api::AppState;
use axum::response::IntoResponse;
use contracts::node_signing::NodeSecret;
use eventstore::EventStore;
use node_agent::agent::{Agent, AgentSettings, Backoff, RunSummary};
use node_agent::client::AgentClient;
use node_agent::config::{NodeArgs, NodeConfig};
use serde_json::json;
use tokio::time::Instant;

use super::server_with;

/// What the layer in front of the application does and saw.
#[derive(Debug, Default)]
struct Gate {
    /// While set, every request is answered 503.
    down: AtomicBool,
    /// When set, the first output upload sets `down` (and is answered 503).
    down_on_first_upload: AtomicBool,
    /// Claims let through.
    claims: AtomicUsize,
    /// Claims answered 503.
    refused_claims: AtomicUsize,
    /// Releases answered 503.
    refused_releases: AtomicUsize,
}

/// A 503 with the contract's error body.
fn unavailable() -> axum::response::Response {
    let body = json!({ "error": {
        "code": "not_ready",
        "message": "the event store does not answer (a test's outage)",
        "details": {},
        "trace_id": "test-outage",
    }});
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The real application behind `gate`.
async fn gated_server(gate: Arc<Gate>) -> (AppState, String, std::path::PathBuf) {
    server_with(move |router| {
        router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let gate = gate.clone();
                async move {
                    let path = request.uri().path().to_string();
                    if path.starts_with("/v1/agent/outputs/")
                        && gate.down_on_first_upload.swap(false, SeqCst)
                    {
                        gate.down.store(true, SeqCst);
                    }
                    let claim = path == "/v1/agent/claim";
                    if gate.down.load(SeqCst) {
                        if claim {
                            gate.refused_claims.fetch_add(1, SeqCst);
                        }
                        if path.ends_with("/release") {
                            gate.refused_releases.fetch_add(1, SeqCst);
                        }
                        return unavailable();
                    }
                    if claim {
                        gate.claims.fetch_add(1, SeqCst);
                    }
                    next.run(request).await
                }
            },
        ))
    })
    .await
}

/// A server that answers every request 503, counting them.
async fn unavailable_server(hits: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, SeqCst);
            unavailable()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A URL nothing listens on (a port bound, then let go).
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Enrols a node and queues a render of `frames` frames, one task.
async fn node_and_job(state: &AppState, name: &str, frames: u32) -> api::enroll::Enrolment {
    let enrolment = api::enroll::enrol(&state.store, &state.vault, name, chrono::Utc::now())
        .await
        .unwrap();
    let orch = &state.orchestrator;
    let tenant = api::seed::tenant(orch, "Studio", 1, 10, 10_000)
        .await
        .unwrap();
    let scene_bytes = node_agent::renderer::builtin::DEMO_SCENE.as_bytes();
    let scene = api::seed::scene(orch, &state.blobs, tenant, "demo.json", scene_bytes)
        .await
        .unwrap();
    let render = api::seed::Render {
        frames: (1, frames),
        chunk_size: frames,
        ..Default::default()
    };
    api::seed::submit(orch, tenant, scene, &render)
        .await
        .unwrap();
    enrolment
}

fn client(url: &str, enrolment: &api::enroll::Enrolment) -> AgentClient {
    AgentClient::new(
        url,
        enrolment.node_id,
        enrolment.key_id,
        NodeSecret::from_hex(&enrolment.secret_hex).unwrap(),
    )
}

fn renderers() -> node_agent::Renderers {
    let mut renderers = node_agent::Renderers::new();
    renderers.register(Box::new(
        node_agent::renderer::builtin::BuiltinRenderer::new(),
    ));
    renderers
}

/// Quick settings for tests: heartbeats every second, claims that wait a
/// second.
fn settings(data_dir: &Path) -> AgentSettings {
    AgentSettings {
        data_dir: data_dir.to_path_buf(),
        capabilities: json!({
            "cores": 2, "memory_bytes": 1u64 << 30, "gpus": [],
            "renderers": [{ "name": "builtin", "version": "1" }], "tags": [],
            "node_class": "standard",
        }),
        heartbeat_every: Duration::from_secs(1),
        claim_wait_seconds: 1,
        max_tasks: None,
        backoff: Backoff::DEFAULT,
        give_up_after: AgentSettings::GIVE_UP_AFTER,
    }
}

/// Waits (polling) until `check` holds; panics after `bound`.
async fn until(what: &str, bound: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + bound;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count(state: &AppState, routing_key: &str) -> usize {
    let events = state.store.read_all(0, 10_000).await.unwrap();
    events
        .iter()
        .filter(|e| e.routing_key == routing_key)
        .count()
}

/// The first URL is dead, the second answers 503: the agent (configured
/// as an operator would, with the flags' comma-separated list) moves on to
/// the third, does its work there, and stays there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fails_over_from_dead_and_unavailable_urls_and_works_on_the_next() {
    let (state, live, dir) = super::server().await;
    let enrolment = node_and_job(&state, "render-failover", 1).await;
    let unavailable_hits = Arc::new(AtomicUsize::new(0));
    let unavailable = unavailable_server(unavailable_hits.clone()).await;
    let config = NodeConfig::resolve(
        NodeArgs {
            server_url: vec![format!("{},{unavailable}", dead_url()), live.clone()],
            node_id: Some(enrolment.node_id),
            key_id: Some(enrolment.key_id),
            data_dir: Some(dir.join("node")),
            heartbeat_seconds: Some(1),
            max_tasks: Some(1),
            ..Default::default()
        },
        Some(enrolment.secret_hex.clone()),
    )
    .unwrap();
    assert_eq!(config.server_urls.as_slice().len(), 3);
    let summary = tokio::time::timeout(Duration::from_secs(60), config.run(std::future::pending()))
        .await
        .expect("the agent did its work through the third URL within 60 s")
        .unwrap();
    assert_eq!(
        summary,
        RunSummary {
            completed: 1,
            frames: 1,
            ..Default::default()
        }
    );
    assert_eq!(count(&state, "render.task.completed.v1").await, 1);
    assert_eq!(
        unavailable_hits.load(SeqCst),
        1,
        "one registration attempt, then the agent stayed on the URL that works"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The orchestrator goes down when the first frame is uploaded: the agent
/// retries for `give_up_after`, gives the task back, and the release
/// (which cannot be delivered while the orchestrator is down) reaches it
/// once it answers again, so the task is requeued at once rather than when
/// its lease expires; the agent then claims it again and completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_gives_up_on_a_task_releases_its_lease_once_the_orchestrator_is_back() {
    let gate = Arc::new(Gate::default());
    gate.down_on_first_upload.store(true, SeqCst);
    let (state, url, dir) = gated_server(gate.clone()).await;
    let enrolment = node_and_job(&state, "render-gives-up", 1).await;
    let settings = AgentSettings {
        give_up_after: Duration::from_secs(2),
        // The task given back, then the same task completed.
        max_tasks: Some(2),
        ..settings(&dir.join("node"))
    };
    let agent = Agent::new(client(&url, &enrolment), renderers(), settings);
    let run = tokio::spawn(agent.run(std::future::pending()));

    until(
        "the agent tried to release the lease during the outage",
        Duration::from_secs(30),
        || gate.refused_releases.load(SeqCst) >= 1,
    )
    .await;
    assert_eq!(count(&state, "render.task.released.v1").await, 0);
    gate.down.store(false, SeqCst);

    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the agent finished within 60 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        summary,
        RunSummary {
            completed: 1,
            abandoned: 1,
            frames: 1,
            ..Default::default()
        }
    );
    assert_eq!(count(&state, "render.task.released.v1").await, 1);
    assert_eq!(count(&state, "render.task.assigned.v1").await, 2);
    assert_eq!(count(&state, "render.task.completed.v1").await, 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Claims back off for long (here at least 10 s after the first failure),
/// but once the orchestrator answers again — a heartbeat gets through —
/// the pending backoff is cut short and the next claim comes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_next_claim_comes_as_soon_as_heartbeats_are_answered() {
    let gate = Arc::new(Gate::default());
    let (state, url, dir) = gated_server(gate.clone()).await;
    let enrolment = api::enroll::enrol(
        &state.store,
        &state.vault,
        "render-recovers",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let settings = AgentSettings {
        backoff: Backoff {
            first: Duration::from_secs(20),
            cap: Duration::from_secs(30),
        },
        ..settings(&dir.join("node"))
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = Agent::new(client(&url, &enrolment), renderers(), settings);
    let run = tokio::spawn(agent.run(async {
        let _ = stopped.await;
    }));

    until("a first claim", Duration::from_secs(30), || {
        gate.claims.load(SeqCst) >= 1
    })
    .await;
    gate.down.store(true, SeqCst);
    until("a claim during the outage", Duration::from_secs(30), || {
        gate.refused_claims.load(SeqCst) >= 1
    })
    .await;
    // The agent now backs off for 10 to 30 s, unless something succeeds.
    let claims = gate.claims.load(SeqCst);
    let lifted = Instant::now();
    gate.down.store(false, SeqCst);
    until("a claim after the outage", Duration::from_secs(30), || {
        gate.claims.load(SeqCst) > claims
    })
    .await;
    let took = lifted.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the first claim came {took:?} after the outage"
    );

    stop.send(()).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the agent stopped")
        .unwrap()
        .unwrap();
    assert_eq!(summary, RunSummary::default());
    std::fs::remove_dir_all(dir).unwrap();
}
