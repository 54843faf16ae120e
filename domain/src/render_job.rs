//! The render job aggregate: a job and its tasks live in one `render_job`
//! stream (stream id = job id).
//!
//! Job states: `new` → (submit) `active` ⇄ `paused`; `active`/`paused` →
//! `completed` when the last task completes, → `failed` when a task fails
//! more than `max_retries` times (a client retry of the failed tasks makes it
//! `active` or `paused` again); `active`/`paused`/`failed` → `cancelled`.
//!
//! Task states: `queued` → (assign, new `lease_epoch`) `leased` → (start)
//! `running` → `completed`; a leased or running task goes back to `queued`
//! on release, on requeue (lease expired, node offline, …) and on a failure
//! with retries left, or to `failed` when out of retries (and back to
//! `queued` on a client retry); every task not completed is `cancelled` with
//! the job. Start, frame, complete, fail, release and requeue must present
//! the task's current lease ([`LeaseRef`]), else [`DomainError::StaleLease`].
//!
//! Paused jobs get no new assignments, but running tasks finish and report;
//! failed jobs get no new assignments either; cancelled jobs refuse every
//! command ([`DomainError::JobCancelled`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, ValidationError};
use crate::event::{Aggregate, EventPayload, domain_events, sample_time};
use crate::frame_range::{ChunkSize, FrameRange, MAX_FRAMES_PER_JOB, chunk};
use crate::ids::{FileId, JobId, NodeId, TaskId, TenantId};
use crate::priority::Priority;
use crate::text::{Identifier, Label, Note};

/// The most retries a job may allow per task.
pub const MAX_RETRIES_LIMIT: u32 = 20;

/// The longest task or stall timeout, in seconds (a week).
pub const MAX_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;

/// The most renders one render may depend on.
pub const MAX_DEPENDENCIES: usize = 32;

/// Why an attempt failed, when it was not the renderer's own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// It ran longer than the render's `task_timeout_seconds`.
    TimedOut,
    /// It printed nothing and reported no progress for the render's
    /// `stall_timeout_seconds`.
    Stalled,
}

impl FailureCause {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TimedOut => "timed_out",
            Self::Stalled => "stalled",
        }
    }
}

/// Output resolution in pixels, each side `1..=65536`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawResolution", into = "RawResolution")]
pub struct Resolution {
    width: u32,
    height: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolution {
    width: u32,
    height: u32,
}

impl Resolution {
    /// A resolution; rejects 0 and sides above 65536.
    pub fn new(width: u32, height: u32) -> Result<Self, ValidationError> {
        let ok = |v: u32| (1..=65_536).contains(&v);
        if !ok(width) || !ok(height) {
            return Err(ValidationError::new(
                "resolution",
                "sides must be between 1 and 65536",
            ));
        }
        Ok(Self { width, height })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }
}

impl TryFrom<RawResolution> for Resolution {
    type Error = ValidationError;
    fn try_from(r: RawResolution) -> Result<Self, Self::Error> {
        Self::new(r.width, r.height)
    }
}

impl From<Resolution> for RawResolution {
    fn from(r: Resolution) -> Self {
        Self {
            width: r.width,
            height: r.height,
        }
    }
}

/// What a node must offer to run a job's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// Whether a GPU is required.
    pub gpu: bool,
    /// Minimum node memory, if any.
    pub min_memory_bytes: Option<u64>,
    /// Minimum CPU cores, if any.
    pub min_cores: Option<u32>,
    /// Tags the node must all have.
    pub tags: Vec<Identifier>,
}

/// Why a leased task went back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeueReason {
    /// The lease was not renewed in time.
    LeaseExpired,
    /// The node missed its heartbeats and went offline.
    NodeOffline,
    /// An operator disabled the node.
    NodeDisabled,
    /// The node was deregistered.
    NodeDeregistered,
    /// The node was blocklisted for this job.
    NodeBlocklisted,
    /// The task failed and has retries left (emitted by the domain, never
    /// accepted in a [`RenderJobCommand::Requeue`]).
    Retry,
}

/// One task of a split job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The task.
    pub task_id: TaskId,
    /// Its position in the job, from 0.
    pub index: u32,
    /// The frames it renders.
    pub frames: FrameRange,
}

// ---------------------------------------------------------------- payloads

/// `render.job.submitted.v1`: a client submitted a render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSubmitted {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// A name for people.
    pub name: Label,
    /// The uploaded scene file.
    pub scene_file_id: FileId,
    /// The renderer, by name (never a command line).
    pub renderer: Identifier,
    /// The frames to render.
    pub frames: FrameRange,
    /// Frames per task.
    pub chunk_size: ChunkSize,
    /// Output resolution, where the renderer takes one.
    pub resolution: Option<Resolution>,
    /// Samples per pixel, where the renderer takes them.
    pub samples: Option<u32>,
    /// Scheduling priority.
    pub priority: Priority,
    /// What a node must offer.
    pub requirements: Requirements,
    /// How often a failed task is retried before the job fails.
    pub max_retries: u32,
    /// When it was submitted.
    pub submitted_at: DateTime<Utc>,
    /// A task running longer than this (seconds since it started) is
    /// stopped and failed (`timed_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_timeout_seconds: Option<u32>,
    /// A task that prints nothing and reports no progress for this long
    /// (seconds) is stopped and failed (`stalled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_timeout_seconds: Option<u32>,
    /// Renders (of the same tenant) that must complete before this one
    /// gets a node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<JobId>,
}

/// `render.job.waiting.v1`: the job waits for the renders it depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobWaiting {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// What it waits for.
    pub depends_on: Vec<JobId>,
    /// When.
    pub waiting_since: DateTime<Utc>,
}

/// `render.job.released.v1`: every render the job depends on completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobReleased {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When.
    pub released_at: DateTime<Utc>,
}

