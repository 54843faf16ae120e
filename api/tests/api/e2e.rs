//! End to end with real processes: the server in this test, node agents as
//! `flatrender agent` child processes talking signed HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use api::AppState;
use api::files::BlobStore;
use eventstore::{AnyStore, SqliteStore, SystemClock};
use uuid::Uuid;

use crate::{by, log, until};

pub(crate) struct Server {
    pub(crate) state: AppState,
    pub(crate) url: String,
    pub(crate) dir: std::path::PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Every exchange with the agents, for the contract check.
    recorder: crate::conformance::Recorder,
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A server with short leases so that a lost node is noticed in seconds.
pub(crate) async fn server() -> Server {
    server_with(|s| s).await
}

/// [`server`], its state changed by `change` (authentication, log cap).
pub(crate) async fn server_with(change: impl FnOnce(AppState) -> AppState) -> Server {
    let dir = std::env::temp_dir().join(format!("flatrender-e2e-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.join("events.sqlite")).await.unwrap());
    let blobs = BlobStore::open(&dir.join("blobs"), 1 << 24).await.unwrap();
    let config = orchestrator::Config {
        lease_ttl: chrono::Duration::seconds(4),
        offline_after: chrono::Duration::seconds(3),
        ..orchestrator::Config::default()
    };
    let state = change(
        AppState::open(store, blobs, Arc::new(SystemClock), config)
            .await
            .unwrap(),
    );
    let ticker = state.orchestrator.spawn_ticker(Duration::from_millis(200));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let recorder = crate::conformance::Recorder::default();
    let app = recorder.wrap(api::router(state.clone()));
    let serve = tokio::spawn(async move {
        let limits = api::server::ServerLimits::default();
        api::server::serve(listener, app, limits, std::future::pending())
            .await
            .unwrap();
    });
    Server {
        state,
        url,
        dir,
        tasks: vec![ticker, serve],
        recorder,
    }
}

pub(crate) struct Agent {
    pub(crate) child: Child,
    pub(crate) node_id: Uuid,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn agent(server: &Server, name: &str) -> Agent {
    agent_with(server, name, &[]).await
}

pub(crate) async fn agent_with(server: &Server, name: &str, extra: &[&std::ffi::OsStr]) -> Agent {
    let enrolment = api::enroll::enrol(
        &server.state.store,
        &server.state.vault,
        name,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_flatrender"))
        .arg("agent")
        .args(["--server-url", &server.url])
        .args(["--node-id", &enrolment.node_id.to_string()])
        .args(["--key-id", &enrolment.key_id.to_string()])
        .arg("--data-dir")
        .arg(server.dir.join(name))
        .args(["--heartbeat-seconds", "1"])
        .args(extra)
        .env("FLATRENDER_NODE_SECRET", &enrolment.secret_hex)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Agent {
        child,
        node_id: enrolment.node_id,
    }
}

pub(crate) async fn submit(server: &Server, frames: u32, chunk: u32) -> domain::JobId {
    let orch = &server.state.orchestrator;
    let tenant = api::seed::tenant(orch, "Studio", 1, 10, 1_000_000)
        .await
        .unwrap();
    crate::demo_render(orch, &server.state.blobs, tenant, frames, chunk, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_s_task_is_requeued_and_finished_by_another_with_every_frame_once() {
    let server = server().await;
    let store = server.state.store.clone();
    let mut victim = agent(&server, "victim").await;
    let victim_id = victim.node_id.to_string();
    let job = submit(&server, 8, 4).await;
    // The victim starts a task and finishes a frame of it ...
    until(&store, 60, "the victim's first frame", |events| {
        by(events, "render.task.progressed.v1").any(|e| e.payload["node_id"] == victim_id)
    })
    .await;
    // ... and dies without a word.
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let _survivor = agent(&server, "survivor").await;
    until(&store, 90, "the job to complete", |events| {
        by(events, "render.job.completed.v1").count() == 1
    })
    .await;

    let events = log(&store).await;
    let requeued: Vec<_> = by(&events, "render.task.requeued.v1").collect();
    assert!(!requeued.is_empty());
    assert!(requeued.iter().all(|e| e.payload["node_id"] == victim_id));
    assert!(
        requeued.iter().all(
            |e| e.payload["reason"] == "node_offline" || e.payload["reason"] == "lease_expired"
        )
    );
    // Only the survivor completed tasks; each task completed once.
    let completed: Vec<_> = by(&events, "render.task.completed.v1").collect();
    assert_eq!(completed.len(), 2);
    assert!(completed.iter().all(|e| e.payload["node_id"] != victim_id));
    // The frames of the completing leases cover 1..=8, each exactly once.
    let winning: BTreeSet<(String, u64)> = completed
        .iter()
        .map(|e| {
            (
                e.payload["task_id"].to_string(),
                e.payload["lease_epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut frames: BTreeMap<u64, usize> = BTreeMap::new();
    for e in by(&events, "render.task.progressed.v1") {
        let key = (
            e.payload["task_id"].to_string(),
            e.payload["lease_epoch"].as_u64().unwrap(),
        );
        if winning.contains(&key) {
            *frames
                .entry(e.payload["frame"].as_u64().unwrap())
                .or_default() += 1;
        }
    }
    assert_eq!(
        frames.keys().copied().collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert!(frames.values().all(|n| *n == 1), "{frames:?}");
    // Every final frame's output is stored and decodes as a PNG.
    let outputs: BTreeMap<u64, String> = by(&events, "file.output_stored.v1")
        .filter(|e| e.payload["job_id"] == job.to_string())
        .map(|e| {
            (
                e.payload["frame"].as_u64().unwrap(),
                e.payload["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(outputs.len(), 8);
    for sha in outputs.values() {
        let bytes = server.state.blobs.get(sha).await.unwrap().unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    }
    let report = api::audit::verify(&store, |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    server.recorder.check(&[
        "register",
        "heartbeat",
        "claim",
        "progress",
        "download",
        "upload_output",
        "complete",
    ]);
    std::fs::remove_dir_all(&server.dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_told_to_terminate_releases_its_lease() {
    let server = server().await;
    let store = server.state.store.clone();
    let mut node = agent(&server, "drained").await;
    submit(&server, 40, 40).await;
    until(&store, 60, "the task to start", |events| {
        by(events, "render.task.started.v1").count() == 1
    })
    .await;
    let pid = rustix::process::Pid::from_raw(node.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = node.child.wait().unwrap();
    assert!(
        status.success(),
        "the agent exits cleanly on SIGTERM: {status}"
    );
    let events = log(&store).await;
    let released: Vec<_> = by(&events, "render.task.released.v1").collect();
    assert_eq!(released.len(), 1, "the lease was given back");
    assert_eq!(released[0].payload["node_id"], node.node_id.to_string());
    assert_eq!(by(&events, "render.task.completed.v1").count(), 0);
    server
        .recorder
        .check(&["register", "heartbeat", "claim", "progress", "release"]);
    std::fs::remove_dir_all(&server.dir).ok();
}

/// `blender` on `PATH`, if any (CI installs it; elsewhere the test says it skipped).
fn find_blender() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("blender"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "FLATRENDER_REQUIRE_SERVICES=1 but `blender` is not on PATH"
        );
        println!("!!! SKIPPED: blender not installed");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blender_scene_renders_through_a_real_agent() {
    let Some(blender) = find_blender() else {
        return;
    };
    let server = server().await;
    let store = server.state.store.clone();
    let scene_path = server.dir.join("cube.blend");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../node-agent/tests/make_scene.py");
    let made = Command::new(&blender)
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(&scene_path)
        .arg("CYCLES")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let _agent = agent_with(
        &server,
        "blender-node",
        &[std::ffi::OsStr::new("--blender"), blender.as_os_str()],
    )
    .await;
    let orch = &server.state.orchestrator;
    let tenant = api::seed::tenant(orch, "Studio", 1, 10, 1_000_000)
        .await
        .unwrap();
    let bytes = std::fs::read(&scene_path).unwrap();
    let scene = api::seed::scene(orch, &server.state.blobs, tenant, "cube.blend", &bytes)
        .await
        .unwrap();
    let render = api::seed::Render {
        renderer: "blender".into(),
        frames: (1, 3),
        chunk_size: 3,
        resolution: Some((32, 32)),
        samples: Some(4),
        ..Default::default()
    };
    let job = api::seed::submit(orch, tenant, scene, &render)
        .await
        .unwrap();
    until(&store, 240, "the Blender render to complete", |events| {
        by(events, "render.job.completed.v1").count() == 1
            || by(events, "render.job.failed.v1").count() == 1
    })
    .await;
    let events = log(&store).await;
    assert_eq!(
        by(&events, "render.job.completed.v1").count(),
        1,
        "{:#?}",
        by(&events, "render.task.failed.v1").collect::<Vec<_>>()
    );
    let outputs: Vec<_> = by(&events, "file.output_stored.v1")
        .filter(|e| e.payload["job_id"] == job.to_string())
        .collect();
    assert_eq!(outputs.len(), 3);
    for e in outputs {
        let bytes = server
            .state
            .blobs
            .get(e.payload["sha256"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let info = decoder.read_info().unwrap();
        assert_eq!((info.info().width, info.info().height), (32, 32));
    }
    server
        .recorder
        .check(&["claim", "upload_output", "complete"]);
    std::fs::remove_dir_all(&server.dir).ok();
}
