//! What nodes report under a lease: heartbeats, claims, start, frames and
//! their outputs, completion (then its charge), failure and release. Every
//! report is checked against the lease's fencing token first.

use chrono::{DateTime, Utc};
use domain::render_job::RenderJobEvent;
use domain::{DomainError, FileId, JobId, LeaseRef, NodeCommand, NodeId, Note, RenderJobCommand};
use eventstore::Actor;

use crate::state::{LiveLease, State};
use crate::{
    Assignment, FileOutput, MAX_ATTEMPTS, Orchestrator, OrchestratorError, any_capable_node, batch,
    render_seconds, system,
};

impl Orchestrator {
    /// Records a rendered frame (`file.output_stored.v1`) if the node still
    /// holds the task's lease; the bytes are already stored.
    pub async fn record_output(
        &self,
        lease: LeaseRef,
        frame: u32,
        file: FileOutput,
    ) -> Result<FileId, OrchestratorError> {
        self.batched(|reply| batch::Op::Output {
            lease,
            frame,
            file: Box::new(file.clone()),
            reply,
        })
        .await
    }

    /// Runs a group-committed operation, deciding it again when another
    /// writer changed its stream; a refusal that a view behind the log
    /// could explain (a lease, start or output recorded through another
    /// instance a moment ago) is decided once more after catching up.
    pub(crate) async fn batched<T>(
        &self,
        op: impl Fn(tokio::sync::oneshot::Sender<Result<T, OrchestratorError>>) -> batch::Op,
    ) -> Result<T, OrchestratorError> {
        let mut caught_up = false;
        for _ in 0..MAX_ATTEMPTS {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.submit_op(op(reply));
            match answer.await.map_err(|_| OrchestratorError::Contention)? {
                Err(OrchestratorError::Contention) => {}
                Err(
                    refusal @ (OrchestratorError::NotFound(_)
                    | OrchestratorError::InvalidOutput(_)
                    | OrchestratorError::Domain(_)),
                ) if !caught_up => {
                    caught_up = true;
                    if let Err(e) = self.catch_up().await {
                        // The refusal stands; the store's trouble is logged.
                        tracing::warn!(error = %e, "catching up after a refusal failed");
                        return Err(refusal);
                    }
                }
                other => return other,
            }
        }
        Err(OrchestratorError::Contention)
    }