/// `render.job.dependency_failed.v1`: a render the job depends on failed
/// or was cancelled, so the job fails (reason `dependency_failed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDependencyFailed {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The render that did not complete.
    pub dependency_id: JobId,
    /// How it ended: `failed` or `cancelled`.
    pub dependency_status: Identifier,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// `render.job.split.v1`: the job was split into tasks covering every frame once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSplit {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The tasks, in frame order.
    pub tasks: Vec<TaskSpec>,
}

/// `render.task.assigned.v1`: a task was leased to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskAssigned {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task.
    pub task_id: TaskId,
    /// The node holding the lease.
    pub node_id: NodeId,
    /// The fencing token: 1 for the first lease of the task, +1 for each next one.
    pub lease_epoch: u32,
    /// The frames to render.
    pub frames: FrameRange,
    /// When the lease was granted.
    pub assigned_at: DateTime<Utc>,
}

/// `render.task.started.v1`: the node started rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskStarted {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task.
    pub task_id: TaskId,
    /// The node holding the lease.
    pub node_id: NodeId,
    /// The lease's fencing token.
    pub lease_epoch: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// `render.task.progressed.v1`: the node finished one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskProgressed {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task.
    pub task_id: TaskId,
    /// The node holding the lease.
    pub node_id: NodeId,
    /// The lease's fencing token.
    pub lease_epoch: u32,
    /// The finished frame.
    pub frame: u32,
    /// The stored output of that frame (`file.output_stored.v1` of this
    /// lease); always set by this version of the orchestrator.
    pub output_file_id: Option<FileId>,
    /// The frame's earlier output (of an earlier lease) that this one
    /// replaces as the frame's current output, if any.
    #[serde(default)]
    pub supersedes_output_file_id: Option<FileId>,
    /// Distinct frames of the task finished so far, this one included.
    pub frames_done: u32,
    /// Frames in the task.
    pub frames_total: u32,
    /// When the frame finished.
    pub finished_at: DateTime<Utc>,
}

/// `render.task.completed.v1`: the node rendered every frame of the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCompleted {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task.
    pub task_id: TaskId,
    /// The node holding the lease.
    pub node_id: NodeId,
    /// The lease's fencing token.
    pub lease_epoch: u32,
    /// Render time of this attempt, charged to the tenant.
    pub render_seconds: u64,
    /// When it completed.
    pub completed_at: DateTime<Utc>,
}

/// `render.task.failed.v1`: an attempt failed on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFailed {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task.
    pub task_id: TaskId,
    /// The node holding the lease.
    pub node_id: NodeId,
    /// The lease's fencing token.
    pub lease_epoch: u32,
    /// What went wrong, as reported by the node.
    pub error: Note,
    /// Failures of this task so far, this one included.
    pub failures: u32,
    /// Render time of this attempt, charged to the tenant.
    pub render_seconds: u64,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
    /// Why, when not the renderer's own error (a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
}

/// `render.task.requeued.v1`: a lease ended without a result and the task is queued again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequeued {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task.
    pub task_id: TaskId,
    /// The node whose lease ended.
    pub node_id: NodeId,
    /// The fencing token of the ended lease.
    pub lease_epoch: u32,
    /// Why.
    pub reason: RequeueReason,
    /// When.
    pub requeued_at: DateTime<Utc>,
}

/// `render.task.released.v1`: the node gave the task back (e.g. draining); it is queued again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskReleased {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task.
    pub task_id: TaskId,
    /// The node that released it.
    pub node_id: NodeId,
    /// The fencing token of the released lease.
    pub lease_epoch: u32,
    /// When.
    pub released_at: DateTime<Utc>,
}

/// `render.task.retried.v1`: a client asked to retry a failed task; it is queued again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRetried {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task.
    pub task_id: TaskId,
    /// When.
    pub retried_at: DateTime<Utc>,
}

/// `render.job.paused.v1`: the job gets no new assignments until resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPaused {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When.
    pub paused_at: DateTime<Utc>,
}

/// `render.job.resumed.v1`: a paused job gets assignments again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResumed {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When.
    pub resumed_at: DateTime<Utc>,
}

/// `render.job.priority_changed.v1`: the client changed the job's priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPriorityChanged {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The new priority (0..=100, higher first).
    pub priority: Priority,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// `render.job.cancelled.v1`: the job was cancelled; it accepts no more work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobCancelled {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Why, if given.
    pub reason: Option<Note>,
    /// When.
    pub cancelled_at: DateTime<Utc>,
}

/// `render.job.completed.v1`: every task completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobCompleted {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Render time of all attempts of all tasks.
    pub render_seconds: u64,
    /// When.
    pub completed_at: DateTime<Utc>,
}

/// `render.job.failed.v1`: a task failed more often than the job allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFailed {
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The task that ran out of retries.
    pub task_id: TaskId,
    /// Its last error.
    pub error: Note,
    /// When.
    pub failed_at: DateTime<Utc>,
}

