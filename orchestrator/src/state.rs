//! The orchestrator's in-memory view of the log: jobs with their queues,
//! tenants, nodes, scene files and live leases. It is rebuilt from the
//! store at start and kept current from this instance's own appends and
//! from the events other instances append (applied in stream-version order,
//! each event exactly once).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::file::FileEvent;
use domain::render_job::{JobStatus, RenderJobEvent};
use domain::{
    Aggregate, DomainEvent, FileId, JobId, Node, NodeEvent, NodeId, RenderJob, TaskId, Tenant,
    TenantEvent, TenantId,
};
use eventstore::RecordedEvent;
use uuid::Uuid;

mod index;
mod retire;
mod snapshot;

pub(crate) use index::IndexKey;
pub(crate) use retire::Retired;
pub(crate) use snapshot::{Body as SnapshotBody, FORMAT as SNAPSHOT_FORMAT};

/// A job as the scheduler needs it.
#[derive(Debug, Clone)]
pub(crate) struct JobEntry {
    pub job: RenderJob,
    pub version: u64,
    /// Queued tasks by their index in the job (oldest frames first).
    pub queue: BTreeSet<(u32, TaskId)>,
    /// Order of submission in this view (ties broken by job id).
    pub submitted_at: DateTime<Utc>,
    /// Where the job is in the index of schedulable jobs, if it is.
    pub indexed: Option<(TenantId, IndexKey)>,
}

/// A lease the scheduler watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiveLease {
    pub job_id: JobId,
    pub tenant_id: TenantId,
    pub node_id: NodeId,
    pub epoch: u32,
    pub assigned_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When the node started rendering (`render.task.started`).
    pub started_at: Option<DateTime<Utc>>,
    /// The last sign of output: the start, a finished frame, or (on this
    /// instance) a log line or fine progress.
    pub output_at: DateTime<Utc>,
}

/// A stored file: a scene an assignment names, or a rendered frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SceneFile {
    pub tenant_id: TenantId,
    pub sha256: String,
    pub size_bytes: u64,
    /// Its media type (for a scene: which renderer reads it).
    pub content_type: String,
    /// An upload (usable as a job's input), not a rendered output.
    pub input: bool,
    /// For a rendered frame: what rendered it.
    pub output: Option<OutputOf>,
}

/// What a rendered frame belongs to (`file.output_stored.v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutputOf {
    pub job_id: JobId,
    pub task_id: TaskId,
    pub node_id: NodeId,
    pub frame: u32,
    /// `None` in logs written before outputs recorded their lease.
    pub lease_epoch: Option<u32>,
}

/// A completed task whose charge is not in this view yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingCharge {
    pub tenant_id: TenantId,
    pub job_id: JobId,
    pub node_id: NodeId,
    pub render_seconds: u64,
    pub completed_at: DateTime<Utc>,
    /// This instance appended the completion (and charges it at once);
    /// others' completions are charged here only if still uncharged after
    /// a grace period (their instance died before charging).
    pub mine: bool,
}

/// Everything the scheduler knows.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Jobs not finished (and finished ones not retired yet).
    pub jobs: HashMap<JobId, JobEntry>,
    /// Each tenant's schedulable jobs in the order a claim prefers them
    /// (see `index`).
    pub schedulable: HashMap<TenantId, BTreeSet<IndexKey>>,
    /// Finished jobs that left the view (see `retire`).
    pub retired: HashMap<JobId, Retired>,
    /// Jobs that reached a final state since the last retirement.
    pub settling: HashSet<JobId>,
    pub tenants: HashMap<TenantId, (Tenant, u64)>,
    pub nodes: HashMap<NodeId, (Node, u64)>,
    pub files: HashMap<FileId, (SceneFile, u64)>,
    /// The output stored for each (task, lease epoch, frame): a retried
    /// upload of the same bytes answers it again instead of a new file.
    pub lease_outputs: HashMap<(TaskId, u32, u32), FileId>,
    pub leases: HashMap<TaskId, LiveLease>,
    /// Streams the view dropped after a refused append and could not
    /// reload yet (the store failed): reloaded before the next catch-up
    /// and batch.
    pub dropped: HashSet<(String, Uuid)>,
    /// Completions without a charge in this view (charged exactly once,
    /// after the completion is in the log: see `batch`).
    pub uncharged: HashMap<TaskId, PendingCharge>,
    /// Leased or running tasks per tenant (for quotas and fair share).
    pub running: HashMap<TenantId, u32>,
    /// When each node was last heard from by this instance (heartbeats are
    /// not events), or given a grace period at start.
    pub last_seen: HashMap<NodeId, DateTime<Utc>>,
    /// Contacts not yet shared with the other instances (the next tick
    /// writes them beside the log).
    pub unshared: HashMap<NodeId, DateTime<Utc>>,
    /// When each node was last heard from by the other instances (never
    /// this one, never later than this instance's clock), as of the last
    /// tick.
    pub shared_seen: HashMap<NodeId, DateTime<Utc>>,
    /// The other instances' times as read (they may be ahead of this
    /// clock) with the time each counts as here.
    pub shared_raw: HashMap<NodeId, (DateTime<Utc>, DateTime<Utc>)>,
    /// Versions of streams this view does not model (so that every event
    /// is looked at once).
    pub position: i64,
    /// How long a new or renewed lease lives.
    pub lease_ttl: chrono::Duration,
    /// The clock reading used for leases found in the log at start.
    pub now: DateTime<Utc>,
}

