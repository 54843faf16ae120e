//! Commands that are not node reports: tenants, node registration, client
//! uploads, submissions and job control, each decided in the domain and
//! appended at the stream's exact version (retried on contention).

use chrono::{DateTime, Utc};
use domain::file::FileEvent;
use domain::node::Capabilities;
use domain::render_job::RenderJobEvent;
use domain::{
    Aggregate, FileCommand, FileId, JobId, NodeCommand, NodeEvent, NodeId, RenderJob,
    RenderJobCommand, SubmitJob, TenantCommand, TenantEvent, TenantId,
};
use eventstore::Actor;

use crate::state::State;
use crate::{MAX_ATTEMPTS, Orchestrator, OrchestratorError, requester, system};

impl Orchestrator {
    /// Runs a job command against fresh state, retrying on contention.
    pub(crate) async fn job_command(
        &self,
        job_id: JobId,
        actor: Actor,
        command: impl Fn(DateTime<Utc>) -> RenderJobCommand,
    ) -> Result<Vec<RenderJobEvent>, OrchestratorError> {
        for _ in 0..MAX_ATTEMPTS {
            let mut st = self.inner.state.lock().await;
            if !self.ensure_job(&mut st, job_id).await? {
                return Err(OrchestratorError::NotFound("job"));
            }
            let entry = st
                .jobs
                .get(&job_id)
                .ok_or(OrchestratorError::NotFound("job"))?;
            let decided = entry.job.decide(command(self.now()));
            let result = match decided {
                Ok(events) => self
                    .commit_job(&mut st, job_id, &events, actor.clone())
                    .await
                    .map(|()| events),
                Err(e) => Err(e.into()),
            };
            // A job read back for a refused command leaves again.
            st.retire_settled();
            match result {
                Err(OrchestratorError::Contention) => continue,
                other => return other,
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

    pub(crate) async fn node_command(
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

    /// Drains, enables or disables a registered node on an operator's
    /// behalf (`NotFound` for a node that never registered; the domain
    /// refuses a change the node's state does not allow).
    pub async fn operate_node(
        &self,
        node_id: NodeId,
        actor: Actor,
        command: impl Fn(DateTime<Utc>) -> NodeCommand,
    ) -> Result<(), OrchestratorError> {
        let mut st = self.inner.state.lock().await;
        let known = st
            .nodes
            .get(&node_id)
            .is_some_and(|n| n.0.registration().is_some());
        if !known {
            return Err(OrchestratorError::NotFound("node"));
        }
        let at = self.now();
        self.node_command(&mut st, node_id, command(at), actor)
            .await?;
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
            requester(),
            |st, e, v| st.apply_file(e, v),
        )
        .await
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
        Self::check_dependencies(&st, &command)?;
        let job_id = command.job_id;
        let events = RenderJob::default().decide(RenderJobCommand::Submit(command))?;
        self.commit_job(&mut st, job_id, &events, requester()).await
    }

    /// A submission's dependencies are renders of its tenant that the
    /// view holds, and following them never leads back to the new render.
    fn check_dependencies(st: &State, command: &SubmitJob) -> Result<(), OrchestratorError> {
        // Depth-first over depends_on: a render reached twice is a cycle
        // only if it is the new one (the graph was acyclic before).
        let mut stack: Vec<JobId> = command.depends_on.clone();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(job) = stack.pop() {
            if job == command.job_id {
                return Err(OrchestratorError::InvalidDependency(
                    "depends_on makes a cycle: the render would wait for itself".into(),
                ));
            }
            if !seen.insert(job) {
                continue;
            }
            // A retired render is finished: it waits for nothing.
            if let Some(s) = st.jobs.get(&job).and_then(|j| j.job.submission()) {
                stack.extend(s.depends_on.iter().copied());
            }
        }
        for dependency in &command.depends_on {
            let owned = st.job_tenant(*dependency) == Some(command.tenant_id);
            if !owned {
                return Err(OrchestratorError::InvalidDependency(format!(
                    "depends_on names {dependency}, which is not a render of this tenant"
                )));
            }
        }
        Ok(())
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
            let owned = st.job_tenant(job_id) == Some(tenant_id);
            if !owned {
                return Err(OrchestratorError::NotFound("job"));
            }
        }
        self.job_command(job_id, requester(), command).await
    }
}