domain_events! {
    /// Everything that happens to a render job and its tasks.
    pub enum RenderJobEvent : "render_job", stream_id = job_id {
        /// See [`JobSubmitted`].
        Submitted(JobSubmitted) => "render.job.submitted.v1",
        /// See [`JobSplit`].
        Split(JobSplit) => "render.job.split.v1",
        /// See [`TaskAssigned`].
        TaskAssigned(TaskAssigned) => "render.task.assigned.v1",
        /// See [`TaskStarted`].
        TaskStarted(TaskStarted) => "render.task.started.v1",
        /// See [`TaskProgressed`].
        TaskProgressed(TaskProgressed) => "render.task.progressed.v1",
        /// See [`TaskCompleted`].
        TaskCompleted(TaskCompleted) => "render.task.completed.v1",
        /// See [`TaskFailed`].
        TaskFailed(TaskFailed) => "render.task.failed.v1",
        /// See [`TaskRequeued`].
        TaskRequeued(TaskRequeued) => "render.task.requeued.v1",
        /// See [`TaskReleased`].
        TaskReleased(TaskReleased) => "render.task.released.v1",
        /// See [`TaskRetried`].
        TaskRetried(TaskRetried) => "render.task.retried.v1",
        /// See [`JobPaused`].
        Paused(JobPaused) => "render.job.paused.v1",
        /// See [`JobResumed`].
        Resumed(JobResumed) => "render.job.resumed.v1",
        /// See [`JobCancelled`].
        Cancelled(JobCancelled) => "render.job.cancelled.v1",
        /// See [`JobPriorityChanged`].
        PriorityChanged(JobPriorityChanged) => "render.job.priority_changed.v1",
        /// See [`JobCompleted`].
        Completed(JobCompleted) => "render.job.completed.v1",
        /// See [`JobFailed`].
        Failed(JobFailed) => "render.job.failed.v1",
        /// See [`JobWaiting`].
        Waiting(JobWaiting) => "render.job.waiting.v1",
        /// See [`JobReleased`].
        Released(JobReleased) => "render.job.released.v1",
        /// See [`JobDependencyFailed`].
        DependencyFailed(JobDependencyFailed) => "render.job.dependency_failed.v1",
    }
}

// ---------------------------------------------------------------- commands

/// A render submission, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitJob {
    /// The new job's id.
    pub job_id: JobId,
    /// The submitting tenant.
    pub tenant_id: TenantId,
    /// A name for people.
    pub name: Label,
    /// The uploaded scene file.
    pub scene_file_id: FileId,
    /// The renderer, by name.
    pub renderer: Identifier,
    /// The frames.
    pub frames: FrameRange,
    /// Frames per task.
    pub chunk_size: ChunkSize,
    /// Output resolution, where the renderer takes one.
    pub resolution: Option<Resolution>,
    /// Samples per pixel (at least 1), where the renderer takes them.
    pub samples: Option<u32>,
    /// Priority.
    pub priority: Priority,
    /// Node requirements.
    pub requirements: Requirements,
    /// Retries per task, at most [`MAX_RETRIES_LIMIT`].
    pub max_retries: u32,
    /// Longest a task may run, `1..=MAX_TIMEOUT_SECONDS`.
    pub task_timeout_seconds: Option<u32>,
    /// Longest a task may go without output or progress.
    pub stall_timeout_seconds: Option<u32>,
    /// Renders that must complete first (at most [`MAX_DEPENDENCIES`],
    /// distinct, not this one).
    pub depends_on: Vec<JobId>,
    /// Now.
    pub at: DateTime<Utc>,
}

/// The lease a node presents when it reports on a task: the fencing check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The task.
    pub task_id: TaskId,
    /// The node.
    pub node_id: NodeId,
    /// The fencing token from [`TaskAssigned::lease_epoch`].
    pub lease_epoch: u32,
}