/// What applying an event did, for the caller's wake-ups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Work may have become available.
    pub work: bool,
    /// A running task ended: its tenant may lease another (waiting claims
    /// are woken; the job's queue did not change).
    pub freed: bool,
}

impl Applied {
    /// Whether waiting claims should look again.
    pub fn wakes(self) -> bool {
        self.work || self.freed
    }
}

impl State {
    /// Records a contact from the node at `at` (this instance heard it).
    pub fn heard_from(&mut self, node_id: NodeId, at: DateTime<Utc>) {
        self.last_seen.insert(node_id, at);
        self.unshared.insert(node_id, at);
    }

    /// When the node was last heard from, by this instance or any other.
    pub fn last_heard(&self, node_id: NodeId) -> Option<DateTime<Utc>> {
        let mine = self.last_seen.get(&node_id);
        let shared = self.shared_seen.get(&node_id);
        mine.into_iter().chain(shared).max().copied()
    }

    /// When another instance last heard from the node (this instance's
    /// own contacts are not in `shared_seen`).
    pub fn heard_elsewhere_since(&self, node_id: NodeId) -> Option<DateTime<Utc>> {
        self.shared_seen.get(&node_id).copied()
    }

    /// When another instance last heard from the node, if that is more
    /// recent than this instance's own contact (the watchdog's question:
    /// which instance saw the node last judges a stall).
    pub fn heard_elsewhere_more_recently(&self, node_id: NodeId) -> Option<DateTime<Utc>> {
        let shared = *self.shared_seen.get(&node_id)?;
        match self.last_seen.get(&node_id) {
            Some(mine) if *mine >= shared => None,
            _ => Some(shared),
        }
    }

    /// The version this view holds of a stream it models (0 if unknown).
    pub fn version_of(&self, stream_type: &str, stream_id: Uuid) -> u64 {
        match stream_type {
            "render_job" => JobId::new(stream_id).ok().map_or(0, |id| {
                self.jobs
                    .get(&id)
                    .map(|j| j.version)
                    .or_else(|| self.retired.get(&id).map(|r| r.version))
                    .unwrap_or(0)
            }),
            "tenant" => TenantId::new(stream_id)
                .ok()
                .and_then(|id| self.tenants.get(&id))
                .map_or(0, |t| t.1),
            "node" => NodeId::new(stream_id)
                .ok()
                .and_then(|id| self.nodes.get(&id))
                .map_or(0, |n| n.1),
            "file" => FileId::new(stream_id)
                .ok()
                .and_then(|id| self.files.get(&id))
                .map_or(0, |f| f.1),
            _ => u64::MAX,
        }
    }

    /// Drops what the view holds of a stream (before reloading it from the
    /// store after a refused append).
    pub fn forget(&mut self, stream_type: &str, stream_id: Uuid) {
        match stream_type {
            "render_job" => {
                let Ok(job_id) = JobId::new(stream_id) else {
                    return;
                };
                let ended: Vec<TaskId> = self
                    .leases
                    .iter()
                    .filter(|(_, l)| l.job_id == job_id)
                    .map(|(t, _)| *t)
                    .collect();
                for task_id in ended {
                    if let Some(lease) = self.leases.remove(&task_id)
                        && let Some(n) = self.running.get_mut(&lease.tenant_id)
                    {
                        *n = n.saturating_sub(1);
                    }
                }
                // Completions this view applied but the store refused are
                // not charged; the reload brings back those that stand.
                self.uncharged.retain(|_, c| c.job_id != job_id);
                self.unindex(job_id);
                self.retired.remove(&job_id);
                self.settling.remove(&job_id);
                // Its outputs are streams of their own: they stay.
                self.jobs.remove(&job_id);
            }
            "tenant" => {
                if let Ok(id) = TenantId::new(stream_id) {
                    self.tenants.remove(&id);
                }
            }
            "node" => {
                if let Ok(id) = NodeId::new(stream_id) {
                    self.nodes.remove(&id);
                }
            }
            "file" => {
                if let Ok(id) = FileId::new(stream_id) {
                    self.forget_output(id);
                }
            }
            _ => {}
        }
    }

