//! A farm at work: tenants, nodes and renders driven through the real
//! orchestrator, so that the log holds every kind of event in the order
//! the scheduler writes them.

use std::sync::Arc;

use domain::node::{Capabilities, RendererInfo};
use domain::render_job::Requirements;
use domain::{
    AmountMinor, ChunkSize, ContentType, FileCommand, FileId, FileName, FrameRange, Identifier,
    JobId, Label, LeaseRef, NodeId, Note, Priority, RenderJobCommand, SecretKeyId, Sha256Digest,
    ShareWeight, SubmitJob, TaskId, TenantCommand, TenantId,
};
use eventstore::{AnyStore, Clock, ManualClock};
use orchestrator::{Assignment, Config, FileOutput, Orchestrator};
use uuid::Uuid;

/// An orchestrator over a store, with its tenants and nodes.
#[derive(Debug)]
pub struct Farm {
    pub orch: Orchestrator,
    pub clock: Arc<ManualClock>,
    pub tenants: Vec<TenantId>,
    pub nodes: Vec<NodeId>,
    round: u32,
}

fn id() -> Uuid {
    Uuid::new_v4()
}

impl Farm {
    pub async fn open(store: AnyStore, clock: Arc<ManualClock>) -> Self {
        let config = Config {
            lease_ttl: chrono::Duration::seconds(30),
            offline_after: chrono::Duration::seconds(10),
            blocklist_after: 3,
            ..Config::default()
        };
        let orch = Orchestrator::open(store, clock.clone(), config)
            .await
            .unwrap();
        let mut farm = Self {
            orch,
            clock,
            tenants: vec![],
            nodes: vec![],
            round: 0,
        };
        for credit in [1_000_000, 50] {
            let t = farm.tenant(credit).await;
            farm.tenants.push(t);
        }
        for _ in 0..3 {
            let n = farm.node().await;
            farm.nodes.push(n);
        }
        farm
    }

    async fn tenant(&self, credit: i64) -> TenantId {
        let tenant_id = TenantId::new(id()).unwrap();
        let at = self.clock.now();
        self.orch
            .tenant_command(
                tenant_id,
                TenantCommand::Create {
                    tenant_id,
                    name: Label::parse("Studio").unwrap(),
                    weight: ShareWeight::new(1).unwrap(),
                    max_running_tasks: 10,
                    at,
                },
            )
            .await
            .unwrap();
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
        tenant_id
    }

    async fn node(&self) -> NodeId {
        let node_id = NodeId::new(id()).unwrap();
        let capabilities = Capabilities {
            cores: 8,
            memory_bytes: 16 << 30,
            gpus: vec![],
            renderers: vec![RendererInfo {
                name: Identifier::parse("builtin").unwrap(),
                version: Identifier::parse("1").unwrap(),
            }],
            tags: vec![],
            node_class: Identifier::parse("standard").unwrap(),
        };
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

    /// Uploads a scene and submits a render of `frames` frames in chunks of 2.
    pub async fn render(&self, tenant_id: TenantId, frames: u32) -> JobId {
        let file_id = FileId::new(id()).unwrap();
        let at = self.clock.now();
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
                    sha256: Sha256Digest::parse(format!("{:064x}", id().as_u128())).unwrap(),
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
                chunk_size: ChunkSize::new(2).unwrap(),
                resolution: None,
                samples: None,
                priority: Priority::new(50).unwrap(),
                requirements: Requirements::default(),
                max_retries: 1,
                task_timeout_seconds: None,
                stall_timeout_seconds: None,
                depends_on: Vec::new(),
                at,
            })
            .await
            .unwrap();
        job_id
    }

    /// One round of work: two renders submitted, every node claims, and
    /// what it does with its task depends on the round (complete, fail,
    /// release, half-render and complete later); one render paused and
    /// resumed, one cancelled mid-way, failed ones retried, charges made.
    pub async fn round(&mut self) {
        self.round += 1;
        let r = self.round;
        let a = self.render(self.tenants[0], 6).await;
        let b = self.render(self.tenants[1], 4).await;
        let mut held = Vec::new();
        for (i, node) in self.nodes.clone().into_iter().enumerate() {
            let Some(task) = self.orch.claim(node).await.unwrap() else {
                continue;
            };
            let l = lease(node, &task);
            match (r as usize + i) % 4 {
                0 => finish(&self.orch, l, &task).await,
                1 => {
                    self.orch.start(l).await.unwrap();
                    self.orch
                        .fail(l, Note::parse("out of memory").unwrap())
                        .await
                        .unwrap();
                }
                2 => {
                    self.orch.start(l).await.unwrap();
                    self.orch.release(l).await.unwrap();
                }
                _ => {
                    frames(&self.orch, l, &task, 1).await;
                    held.push((l, task));
                }
            }
        }
        self.orch
            .control(a, self.tenants[0], |at| RenderJobCommand::Pause { at })
            .await
            .unwrap();
        self.orch
            .control(a, self.tenants[0], |at| RenderJobCommand::Resume { at })
            .await
            .unwrap();
        for (l, task) in held {
            finish(&self.orch, l, &task).await;
        }
        if r.is_multiple_of(2) {
            self.orch
                .control(b, self.tenants[1], |at| RenderJobCommand::Cancel {
                    reason: Some(Note::parse("wrong camera").unwrap()),
                    at,
                })
                .await
                .unwrap();
        }
        // More claims, completed, so that renders finish.
        for _ in 0..4 {
            for node in self.nodes.clone() {
                if let Some(task) = self.orch.claim(node).await.unwrap() {
                    finish(&self.orch, lease(node, &task), &task).await;
                }
            }
        }
        let _ = self
            .orch
            .control(a, self.tenants[0], |at| {
                RenderJobCommand::RetryFailedTasks { at }
            })
            .await;
        self.clock.advance(chrono::Duration::seconds(11));
        for node in self.nodes.clone() {
            self.orch.heartbeat(node, &[]).await.unwrap();
        }
        self.orch.tick().await.unwrap();
    }
}

fn lease(node_id: NodeId, a: &Assignment) -> LeaseRef {
    LeaseRef {
        task_id: TaskId::new(a.task_id).unwrap(),
        node_id,
        lease_epoch: a.lease_epoch,
    }
}

fn output(frame: u32) -> FileOutput {
    FileOutput {
        name: FileName::parse(format!("frame_{frame:04}.png")).unwrap(),
        content_type: ContentType::parse("image/png").unwrap(),
        size_bytes: 100,
        sha256: Sha256Digest::parse(format!("{:064x}", id().as_u128())).unwrap(),
    }
}

/// Starts the task and renders its first `n` frames.
async fn frames(orch: &Orchestrator, l: LeaseRef, a: &Assignment, n: u32) {
    orch.progress(l, None, None).await.unwrap();
    for frame in (a.frames.start..=a.frames.end).take(n as usize) {
        let file = orch.record_output(l, frame, output(frame)).await.unwrap();
        orch.progress(l, Some(frame), Some(file)).await.unwrap();
    }
}

async fn finish(orch: &Orchestrator, l: LeaseRef, a: &Assignment) {
    frames(orch, l, a, u32::MAX).await;
    orch.complete(l).await.unwrap();
}