/// The commands of a render job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderJobCommand {
    /// Submit the job and split it into tasks.
    Submit(SubmitJob),
    /// Lease a queued task to a node (orchestrator).
    Assign {
        /// The task.
        task_id: TaskId,
        /// The node.
        node_id: NodeId,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The node started rendering.
    Start {
        /// The node's lease.
        lease: LeaseRef,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The node finished a frame and stored its output. A frame reported
    /// twice under one lease yields no event.
    ReportFrame {
        /// The node's lease.
        lease: LeaseRef,
        /// The frame.
        frame: u32,
        /// Its stored output (the orchestrator checked it is this lease's
        /// output of this frame).
        output_file_id: FileId,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The node finished the task: refused until every frame of it was
    /// reported with its output under this lease.
    Complete {
        /// The node's lease.
        lease: LeaseRef,
        /// Render time of this attempt.
        render_seconds: u64,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The node failed the task; it is retried or the job fails.
    Fail {
        /// The node's lease.
        lease: LeaseRef,
        /// The node's error.
        error: Note,
        /// A timeout, when that is why (the node's or the orchestrator's).
        cause: Option<FailureCause>,
        /// Render time of this attempt.
        render_seconds: u64,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The node gives the task back.
    Release {
        /// The node's lease.
        lease: LeaseRef,
        /// Now.
        at: DateTime<Utc>,
    },
    /// End a lease without result (orchestrator: expiry, node offline, …).
    Requeue {
        /// The lease to end.
        lease: LeaseRef,
        /// Why; [`RequeueReason::Retry`] is refused.
        reason: RequeueReason,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Retry one failed task (client).
    RetryTask {
        /// The task.
        task_id: TaskId,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Fail the job because no node can run it any more (orchestrator:
    /// every capable node is blocklisted for it).
    GiveUp {
        /// The task that cannot be placed.
        task_id: TaskId,
        /// Why, for people.
        error: Note,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Retry every failed task (client).
    RetryFailedTasks {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Pause: no new assignments.
    Pause {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Resume a paused job.
    Resume {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Change the job's priority (an active or paused job).
    ChangePriority {
        /// The new priority.
        priority: Priority,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Every render the job waits for completed (orchestrator).
    ReleaseDependencies {
        /// Now.
        at: DateTime<Utc>,
    },
    /// A render the job waits for failed or was cancelled (orchestrator).
    FailDependency {
        /// That render.
        dependency_id: JobId,
        /// How it ended (`failed`, `cancelled`).
        dependency_status: Identifier,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Cancel the job.
    Cancel {
        /// Why, if given.
        reason: Option<Note>,
        /// Now.
        at: DateTime<Utc>,
    },
}

// ---------------------------------------------------------------- state

/// The state of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    /// Not submitted (empty stream).
    #[default]
    New,
    /// Waiting for the renders it depends on: no task is leased.
    Waiting,
    /// Tasks are queued or running.
    Active,
    /// No new assignments.
    Paused,
    /// Every task completed.
    Completed,
    /// A task ran out of retries.
    Failed,
    /// Cancelled by the client.
    Cancelled,
}

impl JobStatus {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Waiting => "waiting",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The state of a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Waiting for a node.
    #[default]
    Queued,
    /// Leased, not yet started.
    Leased,
    /// Rendering.
    Running,
    /// Done.
    Completed,
    /// Out of retries, or failed and not yet requeued.
    Failed,
    /// The job was cancelled.
    Cancelled,
}

impl TaskStatus {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The current lease of a task: at most one per task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The node holding it.
    pub node_id: NodeId,
    /// Its fencing token.
    pub epoch: u32,
}

/// One task of a job, as evolved from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The task.
    pub id: TaskId,
    /// Its position in the job.
    pub index: u32,
    /// Its frames.
    pub frames: FrameRange,
    /// Its state.
    pub status: TaskStatus,
    /// The current lease; `Some` exactly when leased or running.
    pub lease: Option<Lease>,
    /// The last lease epoch issued (0 before the first lease).
    pub last_epoch: u32,
    /// Failures since submission or the last client retry.
    pub failures: u32,
    /// Distinct frames reported finished (`render.task.progressed`) by the
    /// current or last lease (each new lease starts from none).
    pub frames_done: BTreeSet<u32>,
    /// Render time of all attempts.
    pub render_seconds: u64,
}

/// A render job and its tasks. Serializable for snapshots of a view
/// (what a snapshot holds is what the events evolved; nothing checks it
/// again, so only a verified snapshot may be read back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderJob {
    submitted: Option<JobSubmitted>,
    status: JobStatus,
    /// Whether the client paused the job (kept across a failure, so that
    /// retrying a failed, paused job leaves it paused).
    paused: bool,
    tasks: BTreeMap<TaskId, Task>,
    failures_by_node: BTreeMap<NodeId, u32>,
    /// The current output of each frame reported so far: the last one
    /// reported (a re-render under a later lease supersedes the earlier).
    outputs: BTreeMap<u32, FileId>,
    /// The priority now: the submitted one until the client changes it.
    priority: Option<Priority>,
}

impl RenderJob {
    /// The submission, once submitted.
    pub fn submission(&self) -> Option<&JobSubmitted> {
        self.submitted.as_ref()
    }

    /// The job's priority now (the submission's until changed).
    pub fn priority(&self) -> Option<Priority> {
        self.priority
    }

    /// The job's state.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// The tasks, in id order.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// One task.
    pub fn task(&self, task_id: TaskId) -> Option<&Task> {
        self.tasks.get(&task_id)
    }

    /// The queued tasks, in frame order (what the scheduler may lease).
    pub fn queued_tasks(&self) -> impl Iterator<Item = &Task> {
        let mut queued: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| t.status == TaskStatus::Queued)
            .collect();
        queued.sort_by_key(|t| t.index);
        queued.into_iter()
    }

    /// The current output of each frame that has one, in frame order.
    pub fn current_outputs(&self) -> impl Iterator<Item = (u32, FileId)> + '_ {
        self.outputs.iter().map(|(f, id)| (*f, *id))
    }

    /// The current output of one frame.
    pub fn current_output(&self, frame: u32) -> Option<FileId> {
        self.outputs.get(&frame).copied()
    }

    /// How many tasks hold a lease (leased or running), for quotas.
    pub fn leased_task_count(&self) -> usize {
        self.tasks.values().filter(|t| t.lease.is_some()).count()
    }

    /// Whether the orchestrator may lease this job's queued tasks now.
    pub fn accepts_assignments(&self) -> bool {
        self.status == JobStatus::Active
    }

    /// How many attempts of this job failed on `node_id` (for blocklisting).
    pub fn failures_on_node(&self, node_id: NodeId) -> u32 {
        self.failures_by_node.get(&node_id).copied().unwrap_or(0)
    }

    fn job(&self) -> Result<&JobSubmitted, DomainError> {
        self.submitted
            .as_ref()
            .ok_or_else(|| DomainError::NotFound {
                entity: "job",
                id: "-".into(),
            })
    }

    fn find_task(&self, task_id: TaskId) -> Result<&Task, DomainError> {
        self.tasks
            .get(&task_id)
            .ok_or_else(|| DomainError::NotFound {
                entity: "task",
                id: task_id.to_string(),
            })
    }

    fn refuse_job(&self, command: &'static str) -> DomainError {
        match (self.status, &self.submitted) {
            (JobStatus::Cancelled, Some(job)) => DomainError::JobCancelled { job_id: job.job_id },
            (JobStatus::Paused, Some(job)) if command == "assign" => {
                DomainError::JobPaused { job_id: job.job_id }
            }
            _ => DomainError::InvalidTransition {
                entity: "job",
                from: self.status.as_str(),
                command,
            },
        }
    }

    /// Checks the fencing token of a node's report and returns the task.
    fn current_lease(&self, lease: LeaseRef) -> Result<&Task, DomainError> {
        let job = self.job()?;
        if self.status == JobStatus::Cancelled {
            return Err(DomainError::JobCancelled { job_id: job.job_id });
        }
        let task = self.find_task(lease.task_id)?;
        match task.lease {
            Some(l) if l.node_id == lease.node_id && l.epoch == lease.lease_epoch => Ok(task),
            current => Err(DomainError::StaleLease {
                task_id: lease.task_id,
                presented: lease.lease_epoch,
                current: current.map(|l| l.epoch),
            }),
        }
    }

    fn decide_submit(&self, cmd: SubmitJob) -> Result<Vec<RenderJobEvent>, DomainError> {
        if let Some(job) = &self.submitted {
            return Err(DomainError::AlreadyExists {
                entity: "job",
                id: job.job_id.to_string(),
            });
        }
        if cmd.frames.len() > MAX_FRAMES_PER_JOB {
            return Err(ValidationError::new(
                "frame_range",
                format!("more than {MAX_FRAMES_PER_JOB} frames"),
            )
            .into());
        }
        if cmd.max_retries > MAX_RETRIES_LIMIT {
            return Err(ValidationError::new(
                "max_retries",
                format!("at most {MAX_RETRIES_LIMIT}"),
            )
            .into());
        }
        if cmd.samples == Some(0) {
            return Err(ValidationError::new("samples", "must be at least 1").into());
        }
        for (field, value) in [
            ("task_timeout_seconds", cmd.task_timeout_seconds),
            ("stall_timeout_seconds", cmd.stall_timeout_seconds),
        ] {
            if value.is_some_and(|v| !(1..=MAX_TIMEOUT_SECONDS).contains(&v)) {
                return Err(ValidationError::new(
                    field,
                    format!("1 to {MAX_TIMEOUT_SECONDS} seconds"),
                )
                .into());
            }
        }
        if cmd.depends_on.len() > MAX_DEPENDENCIES {
            return Err(ValidationError::new(
                "depends_on",
                format!("at most {MAX_DEPENDENCIES} renders"),
            )
            .into());
        }
        if cmd.depends_on.contains(&cmd.job_id) {
            return Err(
                ValidationError::new("depends_on", "a render cannot depend on itself").into(),
            );
        }
        let distinct: BTreeSet<&JobId> = cmd.depends_on.iter().collect();
        if distinct.len() != cmd.depends_on.len() {
            return Err(ValidationError::new("depends_on", "a render is named twice").into());
        }
        let tasks = chunk(cmd.frames, cmd.chunk_size)
            .into_iter()
            .zip(0u32..)
            .map(|(frames, index)| TaskSpec {
                task_id: TaskId::derive(cmd.job_id, index),
                index,
                frames,
            })
            .collect();
        let mut events: Vec<RenderJobEvent> = vec![
            JobSubmitted {
                job_id: cmd.job_id,
                tenant_id: cmd.tenant_id,
                name: cmd.name,
                scene_file_id: cmd.scene_file_id,
                renderer: cmd.renderer,
                frames: cmd.frames,
                chunk_size: cmd.chunk_size,
                resolution: cmd.resolution,
                samples: cmd.samples,
                priority: cmd.priority,
                requirements: cmd.requirements,
                max_retries: cmd.max_retries,
                submitted_at: cmd.at,
                task_timeout_seconds: cmd.task_timeout_seconds,
                stall_timeout_seconds: cmd.stall_timeout_seconds,
                depends_on: cmd.depends_on.clone(),
            }
            .into(),
            JobSplit {
                job_id: cmd.job_id,
                tenant_id: cmd.tenant_id,
                tasks,
            }
            .into(),
        ];
        if !cmd.depends_on.is_empty() {
            events.push(
                JobWaiting {
                    job_id: cmd.job_id,
                    tenant_id: cmd.tenant_id,
                    depends_on: cmd.depends_on,
                    waiting_since: cmd.at,
                }
                .into(),
            );
        }
        Ok(events)
    }
}

fn invalid_task(task: &Task, command: &'static str) -> DomainError {
    DomainError::InvalidTransition {
        entity: "task",
        from: task.status.as_str(),
        command,
    }
}

impl Aggregate for RenderJob {
    type Event = RenderJobEvent;
    type Command = RenderJobCommand;

    fn decide(&self, command: RenderJobCommand) -> Result<Vec<RenderJobEvent>, DomainError> {
        use RenderJobCommand as C;
        let Some(job) = &self.submitted else {
            return match command {
                C::Submit(cmd) => self.decide_submit(cmd),
                _ => Err(DomainError::NotFound {
                    entity: "job",
                    id: "-".into(),
                }),
            };
        };
        let (job_id, tenant_id) = (job.job_id, job.tenant_id);
        match command {
            C::Submit(cmd) => self.decide_submit(cmd),
            C::Assign {
                task_id,
                node_id,
                at,
            } => {
                if self.status != JobStatus::Active {
                    return Err(self.refuse_job("assign"));
                }
                let task = self.find_task(task_id)?;
                if task.status != TaskStatus::Queued {
                    return Err(invalid_task(task, "assign"));
                }
                Ok(vec![
                    TaskAssigned {
                        job_id,
                        tenant_id,
                        task_id,
                        node_id,
                        lease_epoch: task.last_epoch + 1,
                        frames: task.frames,
                        assigned_at: at,
                    }
                    .into(),
                ])
            }
            C::Start { lease, at } => {
                let task = self.current_lease(lease)?;
                if task.status != TaskStatus::Leased {
                    return Err(invalid_task(task, "start"));
                }
                Ok(vec![
                    TaskStarted {
                        job_id,
                        tenant_id,
                        task_id: lease.task_id,
                        node_id: lease.node_id,
                        lease_epoch: lease.lease_epoch,
                        started_at: at,
                    }
                    .into(),
                ])
            }
            C::ReportFrame {
                lease,
                frame,
                output_file_id,
                at,
            } => {
                let task = self.current_lease(lease)?;
                if !task.frames.contains(frame) {
                    return Err(ValidationError::new(
                        "frame",
                        format!("frame {frame} is not in this task"),
                    )
                    .into());
                }
                if task.status != TaskStatus::Running {
                    return Err(invalid_task(task, "report a frame of"));
                }
                if task.frames_done.contains(&frame) {
                    return Ok(vec![]);
                }
                let supersedes_output_file_id = self
                    .outputs
                    .get(&frame)
                    .copied()
                    .filter(|earlier| *earlier != output_file_id);
                let frames_done = u32::try_from(task.frames_done.len() + 1).unwrap_or(u32::MAX);
                let frames_total = u32::try_from(task.frames.len()).unwrap_or(u32::MAX);
                Ok(vec![
                    TaskProgressed {
                        job_id,
                        tenant_id,
                        task_id: lease.task_id,
                        node_id: lease.node_id,
                        lease_epoch: lease.lease_epoch,
                        frame,
                        output_file_id: Some(output_file_id),
                        supersedes_output_file_id,
                        frames_done,
                        frames_total,
                        finished_at: at,
                    }
                    .into(),
                ])
            }
            C::Complete {
                lease,
                render_seconds,
                at,
            } => {
                let task = self.current_lease(lease)?;
                let total = task.frames.len();
                let missing = total.saturating_sub(task.frames_done.len() as u64);
                if missing > 0 {
                    return Err(DomainError::FramesMissing {
                        task_id: lease.task_id,
                        missing,
                        total,
                    });
                }
                let mut events: Vec<RenderJobEvent> = vec![
                    TaskCompleted {
                        job_id,
                        tenant_id,
                        task_id: lease.task_id,
                        node_id: lease.node_id,
                        lease_epoch: lease.lease_epoch,
                        render_seconds,
                        completed_at: at,
                    }
                    .into(),
                ];
                let others_done = self
                    .tasks
                    .values()
                    .all(|t| t.id == lease.task_id || t.status == TaskStatus::Completed);
                if others_done {
                    let total = self
                        .tasks
                        .values()
                        .map(|t| t.render_seconds)
                        .sum::<u64>()
                        .saturating_add(render_seconds);
                    events.push(
                        JobCompleted {
                            job_id,
                            tenant_id,
                            render_seconds: total,
                            completed_at: at,
                        }
                        .into(),
                    );
                }
                Ok(events)
            }
            C::Fail {
                lease,
                error,
                cause,
                render_seconds,
                at,
            } => {
                let task = self.current_lease(lease)?;
                let failures = task.failures + 1;
                let mut events: Vec<RenderJobEvent> = vec![
                    TaskFailed {
                        job_id,
                        tenant_id,
                        task_id: lease.task_id,
                        node_id: lease.node_id,
                        lease_epoch: lease.lease_epoch,
                        error: error.clone(),
                        failures,
                        render_seconds,
                        failed_at: at,
                        cause,
                    }
                    .into(),
                ];
                if failures > job.max_retries {
                    if self.status != JobStatus::Failed {
                        events.push(
                            JobFailed {
                                job_id,
                                tenant_id,
                                task_id: lease.task_id,
                                error,
                                failed_at: at,
                            }
                            .into(),
                        );
                    }
                } else {
                    events.push(
                        TaskRequeued {
                            job_id,
                            tenant_id,
                            task_id: lease.task_id,
                            node_id: lease.node_id,
                            lease_epoch: lease.lease_epoch,
                            reason: RequeueReason::Retry,
                            requeued_at: at,
                        }
                        .into(),
                    );
                }
                Ok(events)
            }
            C::Release { lease, at } => {
                self.current_lease(lease)?;
                Ok(vec![
                    TaskReleased {
                        job_id,
                        tenant_id,
                        task_id: lease.task_id,
                        node_id: lease.node_id,
                        lease_epoch: lease.lease_epoch,
                        released_at: at,
                    }
                    .into(),
                ])
            }
            C::Requeue { lease, reason, at } => {
                if reason == RequeueReason::Retry {
                    return Err(ValidationError::new(
                        "reason",
                        "retry is decided by the domain after a failure",
                    )
                    .into());
                }
                self.current_lease(lease)?;
                Ok(vec![
                    TaskRequeued {
                        job_id,
                        tenant_id,
                        task_id: lease.task_id,
                        node_id: lease.node_id,
                        lease_epoch: lease.lease_epoch,
                        reason,
                        requeued_at: at,
                    }
                    .into(),
                ])
            }
            C::RetryTask { task_id, at } => {
                if matches!(self.status, JobStatus::Cancelled | JobStatus::Completed) {
                    return Err(self.refuse_job("retry"));
                }
                let task = self.find_task(task_id)?;
                if task.status != TaskStatus::Failed {
                    return Err(invalid_task(task, "retry"));
                }
                Ok(vec![
                    TaskRetried {
                        job_id,
                        tenant_id,
                        task_id,
                        retried_at: at,
                    }
                    .into(),
                ])
            }
            C::GiveUp { task_id, error, at } => {
                if !matches!(self.status, JobStatus::Active | JobStatus::Paused) {
                    return Err(self.refuse_job("give_up"));
                }
                self.find_task(task_id)?;
                Ok(vec![
                    JobFailed {
                        job_id,
                        tenant_id,
                        task_id,
                        error,
                        failed_at: at,
                    }
                    .into(),
                ])
            }
            C::RetryFailedTasks { at } => {
                if matches!(self.status, JobStatus::Cancelled | JobStatus::Completed) {
                    return Err(self.refuse_job("retry"));
                }
                let events: Vec<RenderJobEvent> = self
                    .tasks
                    .values()
                    .filter(|t| t.status == TaskStatus::Failed)
                    .map(|t| {
                        TaskRetried {
                            job_id,
                            tenant_id,
                            task_id: t.id,
                            retried_at: at,
                        }
                        .into()
                    })
                    .collect();
                if events.is_empty() {
                    return Err(self.refuse_job("retry"));
                }
                Ok(events)
            }
            C::ChangePriority { priority, at } => match self.status {
                JobStatus::Waiting | JobStatus::Active | JobStatus::Paused => {
                    if self.priority() == Some(priority) {
                        return Ok(vec![]);
                    }
                    Ok(vec![
                        JobPriorityChanged {
                            job_id,
                            tenant_id,
                            priority,
                            changed_at: at,
                        }
                        .into(),
                    ])
                }
                _ => Err(self.refuse_job("change_priority")),
            },
            C::Pause { at } => match self.status {
                JobStatus::Active => Ok(vec![
                    JobPaused {
                        job_id,
                        tenant_id,
                        paused_at: at,
                    }
                    .into(),
                ]),
                _ => Err(self.refuse_job("pause")),
            },
            C::Resume { at } => match self.status {
                JobStatus::Paused => Ok(vec![
                    JobResumed {
                        job_id,
                        tenant_id,
                        resumed_at: at,
                    }
                    .into(),
                ]),
                _ => Err(self.refuse_job("resume")),
            },
            C::ReleaseDependencies { at } => match self.status {
                JobStatus::Waiting => Ok(vec![
                    JobReleased {
                        job_id,
                        tenant_id,
                        released_at: at,
                    }
                    .into(),
                ]),
                _ => Err(self.refuse_job("release")),
            },
            C::FailDependency {
                dependency_id,
                dependency_status,
                at,
            } => match self.status {
                JobStatus::Waiting => Ok(vec![
                    JobDependencyFailed {
                        job_id,
                        tenant_id,
                        dependency_id,
                        dependency_status,
                        failed_at: at,
                    }
                    .into(),
                ]),
                _ => Err(self.refuse_job("fail_dependency")),
            },
            C::Cancel { reason, at } => match self.status {
                JobStatus::Waiting | JobStatus::Active | JobStatus::Paused | JobStatus::Failed => {
                    Ok(vec![
                        JobCancelled {
                            job_id,
                            tenant_id,
                            reason,
                            cancelled_at: at,
                        }
                        .into(),
                    ])
                }
                _ => Err(self.refuse_job("cancel")),
            },
        }
    }

    fn evolve(mut self, event: &RenderJobEvent) -> Self {
        use RenderJobEvent as E;
        match event {
            E::Submitted(e) => {
                self.submitted = Some(e.clone());
                self.priority = Some(e.priority);
                self.status = JobStatus::Active;
            }
            E::Split(e) => {
                for spec in &e.tasks {
                    self.tasks.insert(
                        spec.task_id,
                        Task {
                            id: spec.task_id,
                            index: spec.index,
                            frames: spec.frames,
                            status: TaskStatus::Queued,
                            lease: None,
                            last_epoch: 0,
                            failures: 0,
                            frames_done: BTreeSet::new(),
                            render_seconds: 0,
                        },
                    );
                }
            }
            E::TaskAssigned(e) => {
                if let Some(t) = self.tasks.get_mut(&e.task_id) {
                    t.status = TaskStatus::Leased;
                    t.lease = Some(Lease {
                        node_id: e.node_id,
                        epoch: e.lease_epoch,
                    });
                    t.last_epoch = e.lease_epoch;
                    // A new attempt renders (and reports) every frame again.
                    t.frames_done.clear();
                }
            }
            E::TaskStarted(e) => {
                if let Some(t) = self.tasks.get_mut(&e.task_id) {
                    t.status = TaskStatus::Running;
                }
            }
            E::TaskProgressed(e) => {
                // A frame counts as done only with its output (reports of
                // logs written before outputs were required do not).
                if let Some(output) = e.output_file_id {
                    if let Some(t) = self.tasks.get_mut(&e.task_id) {
                        t.frames_done.insert(e.frame);
                    }
                    self.outputs.insert(e.frame, output);
                }
            }
            E::TaskCompleted(e) => {
                if let Some(t) = self.tasks.get_mut(&e.task_id) {
                    t.status = TaskStatus::Completed;
                    t.lease = None;
                    t.render_seconds = t.render_seconds.saturating_add(e.render_seconds);
                }
            }
            E::TaskFailed(e) => {
                if let Some(t) = self.tasks.get_mut(&e.task_id) {
                    t.status = TaskStatus::Failed;
                    t.lease = None;
                    t.failures = e.failures;
                    t.render_seconds = t.render_seconds.saturating_add(e.render_seconds);
                }
                *self.failures_by_node.entry(e.node_id).or_default() += 1;
            }
            E::TaskRequeued(e) => {
                if let Some(t) = self.tasks.get_mut(&e.task_id) {
                    t.status = TaskStatus::Queued;
                    t.lease = None;
                }
            }
            E::TaskReleased(e) => {
                if let Some(t) = self.tasks.get_mut(&e.task_id) {
                    t.status = TaskStatus::Queued;
                    t.lease = None;
                }
            }
            E::TaskRetried(e) => {
                if let Some(t) = self.tasks.get_mut(&e.task_id) {
                    t.status = TaskStatus::Queued;
                    t.failures = 0;
                }
                // A failed job whose failed tasks are all retried is active
                // (or paused, if it was paused) again.
                if self.status == JobStatus::Failed
                    && !self.tasks.values().any(|t| t.status == TaskStatus::Failed)
                {
                    self.status = if self.paused {
                        JobStatus::Paused
                    } else {
                        JobStatus::Active
                    };
                }
            }
            E::Paused(_) => {
                self.status = JobStatus::Paused;
                self.paused = true;
            }
            E::Resumed(_) => {
                self.status = JobStatus::Active;
                self.paused = false;
            }
            E::Cancelled(_) => {
                self.status = JobStatus::Cancelled;
                for t in self.tasks.values_mut() {
                    if t.status != TaskStatus::Completed {
                        t.status = TaskStatus::Cancelled;
                        t.lease = None;
                    }
                }
            }
            E::PriorityChanged(e) => self.priority = Some(e.priority),
            E::Completed(_) => self.status = JobStatus::Completed,
            E::Failed(_) => self.status = JobStatus::Failed,
            E::Waiting(_) => self.status = JobStatus::Waiting,
            E::Released(_) => {
                self.status = if self.paused {
                    JobStatus::Paused
                } else {
                    JobStatus::Active
                };
            }
            E::DependencyFailed(_) => self.status = JobStatus::Failed,
        }
        self
    }
}

// ---------------------------------------------------------------- samples

fn sample_ids() -> (JobId, TenantId, TaskId, NodeId) {
    let job_id = JobId::fixed(0x1b4e_28ba_2fa1_41d2_883f_0016_d3cc_a427);
    (
        job_id,
        TenantId::fixed(0x7d44_4840_9dc0_41d2_a55e_02f7_2e3f_0ca1),
        TaskId::derive(job_id, 0),
        NodeId::fixed(0x5f1e_8a2c_3b4d_4e6f_8a9b_0c1d_2e3f_4a5b),
    )
}

fn sample_note(text: &str) -> Note {
    Note::parse(text).expect("sample text is valid")
}

impl EventPayload for JobSubmitted {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            name: Label::parse("Intro shot 010").expect("valid"),
            scene_file_id: FileId::fixed(0x3c6e_0b8a_9c15_4d1e_b7a2_4f5e_6d7c_8b9a),
            renderer: Identifier::parse("builtin").expect("valid"),
            frames: FrameRange::new(1, 48).expect("valid"),
            chunk_size: ChunkSize::new(8).expect("valid"),
            resolution: Some(Resolution::new(1920, 1080).expect("valid")),
            samples: Some(64),
            priority: Priority::default(),
            requirements: Requirements {
                gpu: false,
                min_memory_bytes: Some(4 * 1024 * 1024 * 1024),
                min_cores: None,
                tags: vec![Identifier::parse("linux").expect("valid")],
            },
            max_retries: 3,
            submitted_at: sample_time(),
            task_timeout_seconds: Some(3600),
            stall_timeout_seconds: Some(600),
            depends_on: vec![JobId::fixed(0x2a5f_39cb_3fb2_42e3_994f_1127_e4dd_b538)],
        }
    }
}

impl EventPayload for JobSplit {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            tasks: vec![
                TaskSpec {
                    task_id,
                    index: 0,
                    frames: FrameRange::new(1, 8).expect("valid"),
                },
                TaskSpec {
                    task_id: TaskId::derive(job_id, 1),
                    index: 1,
                    frames: FrameRange::new(9, 12).expect("valid"),
                },
            ],
        }
    }
}

impl EventPayload for TaskAssigned {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, node_id) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            node_id,
            lease_epoch: 1,
            frames: FrameRange::new(1, 8).expect("valid"),
            assigned_at: sample_time(),
        }
    }
}

impl EventPayload for TaskStarted {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, node_id) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            node_id,
            lease_epoch: 1,
            started_at: sample_time(),
        }
    }
}