    /// Applies one stored event if it is the next of its stream. Returns
    /// `Err(())` when the view is behind that stream by more than one event
    /// (the caller reloads the stream), `Ok(None)` when the event was
    /// already applied or is of a stream this view does not model.
    pub fn apply_recorded(&mut self, event: &RecordedEvent) -> Result<Option<Applied>, Gap> {
        let known = self.version_of(&event.stream_type, event.stream_id);
        if known == u64::MAX || event.stream_version <= known {
            return Ok(None);
        }
        if event.stream_type == "render_job"
            && let Ok(job_id) = JobId::new(event.stream_id)
            && self.retired.remove(&job_id).is_some()
        {
            // A retired job changes again (a failed render retried or
            // cancelled): its whole stream is read back into the view.
            return Err(Gap);
        }
        if event.stream_version != known + 1 {
            return Err(Gap);
        }
        let applied = match event.stream_type.as_str() {
            "render_job" => decode::<RenderJobEvent>(event)
                .map(|e| self.apply_job(&e, event.stream_version, event.recorded_at)),
            "tenant" => decode::<TenantEvent>(event).map(|e| {
                self.apply_tenant(&e, event.stream_version);
                Applied {
                    work: true,
                    freed: false,
                }
            }),
            "node" => decode::<NodeEvent>(event).map(|e| {
                self.apply_node(&e, event.stream_version);
                Applied {
                    work: true,
                    freed: false,
                }
            }),
            "file" => decode::<FileEvent>(event).map(|e| {
                self.apply_file(&e, event.stream_version);
                Applied::default()
            }),
            _ => None,
        };
        Ok(applied)
    }

    /// Applies a job event at `version` (the stream's new version).
    pub fn apply_job(
        &mut self,
        event: &RenderJobEvent,
        version: u64,
        at: DateTime<Utc>,
    ) -> Applied {
        use RenderJobEvent as E;
        let Ok(job_id) = JobId::new(event.stream_id()) else {
            return Applied::default();
        };
        if self.retired.remove(&job_id).is_some() {
            // Decided without the job in the view (it never should be):
            // the stream is read back before the next decision.
            tracing::error!(%job_id, "an event for a retired job; reloading it");
            self.dropped
                .insert(("render_job".to_owned(), job_id.as_uuid()));
            return Applied {
                work: true,
                freed: false,
            };
        }
        let submitted_at = match event {
            E::Submitted(e) => e.submitted_at,
            _ => at,
        };
        let entry = self.jobs.entry(job_id).or_insert_with(|| JobEntry {
            job: RenderJob::default(),
            version: 0,
            queue: BTreeSet::new(),
            submitted_at,
            indexed: None,
        });
        entry.job = std::mem::take(&mut entry.job).evolve(event);
        entry.version = version;
        let mut applied = Applied::default();
        let mut ended: Vec<TaskId> = Vec::new();
        match event {
            E::Split(e) => {
                for t in &e.tasks {
                    entry.queue.insert((t.index, t.task_id));
                }
                applied.work = true;
            }
            E::TaskAssigned(e) => {
                if let Some(t) = entry.job.task(e.task_id) {
                    entry.queue.remove(&(t.index, e.task_id));
                }
                let lease = LiveLease {
                    job_id,
                    tenant_id: e.tenant_id,
                    node_id: e.node_id,
                    epoch: e.lease_epoch,
                    assigned_at: e.assigned_at,
                    expires_at: self.now.max(e.assigned_at) + self.lease_ttl,
                    started_at: None,
                    output_at: e.assigned_at,
                };
                if self.leases.insert(e.task_id, lease).is_none() {
                    *self.running.entry(e.tenant_id).or_default() += 1;
                }
            }
            E::TaskCompleted(e) => {
                ended.push(e.task_id);
                applied.freed = true;
                let charged = self
                    .tenants
                    .get(&e.tenant_id)
                    .is_some_and(|t| t.0.is_charged(e.task_id));
                if !charged {
                    self.uncharged.insert(
                        e.task_id,
                        PendingCharge {
                            tenant_id: e.tenant_id,
                            job_id,
                            node_id: e.node_id,
                            render_seconds: e.render_seconds,
                            completed_at: e.completed_at,
                            mine: false,
                        },
                    );
                }
            }
            E::TaskFailed(e) => {
                ended.push(e.task_id);
                applied.freed = true;
            }
            E::TaskRequeued(e) => {
                ended.push(e.task_id);
                applied.work = true;
            }
            E::TaskReleased(e) => {
                ended.push(e.task_id);
                applied.work = true;
            }
            E::TaskStarted(e) => {
                if let Some(l) = self.leases.get_mut(&e.task_id)
                    && l.epoch == e.lease_epoch
                {
                    l.started_at = Some(e.started_at);
                    l.output_at = l.output_at.max(e.started_at);
                }
            }
            E::TaskProgressed(e) => {
                if let Some(l) = self.leases.get_mut(&e.task_id)
                    && l.epoch == e.lease_epoch
                {
                    l.output_at = l.output_at.max(e.finished_at);
                }
            }
            E::TaskRetried(_) | E::Resumed(_) | E::Released(_) => applied.work = true,
            E::Cancelled(_) => {
                applied.freed = true;
                ended.extend(
                    self.leases
                        .iter()
                        .filter(|(_, l)| l.job_id == job_id)
                        .map(|(t, _)| *t),
                );
            }
            _ => {}
        }
        for task_id in ended {
            if let Some(lease) = self.leases.remove(&task_id)
                && let Some(n) = self.running.get_mut(&lease.tenant_id)
            {
                *n = n.saturating_sub(1);
            }
        }
        // The queue mirrors the tasks the domain calls queued.
        if applied.work
            || matches!(
                event,
                E::TaskFailed(_) | E::Cancelled(_) | E::Completed(_) | E::Failed(_)
            )
        {
            let entry = self.jobs.get_mut(&job_id).expect("inserted above");
            entry.queue = entry
                .job
                .tasks()
                .filter(|t| t.status == domain::render_job::TaskStatus::Queued)
                .map(|t| (t.index, t.id))
                .collect();
            if matches!(
                entry.job.status(),
                JobStatus::Completed | JobStatus::Cancelled
            ) {
                entry.queue.clear();
            }
        }
        self.reindex(job_id);
        self.settle(job_id);
        applied
    }

