//! The api crate's integration tests: one binary.

mod audit;
mod blobs;
mod conformance;
mod contract_examples;
mod e2e;
mod enroll;
mod faults;
mod http;
mod lifecycle;
mod metrics;
mod monitor;
mod node_auth;
mod public;
mod refusals;
mod reseller;
mod slow_clients;
mod studio_cli;
mod submission;
mod tracing;
mod webhooks;
mod websocket;

use std::path::PathBuf;

use api::AppState;
use api::files::BlobStore;
use std::time::{Duration, Instant};

use eventstore::{AnyStore, EventStore, RecordedEvent, SqliteStore};
use uuid::Uuid;

/// A fresh embedded store and blob directory (blobs up to 1 MiB).
/// The broker for tests, or `None` (said loudly) when there is none and
/// services are not required.
pub fn amqp_url() -> Option<String> {
    match std::env::var("FLATRENDER_TEST_AMQP_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("FLATRENDER_REQUIRE_SERVICES=1 but FLATRENDER_TEST_AMQP_URL is not set")
        }
        _ => {
            eprintln!(
                "!!! SKIPPED: FLATRENDER_TEST_AMQP_URL is not set; broker checks did not run"
            );
            None
        }
    }
}

pub async fn state() -> (AppState, PathBuf) {
    state_with(1024 * 1024).await
}

/// A fresh embedded store and a blob directory taking blobs up to `limit`.
pub async fn state_with(limit: u64) -> (AppState, PathBuf) {
    let dir = std::env::temp_dir().join(format!("flatrender-api-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.join("events.sqlite")).await.unwrap());
    let blobs = BlobStore::open(&dir.join("blobs"), limit).await.unwrap();
    let state = AppState::open(
        store,
        blobs,
        std::sync::Arc::new(eventstore::SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    (state, dir)
}

/// Every event of the store, in log order.
pub async fn log(store: &AnyStore) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.global_position);
        let batch = store.read_all(after, 1000).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

/// Waits until `check` holds for the log, or panics after `secs`.
pub async fn until(
    store: &AnyStore,
    secs: u64,
    what: &str,
    check: impl Fn(&[RecordedEvent]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let events = log(store).await;
        if check(&events) {
            return;
        }
        let last: Vec<String> = events
            .iter()
            .rev()
            .take(40)
            .rev()
            .map(|e| format!("{} {}", e.routing_key, e.payload))
            .collect();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the last events:\n{}",
            last.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events with this routing key.
pub fn by<'a>(
    events: &'a [RecordedEvent],
    key: &'a str,
) -> impl Iterator<Item = &'a RecordedEvent> {
    events.iter().filter(move |e| e.routing_key == key)
}

/// A render of the bundled demo scene, frames `1..=frames` in tasks of
/// `chunk`, at `resolution` (or the scene's own).
pub async fn demo_render(
    orch: &orchestrator::Orchestrator,
    blobs: &BlobStore,
    tenant: domain::TenantId,
    frames: u32,
    chunk: u32,
    resolution: Option<(u32, u32)>,
) -> domain::JobId {
    let scene = api::seed::scene(
        orch,
        blobs,
        tenant,
        "demo.json",
        node_agent::renderer::builtin::DEMO_SCENE.as_bytes(),
    )
    .await
    .unwrap();
    let render = api::seed::Render {
        frames: (1, frames),
        chunk_size: chunk,
        resolution,
        ..Default::default()
    };
    api::seed::submit(orch, tenant, scene, &render)
        .await
        .unwrap()
}

/// A PNG of `width` × `height` that decodes.
pub fn png_of(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    let pixels: Vec<u8> = (0..width * height * 3).map(|i| (i % 253) as u8).collect();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    out
}

/// A node registered in-process (no agent) offering the builtin
/// renderer, heard from now.
pub async fn builtin_node(orch: &orchestrator::Orchestrator, name: &str) -> domain::NodeId {
    let node = domain::NodeId::new(Uuid::new_v4()).unwrap();
    orch.register_node(
        node,
        domain::Label::parse(name).unwrap(),
        domain::node::Capabilities {
            cores: 4,
            memory_bytes: 1 << 30,
            gpus: vec![],
            renderers: vec![domain::node::RendererInfo {
                name: domain::Identifier::parse("builtin").unwrap(),
                version: domain::Identifier::parse("1").unwrap(),
            }],
            tags: vec![],
            node_class: domain::Identifier::parse("standard").unwrap(),
        },
        domain::SecretKeyId::new(Uuid::new_v4()).unwrap(),
    )
    .await
    .unwrap();
    orch.heartbeat(node, &[]).await.unwrap();
    node
}
