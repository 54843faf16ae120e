//! Setting up work without the client API: a tenant with credit, an
//! uploaded scene, a submitted render. Used by `flatrender demo`, tests
//! and benchmarks; every step goes through the domain and is an event.

use domain::file::UploadKind;
use domain::render_job::Requirements;
use domain::{
    ChunkSize, ContentType, FileCommand, FileId, FileName, FrameRange, Identifier, JobId, Label,
    Priority, Sha256Digest, ShareWeight, SubmitJob, TenantCommand, TenantId,
};
use orchestrator::Orchestrator;
use uuid::Uuid;

use crate::files::BlobStore;

/// Creates an active tenant with a fair-share `weight`, a running-task
/// limit and `credit_minor` of credit.
pub async fn tenant(
    orch: &Orchestrator,
    name: &str,
    weight: u32,
    max_running_tasks: u32,
    credit_minor: i64,
) -> anyhow::Result<TenantId> {
    let tenant_id = TenantId::new(Uuid::new_v4())?;
    let now = chrono::Utc::now();
    orch.tenant_command(
        tenant_id,
        TenantCommand::Create {
            tenant_id,
            name: Label::parse(name)?,
            weight: ShareWeight::new(weight)?,
            max_running_tasks,
            at: now,
        },
    )
    .await?;
    if credit_minor > 0 {
        orch.tenant_command(
            tenant_id,
            TenantCommand::AddCredit {
                amount: domain::AmountMinor::new(credit_minor)?,
                reference: Label::parse("initial credit")?,
                at: now,
            },
        )
        .await?;
    }
    Ok(tenant_id)
}

/// Stores `bytes` and records them as the tenant's scene upload.
pub async fn scene(
    orch: &Orchestrator,
    blobs: &BlobStore,
    tenant_id: TenantId,
    name: &str,
    bytes: &[u8],
) -> anyhow::Result<FileId> {
    let stored = blobs.put(bytes, None).await?;
    let file_id = FileId::new(Uuid::new_v4())?;
    orch.record_upload(
        file_id,
        FileCommand::Upload {
            file_id,
            tenant_id,
            kind: UploadKind::Scene,
            name: FileName::parse(name)?,
            content_type: ContentType::parse("application/octet-stream")?,
            size_bytes: stored.size_bytes,
            sha256: Sha256Digest::parse(stored.sha256)?,
            at: chrono::Utc::now(),
        },
    )
    .await?;
    Ok(file_id)
}

/// What to render.
#[derive(Debug, Clone)]
pub struct Render {
    /// The renderer, by name.
    pub renderer: String,
    /// First and last frame.
    pub frames: (u32, u32),
    /// Frames per task.
    pub chunk_size: u32,
    /// Priority 0..=100.
    pub priority: u8,
    /// Retries per task.
    pub max_retries: u32,
    /// Output width and height, where the renderer takes them.
    pub resolution: Option<(u32, u32)>,
    /// Samples per pixel, where the renderer takes them.
    pub samples: Option<u32>,
    /// Longest a task may run, in seconds.
    pub task_timeout_seconds: Option<u32>,
    /// Longest a task may go without output or progress, in seconds.
    pub stall_timeout_seconds: Option<u32>,
    /// Renders that must complete first.
    pub depends_on: Vec<JobId>,
}

impl Default for Render {
    fn default() -> Self {
        Self {
            renderer: "builtin".into(),
            frames: (1, 48),
            chunk_size: 2,
            priority: 50,
            max_retries: 3,
            resolution: None,
            samples: None,
            task_timeout_seconds: None,
            stall_timeout_seconds: None,
            depends_on: Vec::new(),
        }
    }
}

/// Submits a render of `scene_file_id`.
pub async fn submit(
    orch: &Orchestrator,
    tenant_id: TenantId,
    scene_file_id: FileId,
    render: &Render,
) -> anyhow::Result<JobId> {
    let job_id = JobId::new(Uuid::new_v4())?;
    orch.submit(SubmitJob {
        job_id,
        tenant_id,
        name: Label::parse(format!("render {}", &job_id.to_string()[..8]))?,
        scene_file_id,
        renderer: Identifier::parse(render.renderer.clone())?,
        frames: FrameRange::new(render.frames.0, render.frames.1)?,
        chunk_size: ChunkSize::new(render.chunk_size)?,
        resolution: render
            .resolution
            .map(|(w, h)| domain::render_job::Resolution::new(w, h))
            .transpose()?,
        samples: render.samples,
        priority: Priority::new(render.priority)?,
        requirements: Requirements::default(),
        max_retries: render.max_retries,
        task_timeout_seconds: render.task_timeout_seconds,
        stall_timeout_seconds: render.stall_timeout_seconds,
        depends_on: render.depends_on.clone(),
        at: chrono::Utc::now(),
    })
    .await?;
    Ok(job_id)
}