impl EventPayload for TaskProgressed {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, node_id) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            node_id,
            lease_epoch: 1,
            frame: 3,
            output_file_id: Some(FileId::fixed(0x9a8b_7c6d_5e4f_4a3b_8c2d_1e0f_a9b8_c7d6)),
            supersedes_output_file_id: Some(FileId::fixed(
                0x1a2b_3c4d_5e6f_4a3b_8c2d_1e0f_a9b8_c7d6,
            )),
            frames_done: 3,
            frames_total: 8,
            finished_at: sample_time(),
        }
    }
}

impl EventPayload for TaskCompleted {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, node_id) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            node_id,
            lease_epoch: 1,
            render_seconds: 96,
            completed_at: sample_time(),
        }
    }
}

impl EventPayload for TaskFailed {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, node_id) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            node_id,
            lease_epoch: 1,
            error: sample_note("renderer exited with status 1"),
            failures: 1,
            render_seconds: 12,
            failed_at: sample_time(),
            cause: None,
        }
    }
}

impl EventPayload for TaskRequeued {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, node_id) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            node_id,
            lease_epoch: 1,
            reason: RequeueReason::LeaseExpired,
            requeued_at: sample_time(),
        }
    }
}

impl EventPayload for TaskReleased {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, node_id) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            node_id,
            lease_epoch: 1,
            released_at: sample_time(),
        }
    }
}