    pub fn apply_tenant(&mut self, event: &TenantEvent, version: u64) {
        let Ok(id) = TenantId::new(event.stream_id()) else {
            return;
        };
        let entry = self.tenants.entry(id).or_default();
        entry.0 = std::mem::take(&mut entry.0).evolve(event);
        entry.1 = version;
        if let TenantEvent::CreditCharged(e) = event {
            self.uncharged.remove(&e.task_id);
        }
    }

    pub fn apply_node(&mut self, event: &NodeEvent, version: u64) {
        let Ok(id) = NodeId::new(event.stream_id()) else {
            return;
        };
        let entry = self.nodes.entry(id).or_default();
        entry.0 = std::mem::take(&mut entry.0).evolve(event);
        entry.1 = version;
    }

    pub fn apply_file(&mut self, event: &FileEvent, version: u64) {
        // Uploads are inputs a job may name; outputs are remembered for
        // their version only.
        let (file_id, file, output) = match event {
            FileEvent::Uploaded(e) => (
                e.file_id,
                (e.tenant_id, &e.sha256, e.size_bytes, &e.content_type, true),
                None,
            ),
            FileEvent::OutputStored(e) => (
                e.file_id,
                (e.tenant_id, &e.sha256, e.size_bytes, &e.content_type, false),
                Some(OutputOf {
                    job_id: e.job_id,
                    task_id: e.task_id,
                    node_id: e.node_id,
                    frame: e.frame,
                    lease_epoch: e.lease_epoch,
                }),
            ),
            FileEvent::Deleted(e) => {
                if let Some(f) = self.files.get_mut(&e.file_id) {
                    f.0.input = false;
                    f.1 = version;
                }
                return;
            }
        };
        let (tenant_id, sha256, size_bytes, content_type, input) = file;
        if output.is_some_and(|o| self.retired.contains_key(&o.job_id)) {
            // A frame of a finished render that left the view (this
            // instance reads its own uploads back after the render retired):
            // it left with the render.
            return;
        }
        if let Some(o) = output
            && let Some(epoch) = o.lease_epoch
        {
            self.lease_outputs
                .insert((o.task_id, epoch, o.frame), file_id);
        }
        let scene = SceneFile {
            tenant_id,
            sha256: sha256.as_str().to_owned(),
            size_bytes,
            content_type: content_type.as_str().to_owned(),
            input,
            output,
        };
        self.files.insert(file_id, (scene, version));
    }
}

/// The view is behind a stream by more than one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap;

fn decode<E: DomainEvent>(event: &RecordedEvent) -> Option<E> {
    match event.to_domain::<E>() {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(event_id = %event.event_id, error = %e, "undecodable event skipped by the scheduler");
            None
        }
    }
}
