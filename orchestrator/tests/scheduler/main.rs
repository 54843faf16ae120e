//! The scheduler against real stores (SQLite, and PostgreSQL where the
//! rules concern concurrency), with a manual clock so that leases and
//! heartbeats are deterministic.

#[allow(dead_code)]
#[path = "../../../eventstore/tests/store/support.rs"]
mod support;

mod concurrency;
mod history;
mod outputs;
mod pipeline;
mod rules;
mod snapshots;
mod waiting;

use std::sync::Arc;

use domain::node::{Capabilities, RendererInfo};
use domain::render_job::Requirements;
use domain::{
    AmountMinor, ChunkSize, ContentType, FileCommand, FileId, FileName, FrameRange, Identifier,
    JobId, Label, LeaseRef, NodeId, Priority, SecretKeyId, Sha256Digest, ShareWeight, SubmitJob,
    TaskId, TenantCommand, TenantId,
};
use eventstore::{AnyStore, EventStore, ManualClock, RecordedEvent};
use orchestrator::{Assignment, Config, Orchestrator};
use uuid::Uuid;

pub use support::TestDb;

/// The scheduler's settings in these tests.
pub fn config() -> Config {
    Config {
        lease_ttl: chrono::Duration::seconds(30),
        offline_after: chrono::Duration::seconds(10),
        blocklist_after: 2,
        ..Config::default()
    }
}

/// One orchestrator over a store, and helpers to set up work.
#[derive(Debug)]
pub struct Farm {
    pub orch: Orchestrator,
    pub clock: Arc<ManualClock>,
}

pub fn id() -> Uuid {
    Uuid::new_v4()
}

impl Farm {
    pub async fn open(store: AnyStore, clock: Arc<ManualClock>) -> Self {
        let orch = Orchestrator::open(store, clock.clone(), config())
            .await
            .unwrap();
        Self { orch, clock }
    }

    pub async fn tenant(&self, weight: u32, max_running: u32, credit: i64) -> TenantId {
        let tenant_id = TenantId::new(id()).unwrap();
        let at = self.clock.now_utc();
        self.orch
            .tenant_command(
                tenant_id,
                TenantCommand::Create {
                    tenant_id,
                    name: Label::parse("Studio").unwrap(),
                    weight: ShareWeight::new(weight).unwrap(),
                    max_running_tasks: max_running,
                    at,
                },
            )
            .await
            .unwrap();
        if credit > 0 {
            self.orch
                .tenant_command(
                    tenant_id,
                    TenantCommand::AddCredit {
                        amount: AmountMinor::new(credit).unwrap(),
                        reference: Label::parse("top-up").unwrap(),
                        at,
                    },
                )
                .await
                .unwrap();
        }
        tenant_id
    }

    /// A render of frames `1..=frames` in tasks of `chunk` frames.
    pub async fn render(&self, tenant_id: TenantId, frames: u32, chunk: u32) -> JobId {
        self.render_with(tenant_id, frames, chunk, 50, Requirements::default(), 3)
            .await
    }

    pub async fn render_with(
        &self,
        tenant_id: TenantId,
        frames: u32,
        chunk: u32,
        priority: u8,
        requirements: Requirements,
        max_retries: u32,
    ) -> JobId {
        let file_id = FileId::new(id()).unwrap();
        let at = self.clock.now_utc();
        self.orch
            .record_upload(
                file_id,
                FileCommand::Upload {
                    file_id,
                    tenant_id,
                    kind: domain::file::UploadKind::Scene,
                    name: FileName::parse("scene.json").unwrap(),
                    content_type: ContentType::parse("application/json").unwrap(),
                    size_bytes: 5,
                    sha256: Sha256Digest::parse(
                        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                    )
                    .unwrap(),
                    at,
                },
            )
            .await
            .unwrap();
        let job_id = JobId::new(id()).unwrap();
        self.orch
            .submit(SubmitJob {
                job_id,
                tenant_id,
                name: Label::parse("Shot 010").unwrap(),
                scene_file_id: file_id,
                renderer: Identifier::parse("builtin").unwrap(),
                frames: FrameRange::new(1, frames).unwrap(),
                chunk_size: ChunkSize::new(chunk).unwrap(),
                resolution: None,
                samples: None,
                priority: Priority::new(priority).unwrap(),
                requirements,
                max_retries,
                task_timeout_seconds: None,
                stall_timeout_seconds: None,
                depends_on: Vec::new(),
                at,
            })
            .await
            .unwrap();
        job_id
    }