    /// The live lease `lease` presents: a task no job has is unknown
    /// (404), a known task whose lease is another is a stale lease (409).
    pub(crate) fn current_lease(
        &self,
        st: &State,
        lease: LeaseRef,
    ) -> Result<LiveLease, OrchestratorError> {
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
    pub(crate) async fn live_lease(&self, lease: LeaseRef) -> Result<LiveLease, OrchestratorError> {
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

    /// Records that the node was heard from; a node heard from again after
    /// going offline is online again (an event).
    pub(crate) async fn touch(
        &self,
        st: &mut State,
        node_id: NodeId,
    ) -> Result<(), OrchestratorError> {
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
        let stop = {
            let mut st = self.inner.state.lock().await;
            self.touch(&mut st, node_id).await?;
            self.renew_held(&mut st, node_id, held)
        };
        if stop.is_empty() {
            return Ok(stop);
        }
        // Leases this view does not know may have been granted by another
        // instance a moment ago: never tell a node to stop one of those.
        self.catch_up().await?;
        let mut st = self.inner.state.lock().await;
        Ok(self.renew_held(&mut st, node_id, &stop))
    }

    /// Renews the leases among `held` that are current; returns the others.
    fn renew_held(&self, st: &mut State, node_id: NodeId, held: &[LeaseRef]) -> Vec<LeaseRef> {
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
        stop
    }

    /// Leases the best task for this node, if any (see the crate docs for
    /// the order). `None` when nothing fits now.
    pub async fn claim(&self, node_id: NodeId) -> Result<Option<Assignment>, OrchestratorError> {
        for _ in 0..MAX_ATTEMPTS {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.submit_op(batch::Op::Claim { node_id, reply });
            match answer.await.map_err(|_| OrchestratorError::Contention)? {
                Err(OrchestratorError::Contention) => continue,
                other => {
                    match other {
                        Ok(Some(_)) => self.count_lease_granted(),
                        Ok(None) => self.count_claim_empty(),
                        Err(_) => {}
                    }
                    return other;
                }
            }
        }
        Err(OrchestratorError::Contention)
    }

    /// Renews a lease (progress counts as a sign of life).
    pub(crate) fn renew(&self, st: &mut State, lease: LeaseRef) {
        let expires = self.now() + self.inner.config.lease_ttl;
        st.heard_from(lease.node_id, self.now());
        if let Some(l) = st.leases.get_mut(&lease.task_id)
            && l.node_id == lease.node_id
            && l.epoch == lease.lease_epoch
        {
            l.expires_at = expires;
        }
    }

    pub(crate) fn job_of(st: &State, lease: LeaseRef) -> Result<JobId, OrchestratorError> {
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

    pub(crate) async fn lease_command(
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
        let frame = match (frame, output_file_id) {
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
        self.batched(|reply| batch::Op::Progress {
            lease,
            frame,
            reply,
        })
        .await
    }

    /// Checks that `lease` is current, counts it as a sign of life (the
    /// lease is renewed), and answers the task's job and tenant: for what
    /// a node sends that is never stored (fine progress, log lines).
    pub async fn heard_on_lease(
        &self,
        lease: LeaseRef,
    ) -> Result<(JobId, domain::TenantId), OrchestratorError> {
        let mut st = self.inner.state.lock().await;
        let live = match self.current_lease(&st, lease) {
            Ok(live) => live,
            Err(_) => {
                // Leased or started through another instance a moment ago?
                drop(st);
                self.catch_up().await?;
                st = self.inner.state.lock().await;
                self.current_lease(&st, lease)?
            }
        };
        self.renew(&mut st, lease);
        let now = self.now();
        if let Some(l) = st.leases.get_mut(&lease.task_id)
            && l.epoch == lease.lease_epoch
        {
            l.output_at = l.output_at.max(now);
        }
        Ok((live.job_id, live.tenant_id))
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
        self.upload_checked(lease, frame).await?;
        let st = self.inner.state.lock().await;
        self.uploadable(&st, lease, frame).map(|(_, size)| size)
    }

    /// Checks an upload; if the view refuses it, checks again after
    /// catching up (the task was leased or started through another instance
    /// a moment ago).
    async fn upload_checked(&self, lease: LeaseRef, frame: u32) -> Result<(), OrchestratorError> {
        {
            let st = self.inner.state.lock().await;
            if self.uploadable(&st, lease, frame).is_ok() {
                return Ok(());
            }
        }
        self.catch_up().await?;
        let st = self.inner.state.lock().await;
        self.uploadable(&st, lease, frame).map(|_| ())
    }

    /// The checks of an upload, against the view.
    pub(crate) fn uploadable(
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
            return Err(OrchestratorError::InvalidOutput(format!(
                "frame {frame} is not one of this task's (frames {} to {})",
                task.frames.start(),
                task.frames.end()
            )));
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
    pub(crate) fn check_output(
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
    /// A lease granted by another instance a moment ago is looked up again
    /// after catching up with the log.
    pub async fn may_read_input(&self, node_id: NodeId, sha256: &str) -> bool {
        if self.holds_lease_reading(node_id, sha256).await {
            return true;
        }
        if let Err(e) = self.catch_up().await {
            tracing::warn!(error = %e, "catching up before an input download failed");
            return false;
        }
        self.holds_lease_reading(node_id, sha256).await
    }

    async fn holds_lease_reading(&self, node_id: NodeId, sha256: &str) -> bool {
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
        self.batched(|reply| batch::Op::Complete { lease, reply })
            .await?;
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
        self.fail_with(lease, error, None).await
    }

    /// [`Orchestrator::fail`], saying why when it was a timeout.
    pub async fn fail_with(
        &self,
        lease: LeaseRef,
        error: Note,
        cause: Option<domain::render_job::FailureCause>,
    ) -> Result<(), OrchestratorError> {
        let started = self.live_lease(lease).await?.assigned_at;
        let seconds = render_seconds(started, self.now());
        let (job_id, _) = self
            .lease_command(lease, |at| RenderJobCommand::Fail {
                lease,
                error: error.clone(),
                cause,
                render_seconds: seconds,
                at,
            })
            .await?;
        let mut st = self.inner.state.lock().await;
        // The failure may have failed the job and retired it.
        if !self.ensure_job(&mut st, job_id).await? {
            return Ok(());
        }
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
}
