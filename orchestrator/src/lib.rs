#![doc = include_str!("../README.md")]

mod batch;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::file::{FileEvent, OutputStored};
use domain::node::{Capabilities, OfflineReason};
use domain::render_job::{JobStatus, RenderJobEvent, RequeueReason};
use domain::{
    Aggregate, DomainError, DomainEvent, FileCommand, FileId, JobId, LeaseRef, NodeCommand,
    NodeEvent, NodeId, Note, RenderJob, RenderJobCommand, SubmitJob, TaskId, TenantCommand,
    TenantEvent, TenantId,
};
use eventstore::{
    Actor, AnyStore, AppendRequest, Clock, EventMetadata, EventStore, ExpectedVersion, NewEvent,
    StoreError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use state::{Gap, LiveLease, State};

/// How the scheduler behaves; every default runs on a laptop.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a lease lives unless renewed by a heartbeat or progress.
    pub lease_ttl: chrono::Duration,
    /// A node not heard from for this long goes offline and loses its leases.
    pub offline_after: chrono::Duration,
    /// Failures of one job on one node before the node is blocklisted for it.
    pub blocklist_after: u32,
    /// Price per render-second by node class, in minor units.
    pub prices_minor_per_second: BTreeMap<String, i64>,
    /// Price per render-second of a class without its own price.
    pub default_price_minor_per_second: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lease_ttl: chrono::Duration::seconds(60),
            offline_after: chrono::Duration::seconds(30),
            blocklist_after: 3,
            prices_minor_per_second: BTreeMap::new(),
            default_price_minor_per_second: 1,
        }
    }
}

impl Config {
    fn price_of(&self, node_class: &str) -> i64 {
        self.prices_minor_per_second
            .get(node_class)
            .copied()
            .unwrap_or(self.default_price_minor_per_second)
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The domain refused the command (stale lease, paused job, …).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node never registered.
    #[error("the node has not registered")]
    UnknownNode,
    /// The named entity does not exist (or belongs to another tenant).
    #[error("unknown {0}")]
    NotFound(&'static str),
    /// A command refers to something unusable (e.g. a scene of another tenant).
    #[error("{0}")]
    Invalid(String),
    /// Other writers kept changing the stream; the caller may retry.
    #[error("the stream kept changing under concurrent writers")]
    Contention,
    /// The store failed during a group commit.
    #[error("storage failed: {0}")]
    Storage(String),
    /// A node reported or uploaded an output that is not this lease's
    /// output of that frame (or is not a usable image).
    #[error("{0}")]
    InvalidOutput(String),
}

/// Frames of an assignment, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFrames {
    /// First frame.
    pub start: u32,
    /// Last frame (inclusive).
    pub end: u32,
}

/// The scene an assignment renders, named by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireScene {
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Its size.
    pub size_bytes: u64,
}

/// The renderer parameters of an assignment: typed, never a command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireParams {
    /// Output width in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Output height in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Samples per pixel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
}

/// A lease on a task, as the node-agent contract's `Assignment` (without
/// the orchestrator's signature, which the API adds with the node's secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The job.
    pub job_id: Uuid,
    /// The task.
    pub task_id: Uuid,
    /// The fencing token.
    pub lease_epoch: u32,
    /// When the lease ends unless renewed.
    pub lease_expires_at: DateTime<Utc>,
    /// The renderer, by name.
    pub renderer: String,
    /// Its typed parameters.
    pub params: WireParams,
    /// The frames.
    pub frames: WireFrames,
    /// The input scene.
    pub scene: WireScene,
}

/// Counts for progress displays and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// The job's state.
    pub status: &'static str,
    /// Tasks in the job.
    pub tasks: usize,
    /// Completed tasks.
    pub tasks_completed: usize,
    /// Frames in the job.
    pub frames_total: u64,
    /// Frames reported finished.
    pub frames_done: u64,
    /// Tasks holding a lease.
    pub leased: usize,
}

struct Inner {
    store: AnyStore,
    clock: Arc<dyn Clock>,
    config: Config,
    state: Mutex<State>,
    /// Bumped whenever work may have become available.
    work: watch::Sender<u64>,
    /// Claims and completions for the committer (see `batch`).
    ops: tokio::sync::mpsc::UnboundedSender<batch::Op>,
}

/// The scheduler. Cheap to clone; every clone shares one view.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// How often a command is retried when another writer changed its stream.
const MAX_ATTEMPTS: usize = 16;

fn system() -> Actor {
    Actor::System {
        component: "orchestrator".into(),
    }
}

fn metadata(actor: Actor) -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor,
        trace_id: None,
    }
}

fn meets(caps: &Capabilities, job: &domain::render_job::JobSubmitted) -> bool {
    let req = &job.requirements;
    caps.renderers.iter().any(|r| r.name == job.renderer)
        && (!req.gpu || !caps.gpus.is_empty())
        && req.min_memory_bytes.is_none_or(|m| caps.memory_bytes >= m)
        && req.min_cores.is_none_or(|c| caps.cores >= c)
        && req.tags.iter().all(|t| caps.tags.contains(t))
}

