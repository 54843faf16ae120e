//! The view and how it keeps current: catch-up from the log (its own
//! appends and other instances'), reloading a stream after a refused
//! append, the follower, committing at the exact stream version, and the
//! read-only queries for displays and tests.

use std::collections::BTreeMap;
use std::time::Duration;

use domain::render_job::{JobStatus, RenderJobEvent};
use domain::{DomainEvent, FileId, JobId, NodeId, TenantId};
use eventstore::{Actor, AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError};
use uuid::Uuid;

use crate::state::{Gap, State};
use crate::{JobProgress, Orchestrator, OrchestratorError, Upload, metadata};

impl Orchestrator {
    /// Applies every event appended since the view's position (by this or
    /// another instance). Returns how many events were applied.
    pub async fn catch_up(&self) -> Result<usize, OrchestratorError> {
        let mut applied = 0;
        let mut work = false;
        loop {
            let mut st = self.inner.state.lock().await;
            if !st.dropped.is_empty() {
                self.reload_dropped(&mut st).await;
            }
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
                        work |= a.wakes();
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
            st.retire_settled();
        }
        if work {
            self.signal_work();
        }
        Ok(applied)
    }

    /// Reads a stream from the view's version on and applies it.
    pub(crate) async fn reload(
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
            if st.version_of(stream_type, stream_id) < from {
                // An event this view cannot apply (it does not decode):
                // logged by the decoder; reading it again would loop.
                tracing::error!(%stream_id, version = from, "a stream stops at an event the scheduler cannot apply");
                return Ok(());
            }
        }
    }

    /// Reloads the streams whose reload failed after a refused append (the
    /// view dropped what it held of them): until then their jobs, leases
    /// and charges are missing from the view.
    pub(crate) async fn reload_dropped(&self, st: &mut State) {
        let dropped: Vec<(String, Uuid)> = st.dropped.iter().cloned().collect();
        for (stream_type, stream_id) in dropped {
            st.forget(&stream_type, stream_id);
            match self.reload(st, &stream_type, stream_id).await {
                Ok(()) => {
                    st.dropped.remove(&(stream_type, stream_id));
                }
                Err(e) => {
                    tracing::warn!(%stream_id, error = %e, "reloading a dropped stream failed; retrying");
                    return;
                }
            }
        }
    }

    /// Reads a retired job's stream back into the view before a command
    /// on it (it leaves again once the command is done, if still final:
    /// see [`State::retire_settled`]). `false` if the view has no such job.
    pub(crate) async fn ensure_job(
        &self,
        st: &mut State,
        job_id: JobId,
    ) -> Result<bool, OrchestratorError> {
        if st.jobs.contains_key(&job_id) {
            return Ok(true);
        }
        if st.retired.remove(&job_id).is_none() {
            return Ok(false);
        }
        self.reload(st, "render_job", job_id.as_uuid()).await?;
        st.settle(job_id);
        Ok(st.jobs.contains_key(&job_id))
    }

    /// A job as its stream in the store has it, without putting it into
    /// the view (for reads about retired jobs).
    async fn job_from_store(&self, job_id: JobId) -> Option<domain::RenderJob> {
        use domain::Aggregate;
        let mut job = domain::RenderJob::default();
        let mut from = 1;
        loop {
            let batch = match self
                .inner
                .store
                .read_stream(job_id.as_uuid(), from, eventstore::store::READ_BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(%job_id, error = %e, "reading a finished render's stream failed");
                    return None;
                }
            };
            let Some(last) = batch.last().map(|e| e.stream_version) else {
                break;
            };
            for event in &batch {
                match event.to_domain::<RenderJobEvent>() {
                    Ok(e) => job = job.evolve(&e),
                    Err(e) => {
                        tracing::error!(event_id = %event.event_id, error = %e, "undecodable event in a render's stream");
                    }
                }
            }
            from = last + 1;
        }
        job.submission().is_some().then_some(job)
    }

    /// `read` of the job in the view, or of the job read from the store if
    /// it retired.
    async fn read_job<R>(
        &self,
        job_id: JobId,
        read: impl Fn(&domain::RenderJob) -> R,
    ) -> Option<R> {
        {
            let st = self.inner.state.lock().await;
            if let Some(entry) = st.jobs.get(&job_id) {
                return Some(read(&entry.job));
            }
            if !st.retired.contains_key(&job_id) {
                return None;
            }
        }
        self.job_from_store(job_id).await.map(|job| read(&job))
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

    /// Appends `events` to a stream at the version the view holds, applying
    /// them to the view on success. A concurrent writer's change reloads the
    /// stream and returns [`OrchestratorError::Contention`] so that the
    /// caller decides again on fresh state.
    // The stream's identity (type, id, tenant) is spelled out at each call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn commit<E: DomainEvent>(
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
        let started = std::time::Instant::now();
        let appended = self.inner.store.append(request).await;
        self.count_append(started.elapsed());
        match appended {
            Ok(result) => {
                for (event, v) in events.iter().zip(result.first_version..) {
                    apply(st, event, v);
                }
                st.retire_settled();
                Ok(())
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {
                self.reload(st, stream_type, stream_id).await?;
                Err(OrchestratorError::Contention)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn commit_job(
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
                if a.wakes() {
                    self.signal_work();
                }
            },
        )
        .await
    }

    /// Progress of a job, for displays and tests.
    pub async fn job_progress(&self, job_id: JobId) -> Option<JobProgress> {
        self.read_job(job_id, |job| JobProgress {
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
        .await
    }

    /// The current output of each frame of a job that has one (a frame
    /// re-rendered under a later lease has the later output), in frame
    /// order.
    pub async fn current_outputs(&self, job_id: JobId) -> Vec<(u32, FileId)> {
        self.read_job(job_id, |j| j.current_outputs().collect())
            .await
            .unwrap_or_default()
    }

    /// A job's submission as the view holds it.
    pub async fn submission(&self, job_id: JobId) -> Option<domain::render_job::JobSubmitted> {
        self.read_job(job_id, |j| j.submission().cloned())
            .await
            .flatten()
    }

    /// A tenant's uploaded file (a scene or input), as the view holds it:
    /// its SHA-256, size and media type. Another tenant's file, an output or
    /// a deleted file is `None`.
    pub async fn upload_of(&self, tenant_id: TenantId, file_id: FileId) -> Option<Upload> {
        let st = self.inner.state.lock().await;
        st.files
            .get(&file_id)
            .filter(|(f, _)| f.input && f.tenant_id == tenant_id)
            .map(|(f, _)| Upload {
                sha256: f.sha256.clone(),
                size_bytes: f.size_bytes,
                content_type: f.content_type.clone(),
            })
    }

    /// Whether some registered node offers the renderer `name`.
    pub async fn renderer_offered(&self, name: &str) -> bool {
        let st = self.inner.state.lock().await;
        st.nodes.values().any(|(node, _)| {
            node.capabilities()
                .is_some_and(|c| c.renderers.iter().any(|r| r.name.as_str() == name))
        })
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
        st.job_status(job_id).is_some_and(|s| {
            matches!(
                s,
                JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
            )
        })
    }

    /// What the view holds.
    pub async fn view_stats(&self) -> crate::ViewStats {
        let st = self.inner.state.lock().await;
        crate::ViewStats {
            jobs: st.jobs.len(),
            schedulable: st.schedulable.values().map(|s| s.len()).sum(),
            retired: st.retired.len(),
            files: st.files.len(),
            leases: st.leases.len(),
        }
    }

    /// The position up to which the view has read the log.
    pub async fn position(&self) -> i64 {
        self.inner.state.lock().await.position
    }

    /// When this instance last heard from a node (heartbeat, claim or
    /// report), if it has since it started.
    pub async fn last_seen(&self, node_id: NodeId) -> Option<chrono::DateTime<chrono::Utc>> {
        let st = self.inner.state.lock().await;
        st.last_seen.get(&node_id).copied()
    }

    /// A job's tenant, if the view holds the job.
    pub async fn tenant_of(&self, job_id: JobId) -> Option<TenantId> {
        let st = self.inner.state.lock().await;
        st.job_tenant(job_id)
    }

    /// A tenant's jobs that have not finished (active or paused), oldest
    /// first, at most `limit`.
    pub async fn unfinished_jobs(&self, tenant_id: TenantId, limit: usize) -> Vec<JobId> {
        self.unfinished_jobs_of(Some(tenant_id), limit).await
    }

    /// The unfinished jobs of `tenant_id`, or of every tenant (`None`: the
    /// farm, for operators), oldest first, at most `limit`.
    pub async fn unfinished_jobs_of(
        &self,
        tenant_id: Option<TenantId>,
        limit: usize,
    ) -> Vec<JobId> {
        let st = self.inner.state.lock().await;
        let mut jobs: Vec<(chrono::DateTime<chrono::Utc>, JobId)> = st
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.job
                    .submission()
                    .is_some_and(|s| tenant_id.is_none_or(|t| s.tenant_id == t))
                    && matches!(j.job.status(), JobStatus::Active | JobStatus::Paused)
            })
            .map(|(id, j)| (j.submitted_at, *id))
            .collect();
        jobs.sort();
        jobs.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// A tenant's balance in minor units.
    pub async fn balance(&self, tenant_id: TenantId) -> Option<i64> {
        let st = self.inner.state.lock().await;
        st.tenants.get(&tenant_id).map(|t| t.0.balance().get())
    }
}