impl EventPayload for TaskRetried {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            retried_at: sample_time(),
        }
    }
}

impl EventPayload for JobPriorityChanged {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            priority: Priority::new(80).expect("in range"),
            changed_at: sample_time(),
        }
    }
}

impl EventPayload for JobPaused {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            paused_at: sample_time(),
        }
    }
}

impl EventPayload for JobResumed {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            resumed_at: sample_time(),
        }
    }
}

impl EventPayload for JobCancelled {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            reason: Some(sample_note("wrong camera")),
            cancelled_at: sample_time(),
        }
    }
}

impl EventPayload for JobCompleted {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            render_seconds: 1234,
            completed_at: sample_time(),
        }
    }
}

impl EventPayload for JobWaiting {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            depends_on: vec![JobId::fixed(0x2a5f_39cb_3fb2_42e3_994f_1127_e4dd_b538)],
            waiting_since: sample_time(),
        }
    }
}

impl EventPayload for JobReleased {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            released_at: sample_time(),
        }
    }
}

impl EventPayload for JobDependencyFailed {
    fn sample() -> Self {
        let (job_id, tenant_id, _, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            dependency_id: JobId::fixed(0x2a5f_39cb_3fb2_42e3_994f_1127_e4dd_b538),
            dependency_status: Identifier::parse("failed").expect("valid"),
            failed_at: sample_time(),
        }
    }
}

impl EventPayload for JobFailed {
    fn sample() -> Self {
        let (job_id, tenant_id, task_id, _) = sample_ids();
        Self {
            job_id,
            tenant_id,
            task_id,
            error: sample_note("renderer exited with status 1"),
            failed_at: sample_time(),
        }
    }
}