impl Orchestrator {
    /// Builds the view from the store and returns the scheduler.
    pub async fn open(
        store: AnyStore,
        clock: Arc<dyn Clock>,
        config: Config,
    ) -> Result<Self, OrchestratorError> {
        let now = clock.now();
        let state = State {
            lease_ttl: config.lease_ttl,
            now,
            ..State::default()
        };
        let (ops, queued) = tokio::sync::mpsc::unbounded_channel();
        let this = Self {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                state: Mutex::new(state),
                work: watch::channel(0).0,
                ops,
            }),
        };
        eventstore::task::spawn_named(
            "orchestrator-committer",
            batch::committer(Arc::downgrade(&this.inner), queued),
        );
        this.catch_up().await?;
        // Nodes online in the log get a full grace period from now.
        let mut st = this.inner.state.lock().await;
        let online: Vec<NodeId> = st
            .nodes
            .iter()
            .filter(|(_, (n, _))| n.connectivity() == domain::node::Connectivity::Online)
            .map(|(id, _)| *id)
            .collect();
        for id in online {
            st.last_seen.insert(id, now);
        }
        drop(st);
        Ok(this)
    }

    /// The store.
    pub fn store(&self) -> &AnyStore {
        &self.inner.store
    }

    /// How this scheduler was configured (lease length, offline period, …).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A receiver that changes whenever work may have become available.
    pub fn work_signal(&self) -> watch::Receiver<u64> {
        self.inner.work.subscribe()
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn signal_work(&self) {
        self.inner.work.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Applies every event appended since the view's position (by this or
    /// another instance). Returns how many events were applied.
    pub async fn catch_up(&self) -> Result<usize, OrchestratorError> {
        let mut applied = 0;
        let mut work = false;
        loop {
            let mut st = self.inner.state.lock().await;
            let batch = self
                .inner
                .store
                .read_all(st.position, eventstore::store::READ_BATCH)
                .await?;
            let Some(last) = batch.last().map(|e| e.global_position) else {
                break;
            };
            for event in &batch {
                match st.apply_recorded(event) {
                    Ok(Some(a)) => {
                        applied += 1;
                        work |= a.work;
                    }
                    Ok(None) => {}
                    Err(Gap) => {
                        self.reload(&mut st, &event.stream_type, event.stream_id)
                            .await?;
                        work = true;
                    }
                }
            }
            st.position = last;
        }
        if work {
            self.signal_work();
        }
        Ok(applied)
    }

    /// Reads a stream from the view's version on and applies it.
    async fn reload(
        &self,
        st: &mut State,
        stream_type: &str,
        stream_id: Uuid,
    ) -> Result<(), OrchestratorError> {
        loop {
            let from = st.version_of(stream_type, stream_id) + 1;
            let batch = self
                .inner
                .store
                .read_stream(stream_id, from, eventstore::store::READ_BATCH)
                .await?;
            if batch.is_empty() {
                return Ok(());
            }
            for event in &batch {
                // In version order from the view's version: never a gap.
                let _ = st.apply_recorded(event);
            }
        }
    }

    /// Keeps the view current with other instances' appends until the
    /// returned task is aborted.
    pub fn spawn_follower(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        eventstore::task::spawn_named("orchestrator-follower", async move {
            let mut appended = this.inner.store.appended();
            loop {
                let _ = tokio::time::timeout(Duration::from_secs(1), appended.changed()).await;
                if let Err(e) = this.catch_up().await {
                    tracing::warn!(error = %e, "scheduler catch-up failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        })
    }

    /// Expires leases and marks silent nodes offline every `every` until
    /// the returned task is aborted.
    pub fn spawn_ticker(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        eventstore::task::spawn_named("orchestrator-ticker", async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = this.tick().await {
                    tracing::warn!(error = %e, "scheduler tick failed");
                }
            }
        })
    }

    /// Appends `events` to a stream at the version the view holds, applying
    /// them to the view on success. A concurrent writer's change reloads the
    /// stream and returns [`OrchestratorError::Contention`] so that the
    /// caller decides again on fresh state.
    // The stream's identity (type, id, tenant) is spelled out at each call.
    #[allow(clippy::too_many_arguments)]
    async fn commit<E: DomainEvent>(
        &self,
        st: &mut State,
        stream_type: &'static str,
        stream_id: Uuid,
        tenant_id: Option<Uuid>,
        events: &[E],
        actor: Actor,
        apply: impl Fn(&mut State, &E, u64),
    ) -> Result<(), OrchestratorError> {
        if events.is_empty() {
            return Ok(());
        }
        let version = st.version_of(stream_type, stream_id);
        let meta = metadata(actor);
        let request = AppendRequest {
            stream_id,
            stream_type: stream_type.into(),
            tenant_id,
            expected: if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            },
            events: events
                .iter()
                .map(|e| NewEvent::from_domain(Uuid::new_v4(), e, meta.clone()))
                .collect(),
        };
        match self.inner.store.append(request).await {
            Ok(result) => {
                for (event, v) in events.iter().zip(result.first_version..) {
                    apply(st, event, v);
                }
                Ok(())
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {
                self.reload(st, stream_type, stream_id).await?;
                Err(OrchestratorError::Contention)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn commit_job(
        &self,
        st: &mut State,
        job_id: JobId,
        events: &[RenderJobEvent],
        actor: Actor,
    ) -> Result<(), OrchestratorError> {
        let now = self.now();
        st.now = now;
        let tenant = match events.first() {
            Some(RenderJobEvent::Submitted(e)) => Some(e.tenant_id.as_uuid()),
            _ => st
                .jobs
                .get(&job_id)
                .and_then(|j| j.job.submission())
                .map(|s| s.tenant_id.as_uuid()),
        };
        self.commit(
            st,
            "render_job",
            job_id.as_uuid(),
            tenant,
            events,
            actor,
            |st, e, v| {
                let a = st.apply_job(e, v, now);
                if a.work {
                    self.signal_work();
                }
            },
        )
        .await
    }

    /// Runs a job command against fresh state, retrying on contention.
    async fn job_command(
        &self,
        job_id: JobId,
        actor: Actor,
        command: impl Fn(DateTime<Utc>) -> RenderJobCommand,
    ) -> Result<Vec<RenderJobEvent>, OrchestratorError> {
        for _ in 0..MAX_ATTEMPTS {
            let mut st = self.inner.state.lock().await;
            let entry = st
                .jobs
                .get(&job_id)
                .ok_or(OrchestratorError::NotFound("job"))?;
            let events = entry.job.decide(command(self.now()))?;
            match self
                .commit_job(&mut st, job_id, &events, actor.clone())
                .await
            {
                Ok(()) => return Ok(events),
                Err(OrchestratorError::Contention) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(OrchestratorError::Contention)
    }

    /// Creates a tenant, adds credit, changes its quota…
    pub async fn tenant_command(
        &self,
        tenant_id: TenantId,
        command: TenantCommand,
    ) -> Result<(), OrchestratorError> {
        for _ in 0..MAX_ATTEMPTS {
            let mut st = self.inner.state.lock().await;
            let tenant = st
                .tenants
                .get(&tenant_id)
                .map(|t| t.0.clone())
                .unwrap_or_default();
            let events = tenant.decide(command.clone())?;
            let result = self
                .commit(
                    &mut st,
                    "tenant",
                    tenant_id.as_uuid(),
                    Some(tenant_id.as_uuid()),
                    &events,
                    system(),
                    |st, e: &TenantEvent, v| st.apply_tenant(e, v),
                )
                .await;
            match result {
                Ok(()) => {
                    self.signal_work();
                    return Ok(());
                }
                Err(OrchestratorError::Contention) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(OrchestratorError::Contention)
    }

    async fn node_command(
        &self,
        st: &mut State,
        node_id: NodeId,
        command: NodeCommand,
        actor: Actor,
    ) -> Result<(), OrchestratorError> {
        for _ in 0..MAX_ATTEMPTS {
            let node = st
                .nodes
                .get(&node_id)
                .map(|n| n.0.clone())
                .unwrap_or_default();
            let events = node.decide(command.clone())?;
            let result = self
                .commit(
                    st,
                    "node",
                    node_id.as_uuid(),
                    None,
                    &events,
                    actor.clone(),
                    |st, e: &NodeEvent, v| st.apply_node(e, v),
                )
                .await;
            match result {
                Err(OrchestratorError::Contention) => continue,
                other => return other,
            }
        }
        Err(OrchestratorError::Contention)
    }

    /// Registers a node with its capabilities (`node.registered.v1`), or
    /// records changed capabilities of a known node
    /// (`node.capabilities_changed.v1`; nothing when unchanged).
    pub async fn register_node(
        &self,
        node_id: NodeId,
        name: domain::Label,
        capabilities: Capabilities,
        secret_key_id: domain::SecretKeyId,
    ) -> Result<(), OrchestratorError> {
        let mut st = self.inner.state.lock().await;
        let at = self.now();
        let known = st
            .nodes
            .get(&node_id)
            .is_some_and(|n| n.0.registration().is_some());
        let command = if known {
            NodeCommand::ChangeCapabilities { capabilities, at }
        } else {
            NodeCommand::Register {
                node_id,
                name,
                capabilities,
                secret_key_id,
                at,
            }
        };
        let actor = Actor::Node {
            id: node_id.as_uuid(),
        };
        self.node_command(&mut st, node_id, command, actor).await?;
        drop(st);
        self.signal_work();
        Ok(())
    }

    /// Records a client upload (`file.uploaded.v1`); the bytes are already stored.
    pub async fn record_upload(
        &self,
        file_id: FileId,
        command: FileCommand,
    ) -> Result<(), OrchestratorError> {
        let mut st = self.inner.state.lock().await;
        let events = domain::File::default().decide(command)?;
        let tenant = events
            .first()
            .and_then(FileEvent::tenant_id)
            .map(|t| t.as_uuid());
        self.commit(
            &mut st,
            "file",
            file_id.as_uuid(),
            tenant,
            &events,
            system(),
            |st, e, v| st.apply_file(e, v),
        )
        .await
    }

    /// Records a rendered frame (`file.output_stored.v1`) if the node still
    /// holds the task's lease; the bytes are already stored.
    pub async fn record_output(
        &self,
        lease: LeaseRef,
        frame: u32,
        file: FileOutput,
    ) -> Result<FileId, OrchestratorError> {
        self.live_lease(lease).await?;
        let mut st = self.inner.state.lock().await;
        let (live, _) = self.uploadable(&st, lease, frame)?;
        let file_id = FileId::new(Uuid::new_v4()).map_err(DomainError::from)?;
        let command = FileCommand::StoreOutput(Box::new(OutputStored {
            file_id,
            tenant_id: live.tenant_id,
            job_id: live.job_id,
            task_id: lease.task_id,
            node_id: lease.node_id,
            frame,
            lease_epoch: Some(lease.lease_epoch),
            name: file.name,
            content_type: file.content_type,
            size_bytes: file.size_bytes,
            sha256: file.sha256,
            stored_at: self.now(),
        }));
        let events = domain::File::default().decide(command)?;
        self.commit(
            &mut st,
            "file",
            file_id.as_uuid(),
            Some(live.tenant_id.as_uuid()),
            &events,
            Actor::Node {
                id: lease.node_id.as_uuid(),
            },
            |st, e: &FileEvent, v| st.apply_file(e, v),
        )
        .await?;
        Ok(file_id)
    }

    /// The live lease `lease` presents: a task no job has is unknown
    /// (404), a known task whose lease is another is a stale lease (409).
    fn current_lease(&self, st: &State, lease: LeaseRef) -> Result<LiveLease, OrchestratorError> {
        match st.leases.get(&lease.task_id) {
            Some(l) if l.node_id == lease.node_id && l.epoch == lease.lease_epoch => Ok(*l),
            None if Self::job_of(st, lease).is_err() => Err(OrchestratorError::NotFound("task")),
            current => Err(DomainError::StaleLease {
                task_id: lease.task_id,
                presented: lease.lease_epoch,
                current: current.map(|l| l.epoch),
            }
            .into()),
        }
    }

    /// Like `current_lease`, but a lease this view does not know yet (it
    /// was granted by another instance a moment ago) is looked up again
    /// after catching up with the log.
    async fn live_lease(&self, lease: LeaseRef) -> Result<LiveLease, OrchestratorError> {
        {
            let st = self.inner.state.lock().await;
            if let Ok(live) = self.current_lease(&st, lease) {
                return Ok(live);
            }
        }
        self.catch_up().await?;
        let st = self.inner.state.lock().await;
        self.current_lease(&st, lease)
    }

    /// Submits a render: the tenant must be active and the scene its own upload.
    pub async fn submit(&self, command: SubmitJob) -> Result<(), OrchestratorError> {
        let mut st = self.inner.state.lock().await;
        let tenant = st
            .tenants
            .get(&command.tenant_id)
            .ok_or(OrchestratorError::NotFound("tenant"))?;
        if !tenant.0.can_submit() {
            return Err(OrchestratorError::Invalid(
                "the tenant is suspended and may not submit renders".into(),
            ));
        }
        match st.files.get(&command.scene_file_id) {
            Some((f, _)) if f.input && f.tenant_id == command.tenant_id => {}
            _ => return Err(OrchestratorError::NotFound("scene file")),
        }
        let job_id = command.job_id;
        let events = RenderJob::default().decide(RenderJobCommand::Submit(command))?;
        self.commit_job(&mut st, job_id, &events, system()).await
    }

    /// Pauses, resumes, cancels or retries a job on a client's behalf.
    pub async fn control(
        &self,
        job_id: JobId,
        tenant_id: TenantId,
        command: impl Fn(DateTime<Utc>) -> RenderJobCommand,
    ) -> Result<Vec<RenderJobEvent>, OrchestratorError> {
        {
            let st = self.inner.state.lock().await;
            let owned = st
                .jobs
                .get(&job_id)
                .and_then(|j| j.job.submission())
                .is_some_and(|s| s.tenant_id == tenant_id);
            if !owned {
                return Err(OrchestratorError::NotFound("job"));
            }
        }
        self.job_command(job_id, system(), command).await
    }

    /// Records that the node was heard from; a node heard from again after
    /// going offline is online again (an event).
    async fn touch(&self, st: &mut State, node_id: NodeId) -> Result<(), OrchestratorError> {
        let now = self.now();
        if !st.nodes.contains_key(&node_id) {
            return Err(OrchestratorError::UnknownNode);
        }
        st.heard_from(node_id, now);
        let (node, _) = &st.nodes[&node_id];
        if node.connectivity() == domain::node::Connectivity::Offline && !node.is_deregistered() {
            let actor = Actor::Node {
                id: node_id.as_uuid(),
            };
            self.node_command(st, node_id, NodeCommand::MarkOnline { at: now }, actor)
                .await?;
        }
        Ok(())
    }

    /// A heartbeat: keeps the node online and renews the leases it holds.
    /// Returns the leases among `held` it must stop (revoked, requeued, or
    /// their job cancelled).
    pub async fn heartbeat(
        &self,
        node_id: NodeId,
        held: &[LeaseRef],
    ) -> Result<Vec<LeaseRef>, OrchestratorError> {
        let mut st = self.inner.state.lock().await;
        self.touch(&mut st, node_id).await?;
        let expires = self.now() + self.inner.config.lease_ttl;
        let mut stop = Vec::new();
        for lease in held {
            match st.leases.get_mut(&lease.task_id) {
                Some(l) if l.node_id == node_id && l.epoch == lease.lease_epoch => {
                    l.expires_at = expires;
                }
                _ => stop.push(*lease),
            }
        }
        Ok(stop)
    }

    /// Leases the best task for this node, if any (see the crate docs for
    /// the order). `None` when nothing fits now.
    pub async fn claim(&self, node_id: NodeId) -> Result<Option<Assignment>, OrchestratorError> {
        for _ in 0..MAX_ATTEMPTS {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.submit_op(batch::Op::Claim { node_id, reply });
            match answer.await.map_err(|_| OrchestratorError::Contention)? {
                Err(OrchestratorError::Contention) => continue,
                other => return other,
            }
        }
        Err(OrchestratorError::Contention)
    }

    /// Renews a lease (progress counts as a sign of life).
    fn renew(&self, st: &mut State, lease: LeaseRef) {
        let expires = self.now() + self.inner.config.lease_ttl;
        st.heard_from(lease.node_id, self.now());
        if let Some(l) = st.leases.get_mut(&lease.task_id)
            && l.node_id == lease.node_id
            && l.epoch == lease.lease_epoch
        {
            l.expires_at = expires;
        }
    }

    fn job_of(st: &State, lease: LeaseRef) -> Result<JobId, OrchestratorError> {
        st.leases
            .get(&lease.task_id)
            .map(|l| l.job_id)
            .or_else(|| {
                st.jobs
                    .iter()
                    .find(|(_, j)| j.job.task(lease.task_id).is_some())
                    .map(|(id, _)| *id)
            })
            .ok_or(OrchestratorError::NotFound("task"))
    }

    async fn lease_command(
        &self,
        lease: LeaseRef,
        command: impl Fn(DateTime<Utc>) -> RenderJobCommand,
    ) -> Result<(JobId, Vec<RenderJobEvent>), OrchestratorError> {
        let actor = Actor::Node {
            id: lease.node_id.as_uuid(),
        };
        let mut caught_up = false;
        loop {
            let job_id = {
                let mut st = self.inner.state.lock().await;
                self.renew(&mut st, lease);
                Self::job_of(&st, lease)
            };
            let result = match job_id {
                Ok(job_id) => self
                    .job_command(job_id, actor.clone(), &command)
                    .await
                    .map(|events| (job_id, events)),
                Err(e) => Err(e),
            };
            match result {
                // Leased through another instance a moment ago?
                Err(
                    OrchestratorError::NotFound(_)
                    | OrchestratorError::Domain(DomainError::StaleLease { .. }),
                ) if !caught_up => {
                    caught_up = true;
                    self.catch_up().await?;
                }
                other => return other,
            }
        }
    }

    /// The node started rendering.
    pub async fn start(&self, lease: LeaseRef) -> Result<(), OrchestratorError> {
        self.lease_command(lease, |at| RenderJobCommand::Start { lease, at })
            .await
            .map(|_| ())
    }

    /// The node finished a frame, stored as `output_file_id` (checked by
    /// [`Orchestrator::progress`]).
    async fn report_frame(
        &self,
        lease: LeaseRef,
        frame: u32,
        output_file_id: FileId,
    ) -> Result<(), OrchestratorError> {
        self.lease_command(lease, |at| RenderJobCommand::ReportFrame {
            lease,
            frame,
            output_file_id,
            at,
        })
        .await
        .map(|_| ())
    }

    /// Progress from a node: the first report starts the task; a frame
    /// finished is an event (reported twice, it is recorded once).
    ///
    /// A finished frame names its output: the file the node uploaded for
    /// that frame under this lease (anything else is refused and nothing
    /// is recorded).
    pub async fn progress(
        &self,
        lease: LeaseRef,
        frame: Option<u32>,
        output_file_id: Option<FileId>,
    ) -> Result<(), OrchestratorError> {
        let live = self.live_lease(lease).await?;
        let report = match (frame, output_file_id) {
            (None, None) => None,
            (Some(frame), Some(file_id)) => Some((frame, file_id)),
            (Some(frame), None) => {
                return Err(OrchestratorError::InvalidOutput(format!(
                    "a finished frame names its output: upload frame {frame}, then report it with the output_file_id the upload answered"
                )));
            }
            (None, Some(_)) => {
                return Err(OrchestratorError::InvalidOutput(
                    "output_file_id is reported together with its frame".into(),
                ));
            }
        };
        if let Some((frame, file_id)) = report {
            let known = {
                let st = self.inner.state.lock().await;
                st.files.contains_key(&file_id)
            };
            if !known {
                // Stored through another instance a moment ago?
                self.catch_up().await?;
            }
            let st = self.inner.state.lock().await;
            Self::check_output(&st, &live, lease, frame, file_id)?;
        }
        let leased = {
            let mut st = self.inner.state.lock().await;
            self.renew(&mut st, lease);
            st.jobs
                .get(&live.job_id)
                .and_then(|j| j.job.task(lease.task_id))
                .is_some_and(|t| t.status == domain::render_job::TaskStatus::Leased)
        };
        if leased {
            self.start(lease).await?;
        }
        if let Some((frame, file_id)) = report {
            self.report_frame(lease, frame, file_id).await?;
        }
        Ok(())
    }

    /// Refuses a stale lease (before an upload is stored).
    pub async fn check_lease(&self, lease: LeaseRef) -> Result<(), OrchestratorError> {
        self.live_lease(lease).await.map(|_| ())
    }

    /// Whether the node may upload `frame` under `lease` (the lease is
    /// current and started, the frame is the task's); answers the width
    /// and height the image must have, if the render set them.
    pub async fn check_upload(
        &self,
        lease: LeaseRef,
        frame: u32,
    ) -> Result<Option<(u32, u32)>, OrchestratorError> {
        self.live_lease(lease).await?;
        let st = self.inner.state.lock().await;
        self.uploadable(&st, lease, frame).map(|(_, size)| size)
    }

    /// The checks of an upload, against the view.
    fn uploadable(
        &self,
        st: &State,
        lease: LeaseRef,
        frame: u32,
    ) -> Result<(LiveLease, Option<(u32, u32)>), OrchestratorError> {
        let live = self.current_lease(st, lease)?;
        let entry = st
            .jobs
            .get(&live.job_id)
            .ok_or(OrchestratorError::NotFound("job"))?;
        let task = entry
            .job
            .task(lease.task_id)
            .ok_or(OrchestratorError::NotFound("task"))?;
        if task.status != domain::render_job::TaskStatus::Running {
            return Err(DomainError::InvalidTransition {
                entity: "task",
                from: task.status.as_str(),
                command: "upload an output of",
            }
            .into());
        }
        if !task.frames.contains(frame) {
            return Err(DomainError::Validation(domain::ValidationError::new(
                "frame",
                format!(
                    "frame {frame} is not in this task (frames {}-{})",
                    task.frames.start(),
                    task.frames.end()
                ),
            ))
            .into());
        }
        let size = entry
            .job
            .submission()
            .and_then(|s| s.resolution)
            .map(|r| (r.width(), r.height()));
        Ok((live, size))
    }

    /// Checks that `file_id` is the output the node uploaded for `frame`
    /// under this very lease.
    fn check_output(
        st: &State,
        live: &LiveLease,
        lease: LeaseRef,
        frame: u32,
        file_id: FileId,
    ) -> Result<(), OrchestratorError> {
        let Some((file, _)) = st.files.get(&file_id) else {
            return Err(OrchestratorError::InvalidOutput(format!(
                "output_file_id {file_id} names no stored output: upload frame {frame} first and report the file_id it answered"
            )));
        };
        let Some(o) = file.output else {
            return Err(OrchestratorError::InvalidOutput(format!(
                "file {file_id} is not a rendered output"
            )));
        };
        if o.job_id != live.job_id || o.task_id != lease.task_id {
            return Err(OrchestratorError::InvalidOutput(format!(
                "output {file_id} belongs to another task"
            )));
        }
        if o.frame != frame {
            return Err(OrchestratorError::InvalidOutput(format!(
                "output {file_id} is frame {}, not frame {frame}",
                o.frame
            )));
        }
        if o.node_id != lease.node_id || o.lease_epoch != Some(lease.lease_epoch) {
            return Err(OrchestratorError::InvalidOutput(format!(
                "output {file_id} was not uploaded under this lease (epoch {})",
                lease.lease_epoch
            )));
        }
        Ok(())
    }

    /// Whether `node_id` holds a lease whose job renders the input `sha256`.
    pub async fn may_read_input(&self, node_id: NodeId, sha256: &str) -> bool {
        let st = self.inner.state.lock().await;
        st.leases
            .values()
            .filter(|l| l.node_id == node_id)
            .any(|l| {
                st.jobs
                    .get(&l.job_id)
                    .and_then(|j| j.job.submission())
                    .and_then(|s| st.files.get(&s.scene_file_id))
                    .is_some_and(|(f, _)| f.sha256 == sha256)
            })
    }

    /// The node finished the task: it completes (refused with a stale
    /// lease, or while a frame has no reported output) and then the tenant
    /// is charged the lease's render time at the node class's price.
    ///
    /// Money is exactly once by construction: the charge is decided from
    /// the completion once it is in the log (never beside it in one batch
    /// where it could stand while the completion is refused), and the
    /// tenant refuses a second charge for a task, whichever instance asks.
    pub async fn complete(&self, lease: LeaseRef) -> Result<(), OrchestratorError> {
        let mut caught_up = false;
        let mut done = false;
        for _ in 0..MAX_ATTEMPTS {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.submit_op(batch::Op::Complete { lease, reply });
            match answer.await.map_err(|_| OrchestratorError::Contention)? {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(OrchestratorError::Contention) => {}
                // Leased through another instance a moment ago?
                Err(
                    OrchestratorError::NotFound(_)
                    | OrchestratorError::Domain(DomainError::StaleLease { .. }),
                ) if !caught_up => {
                    caught_up = true;
                    self.catch_up().await?;
                }
                Err(e) => return Err(e),
            }
        }
        if !done {
            return Err(OrchestratorError::Contention);
        }
        for _ in 0..MAX_ATTEMPTS {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.submit_op(batch::Op::Charge { reply: Some(reply) });
            match answer.await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(OrchestratorError::Contention)) => continue,
                Ok(Err(e)) => {
                    // The completion stands; the charge stays pending and
                    // the ticker records it.
                    tracing::warn!(error = %e, task_id = %lease.task_id, "charging a completion failed; retrying later");
                    return Ok(());
                }
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// The node failed the task: it is retried or the job fails; a node
    /// that failed the job `blocklist_after` times is blocklisted for it.
    pub async fn fail(&self, lease: LeaseRef, error: Note) -> Result<(), OrchestratorError> {
        let started = self.live_lease(lease).await?.assigned_at;
        let seconds = render_seconds(started, self.now());
        let (job_id, _) = self
            .lease_command(lease, |at| RenderJobCommand::Fail {
                lease,
                error: error.clone(),
                render_seconds: seconds,
                at,
            })
            .await?;
        let mut st = self.inner.state.lock().await;
        let Some(entry) = st.jobs.get(&job_id) else {
            return Ok(());
        };
        let failures = entry.job.failures_on_node(lease.node_id);
        let tenant_id = entry.job.submission().map(|s| s.tenant_id);
        let blocked = st
            .nodes
            .get(&lease.node_id)
            .is_some_and(|n| n.0.is_blocklisted(job_id));
        if let (true, false, Some(tenant_id)) = (
            failures >= self.inner.config.blocklist_after,
            blocked,
            tenant_id,
        ) {
            let command = NodeCommand::Blocklist {
                job_id,
                tenant_id,
                failures,
                at: self.now(),
            };
            self.node_command(&mut st, lease.node_id, command, system())
                .await?;
            if !any_capable_node(&st, job_id) {
                drop(st);
                let error =
                    Note::parse("no capable node remains: every one is blocklisted for this job")
                        .map_err(DomainError::from)?;
                let task_id = lease.task_id;
                self.job_command(job_id, system(), |at| RenderJobCommand::GiveUp {
                    task_id,
                    error: error.clone(),
                    at,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The node gives the task back (drain, shutdown).
    pub async fn release(&self, lease: LeaseRef) -> Result<(), OrchestratorError> {
        self.lease_command(lease, |at| RenderJobCommand::Release { lease, at })
            .await
            .map(|_| ())
    }

    /// Writes this instance's unshared contacts beside the log and reads
    /// everyone's. A failure is logged: judging then rests on what this
    /// instance knows, and the contacts are shared at the next tick.
    async fn share_liveness(&self) {
        let unshared: Vec<(Uuid, DateTime<Utc>)> = {
            let mut st = self.inner.state.lock().await;
            st.unshared
                .drain()
                .map(|(id, t)| (id.as_uuid(), t))
                .collect()
        };
        if let Err(e) = self.inner.store.record_liveness(&unshared).await {
            tracing::warn!(error = %e, "sharing node liveness failed; retrying at the next tick");
            let mut st = self.inner.state.lock().await;
            for (id, t) in unshared {
                if let Ok(id) = NodeId::new(id) {
                    st.unshared.entry(id).or_insert(t);
                }
            }
            return;
        }
        match self.inner.store.liveness().await {
            Ok(seen) => {
                let mut st = self.inner.state.lock().await;
                st.shared_seen = seen
                    .into_iter()
                    .filter_map(|(id, t)| NodeId::new(id).ok().map(|id| (id, t)))
                    .collect();
            }
            Err(e) => tracing::warn!(error = %e, "reading node liveness failed"),
        }
    }

    /// Charges completions still uncharged (see `batch`), shares with the
    /// other instances which nodes this one heard from,
    /// learns which nodes they heard from (beside the log: heartbeats are
    /// not events), then ends expired leases and marks silent nodes offline
    /// (requeueing their leases). Returns how many leases were requeued.
    ///
    /// A node counts as heard from when any instance heard it. A lease ends
    /// when its expiry in this view has passed, unless another instance
    /// heard from its node more recently than this one and within a lease
    /// lifetime (that instance renews the lease, and judges it).
    pub async fn tick(&self) -> Result<usize, OrchestratorError> {
        self.share_liveness().await;
        let now = self.now();
        let charges_due = {
            let st = self.inner.state.lock().await;
            st.uncharged
                .values()
                .any(|c| c.mine || now - c.completed_at >= batch::CHARGE_ELSEWHERE_AFTER)
        };
        if charges_due {
            // Completions whose charge failed, or whose instance died
            // before charging them.
            self.submit_op(batch::Op::Charge { reply: None });
        }
        let offline_after = self.inner.config.offline_after;
        let lease_ttl = self.inner.config.lease_ttl;
        let (silent, expired): (Vec<NodeId>, Vec<(TaskId, LiveLease)>) = {
            let st = self.inner.state.lock().await;
            let silent = st
                .nodes
                .iter()
                .filter(|(_, (n, _))| n.connectivity() == domain::node::Connectivity::Online)
                // Nodes nobody has heard from since this instance started
                // (and not online at its start) are left alone.
                .filter(|(id, _)| st.last_heard(**id).is_some_and(|t| now - t > offline_after))
                .map(|(id, _)| *id)
                .collect();
            let expired = st
                .leases
                .iter()
                .filter(|(_, l)| l.expires_at <= now)
                .filter(|(_, l)| {
                    st.heard_elsewhere_since(l.node_id)
                        .is_none_or(|t| now - t >= lease_ttl)
                })
                .map(|(t, l)| (*t, *l))
                .collect();
            (silent, expired)
        };
        let mut requeued = 0;
        for node_id in silent {
            let mut st = self.inner.state.lock().await;
            let command = NodeCommand::MarkOffline {
                reason: OfflineReason::MissedHeartbeats,
                at: now,
            };
            match self.node_command(&mut st, node_id, command, system()).await {
                Ok(()) => {}
                Err(OrchestratorError::Domain(_)) => continue,
                Err(e) => return Err(e),
            }
            let held: Vec<(TaskId, LiveLease)> = st
                .leases
                .iter()
                .filter(|(_, l)| l.node_id == node_id)
                .map(|(t, l)| (*t, *l))
                .collect();
            drop(st);
            for (task_id, l) in held {
                requeued += self.requeue(task_id, l, RequeueReason::NodeOffline).await?;
            }
        }
        for (task_id, l) in expired {
            requeued += self
                .requeue(task_id, l, RequeueReason::LeaseExpired)
                .await?;
        }
        Ok(requeued)
    }

    async fn requeue(
        &self,
        task_id: TaskId,
        l: LiveLease,
        reason: RequeueReason,
    ) -> Result<usize, OrchestratorError> {
        let lease = LeaseRef {
            task_id,
            node_id: l.node_id,
            lease_epoch: l.epoch,
        };
        match self
            .job_command(l.job_id, system(), |at| RenderJobCommand::Requeue {
                lease,
                reason,
                at,
            })
            .await
        {
            Ok(_) => {
                tracing::info!(%task_id, node_id = %l.node_id, ?reason, "lease ended; task requeued");
                Ok(1)
            }
            // Completed, released or requeued meanwhile.
            Err(OrchestratorError::Domain(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Progress of a job, for displays and tests.
    pub async fn job_progress(&self, job_id: JobId) -> Option<JobProgress> {
        let st = self.inner.state.lock().await;
        let entry = st.jobs.get(&job_id)?;
        let job = &entry.job;
        Some(JobProgress {
            status: job.status().as_str(),
            tasks: job.tasks().count(),
            tasks_completed: job
                .tasks()
                .filter(|t| t.status == domain::render_job::TaskStatus::Completed)
                .count(),
            frames_total: job.submission().map_or(0, |s| s.frames.len()),
            frames_done: job.tasks().map(|t| t.frames_done.len() as u64).sum(),
            leased: job.leased_task_count(),
        })
    }

    /// The current output of each frame of a job that has one (a frame
    /// re-rendered under a later lease has the later output), in frame
    /// order.
    pub async fn current_outputs(&self, job_id: JobId) -> Vec<(u32, FileId)> {
        let st = self.inner.state.lock().await;
        st.jobs
            .get(&job_id)
            .map(|j| j.job.current_outputs().collect())
            .unwrap_or_default()
    }

    /// Leased or running tasks per tenant right now.
    pub async fn running_by_tenant(&self) -> BTreeMap<TenantId, u32> {
        let st = self.inner.state.lock().await;
        st.running
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| (*t, *n))
            .collect()
    }

    /// Whether the job reached a final state.
    pub async fn is_finished(&self, job_id: JobId) -> bool {
        let st = self.inner.state.lock().await;
        st.jobs.get(&job_id).is_some_and(|j| {
            matches!(
                j.job.status(),
                JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
            )
        })
    }

    /// A tenant's balance in minor units.
    pub async fn balance(&self, tenant_id: TenantId) -> Option<i64> {
        let st = self.inner.state.lock().await;
        st.tenants.get(&tenant_id).map(|t| t.0.balance().get())
    }
}

/// What a node uploaded for a frame.
#[derive(Debug, Clone)]
pub struct FileOutput {
    /// A file name for people (e.g. `frame_0001.png`).
    pub name: domain::FileName,
    /// Its media type.
    pub content_type: domain::ContentType,
    /// Its size.
    pub size_bytes: u64,
    /// Its digest.
    pub sha256: domain::Sha256Digest,
}

/// Render time charged for a lease: whole seconds, rounded up, at least one.
fn render_seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    let ms = (to - from).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}

/// Whether some registered, enabled node meets the job's requirements and
/// is not blocklisted for it.
fn any_capable_node(st: &State, job_id: JobId) -> bool {
    let Some(job) = st.jobs.get(&job_id).and_then(|j| j.job.submission()) else {
        return false;
    };
    st.nodes.values().any(|(node, _)| {
        node.registration().is_some()
            && !node.is_deregistered()
            && node.availability() != domain::node::Availability::Disabled
            && !node.is_blocklisted(job_id)
            && node.capabilities().is_some_and(|c| meets(c, job))
    })
}

/// The best queued task for a node: among the jobs whose requirements it
/// meets and whose tenant may lease, the highest priority, then the tenant
/// furthest below its fair share (running tasks ÷ weight), then the oldest
/// job; within a job, the lowest frames first.
fn pick(st: &State, node_id: NodeId) -> Option<(JobId, TaskId)> {
    let (node, _) = st.nodes.get(&node_id)?;
    let caps = node.capabilities()?;
    let mut best: Option<(Key, JobId, TaskId)> = None;
    for (job_id, entry) in &st.jobs {
        let Some(&(_, task_id)) = entry.queue.first() else {
            continue;
        };
        let Some(job) = entry.job.submission() else {
            continue;
        };
        if !entry.job.accepts_assignments() || node.is_blocklisted(*job_id) || !meets(caps, job) {
            continue;
        }
        let Some((tenant, _)) = st.tenants.get(&job.tenant_id) else {
            continue;
        };
        let running = st.running.get(&job.tenant_id).copied().unwrap_or(0);
        if !tenant.can_lease() || running >= tenant.max_running_tasks() {
            continue;
        }
        let key = Key {
            priority: job.priority.get(),
            running: u64::from(running),
            weight: u64::from(tenant.weight().get().max(1)),
            submitted_at: entry.submitted_at,
            job_id: job_id.as_uuid(),
        };
        if best.as_ref().is_none_or(|(b, _, _)| key.before(b)) {
            best = Some((key, *job_id, task_id));
        }
    }
    best.map(|(_, j, t)| (j, t))
}

struct Key {
    priority: u8,
    running: u64,
    weight: u64,
    submitted_at: DateTime<Utc>,
    job_id: Uuid,
}

impl Key {
    fn before(&self, other: &Key) -> bool {
        use std::cmp::Ordering;
        let share = (self.running * other.weight).cmp(&(other.running * self.weight));
        match other.priority.cmp(&self.priority) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => match share {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => {
                    (self.submitted_at, self.job_id) < (other.submitted_at, other.job_id)
                }
            },
        }
    }
}

fn assignment(st: &State, job_id: JobId, task_id: TaskId) -> Result<Assignment, OrchestratorError> {
    let entry = st
        .jobs
        .get(&job_id)
        .ok_or(OrchestratorError::NotFound("job"))?;
    let job = entry
        .job
        .submission()
        .ok_or(OrchestratorError::NotFound("job"))?;
    let task = entry
        .job
        .task(task_id)
        .ok_or(OrchestratorError::NotFound("task"))?;
    let lease = st
        .leases
        .get(&task_id)
        .ok_or(OrchestratorError::NotFound("lease"))?;
    let (scene, _) = st
        .files
        .get(&job.scene_file_id)
        .ok_or(OrchestratorError::NotFound("scene file"))?;
    Ok(Assignment {
        job_id: job_id.as_uuid(),
        task_id: task_id.as_uuid(),
        lease_epoch: lease.epoch,
        lease_expires_at: lease.expires_at,
        renderer: job.renderer.to_string(),
        params: WireParams {
            width: job.resolution.map(|r| r.width()),
            height: job.resolution.map(|r| r.height()),
            samples: job.samples,
        },
        frames: WireFrames {
            start: task.frames.start(),
            end: task.frames.end(),
        },
        scene: WireScene {
            sha256: scene.sha256.clone(),
            size_bytes: scene.size_bytes,
        },
    })
}