    /// A registered node that has heartbeated once (online).
    pub async fn node(&self) -> NodeId {
        self.node_with(Capabilities {
            cores: 8,
            memory_bytes: 16 << 30,
            gpus: vec![],
            renderers: vec![RendererInfo {
                name: Identifier::parse("builtin").unwrap(),
                version: Identifier::parse("1").unwrap(),
            }],
            tags: vec![],
            node_class: Identifier::parse("standard").unwrap(),
        })
        .await
    }

    pub async fn node_with(&self, capabilities: Capabilities) -> NodeId {
        let node_id = NodeId::new(id()).unwrap();
        self.orch
            .register_node(
                node_id,
                Label::parse("render-node").unwrap(),
                capabilities,
                SecretKeyId::new(id()).unwrap(),
            )
            .await
            .unwrap();
        self.orch.heartbeat(node_id, &[]).await.unwrap();
        node_id
    }

    pub async fn claim(&self, node_id: NodeId) -> Option<Assignment> {
        self.orch.claim(node_id).await.unwrap()
    }
}

/// What a node uploads for a frame (the bytes are not looked at here).
pub fn frame_output(frame: u32) -> orchestrator::FileOutput {
    orchestrator::FileOutput {
        name: FileName::parse(format!("frame_{frame:04}.png")).unwrap(),
        content_type: ContentType::parse("image/png").unwrap(),
        size_bytes: 100,
        sha256: Sha256Digest::parse(format!("{:064x}", u128::from(frame) + 1)).unwrap(),
    }
}

/// The node starts the task, uploads and reports every frame.
pub async fn render_frames(orch: &Orchestrator, node_id: NodeId, a: &Assignment) {
    let l = lease(node_id, a);
    orch.progress(l, None, None).await.unwrap();
    for frame in a.frames.start..=a.frames.end {
        let file = orch
            .record_output(l, frame, frame_output(frame))
            .await
            .unwrap();
        orch.progress(l, Some(frame), Some(file)).await.unwrap();
    }
}

/// The node renders every frame of the task and completes it.
pub async fn finish(orch: &Orchestrator, node_id: NodeId, a: &Assignment) {
    render_frames(orch, node_id, a).await;
    orch.complete(lease(node_id, a)).await.unwrap();
}

/// The lease an assignment grants `node_id`.
pub fn lease(node_id: NodeId, a: &Assignment) -> LeaseRef {
    LeaseRef {
        task_id: TaskId::new(a.task_id).unwrap(),
        node_id,
        lease_epoch: a.lease_epoch,
    }
}

/// Every event of the store, at least up to the last one this process
/// appended. (On PostgreSQL `read_all` holds events back while any older
/// transaction of the cluster is open — another test's, say — so an empty
/// read does not yet mean the end.)
pub async fn log(store: &AnyStore) -> Vec<RecordedEvent> {
    let appended = *store.appended().borrow();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.global_position);
        let batch = store.read_all(after, 1000).await.unwrap();
        if batch.is_empty() {
            if after >= appended || std::time::Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        out.extend(batch);
    }
}

/// The events of the log with this routing key.
pub fn of<'a>(events: &'a [RecordedEvent], key: &str) -> Vec<&'a RecordedEvent> {
    events.iter().filter(|e| e.routing_key == key).collect()
}

trait NowUtc {
    fn now_utc(&self) -> chrono::DateTime<chrono::Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> chrono::DateTime<chrono::Utc> {
        eventstore::Clock::now(self)
    }
}
