//! How each operation of a batch is decided against the view: its events
//! added to the batch (one write per stream) and applied to the view at
//! once, so that the next operation sees them.

use domain::file::OutputStored;
use domain::render_job::TaskStatus;
use domain::{
    Aggregate, AmountMinor, FileCommand, FileId, LeaseRef, NodeId, RenderJobCommand, TaskId,
    TenantCommand,
};
use eventstore::Actor;
use uuid::Uuid;

use crate::state::{PendingCharge, State};
use crate::{
    Assignment, FileOutput, Orchestrator, OrchestratorError, assignment, pick, render_seconds,
    system,
};

use super::{Batch, CHARGE_ELSEWHERE_AFTER};

impl Orchestrator {
    pub(super) fn decide_claim(
        &self,
        st: &mut State,
        batch: &mut Batch,
        node_id: NodeId,
        work: &mut bool,
    ) -> Result<(Vec<usize>, Option<Assignment>), OrchestratorError> {
        if !st.nodes.contains_key(&node_id) {
            return Err(OrchestratorError::UnknownNode);
        }
        // A claim is a sign of life; a node heard from again is online.
        st.heard_from(node_id, st.now);
        let (node, _) = &st.nodes[&node_id];
        let mut slots = Vec::new();
        if node.connectivity() == domain::node::Connectivity::Offline && !node.is_deregistered() {
            let events = node.decide(domain::NodeCommand::MarkOnline { at: st.now })?;
            let actor = Actor::Node {
                id: node_id.as_uuid(),
            };
            slots.push(batch.add(st, "node", node_id.as_uuid(), None, &events, actor));
            for e in &events {
                let v = st.nodes.get(&node_id).map_or(0, |n| n.1) + 1;
                st.apply_node(e, v);
            }
        }
        let Some((node, _)) = st.nodes.get(&node_id) else {
            return Err(OrchestratorError::UnknownNode);
        };
        if !node.can_accept_work() {
            return Ok((slots, None));
        }
        let Some((job_id, task_id)) = pick(st, node_id) else {
            return Ok((slots, None));
        };
        let entry = &st.jobs[&job_id];
        let tenant = entry.job.submission().map(|s| s.tenant_id.as_uuid());
        let events = entry.job.decide(RenderJobCommand::Assign {
            task_id,
            node_id,
            at: st.now,
        })?;
        let slot = batch.add(
            st,
            "render_job",
            job_id.as_uuid(),
            tenant,
            &events,
            system(),
        );
        *work |= self.apply_job_events(st, &events);
        let a = assignment(st, job_id, task_id)?;
        Ok((vec![slot], Some(a)))
    }

    pub(super) fn decide_complete(
        &self,
        st: &mut State,
        batch: &mut Batch,
        lease: LeaseRef,
        work: &mut bool,
    ) -> Result<usize, OrchestratorError> {
        let live = self.current_lease(st, lease)?;
        st.heard_from(lease.node_id, st.now);
        let now = st.now;
        let seconds = render_seconds(live.assigned_at, now);
        let job_id = live.job_id;
        let entry = st
            .jobs
            .get(&job_id)
            .ok_or(OrchestratorError::NotFound("job"))?;
        let events = entry.job.decide(RenderJobCommand::Complete {
            lease,
            render_seconds: seconds,
            at: now,
        })?;
        let actor = Actor::Node {
            id: lease.node_id.as_uuid(),
        };
        let tenant_id = live.tenant_id;
        let job_slot = batch.add(
            st,
            "render_job",
            job_id.as_uuid(),
            Some(tenant_id.as_uuid()),
            &events,
            actor,
        );
        *work |= self.apply_job_events(st, &events);
        Ok(job_slot)
    }

    /// A progress report: the start (if the task is only leased) and the
    /// frame with its output, as one write to the job's stream (`None`:
    /// nothing to record, e.g. a frame reported twice).
    pub(super) fn decide_progress(
        &self,
        st: &mut State,
        batch: &mut Batch,
        lease: LeaseRef,
        frame: Option<(u32, FileId)>,
    ) -> Result<Option<usize>, OrchestratorError> {
        let live = self.current_lease(st, lease)?;
        if let Some((frame, file_id)) = frame {
            Self::check_output(st, &live, lease, frame, file_id)?;
        }
        self.renew(st, lease);
        let at = st.now;
        let entry = st
            .jobs
            .get(&live.job_id)
            .ok_or(OrchestratorError::NotFound("job"))?;
        let leased = entry
            .job
            .task(lease.task_id)
            .is_some_and(|t| t.status == TaskStatus::Leased);
        let report = |frame: u32, output_file_id: FileId| RenderJobCommand::ReportFrame {
            lease,
            frame,
            output_file_id,
            at,
        };
        let start = RenderJobCommand::Start { lease, at };
        let events = match (leased, frame) {
            (false, None) => vec![],
            (true, None) => entry.job.decide(start)?,
            (false, Some((frame, file_id))) => entry.job.decide(report(frame, file_id))?,
            // Both at once (rare: agents start first): decide the frame on
            // the started job.
            (true, Some((frame, file_id))) => {
                let mut events = entry.job.decide(start)?;
                let started = events
                    .iter()
                    .fold(entry.job.clone(), |job, e| job.evolve(e));
                events.extend(started.decide(report(frame, file_id))?);
                events
            }
        };
        if events.is_empty() {
            return Ok(None);
        }
        let tenant = Some(live.tenant_id.as_uuid());
        let actor = Actor::Node {
            id: lease.node_id.as_uuid(),
        };
        let slot = batch.add(
            st,
            "render_job",
            live.job_id.as_uuid(),
            tenant,
            &events,
            actor,
        );
        self.apply_job_events(st, &events);
        Ok(Some(slot))
    }

    /// A rendered frame stored under a started lease: a new file stream.
    pub(super) fn decide_output(
        &self,
        st: &mut State,
        batch: &mut Batch,
        lease: LeaseRef,
        frame: u32,
        file: FileOutput,
    ) -> Result<(Option<usize>, FileId), OrchestratorError> {
        let (live, _) = self.uploadable(st, lease, frame)?;
        self.renew(st, lease);
        // A retried upload (its answer was lost): the same bytes for the
        // same frame of the same lease are the output already stored.
        if let Some(stored) = st
            .lease_outputs
            .get(&(lease.task_id, lease.lease_epoch, frame))
            .filter(|id| {
                st.files
                    .get(id)
                    .is_some_and(|(f, _)| f.sha256 == file.sha256.as_str())
            })
        {
            return Ok((None, *stored));
        }
        let file_id = FileId::new(Uuid::new_v4()).map_err(domain::DomainError::from)?;
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
            stored_at: st.now,
        }));
        let events = domain::File::default().decide(command)?;
        let tenant = Some(live.tenant_id.as_uuid());
        let actor = Actor::Node {
            id: lease.node_id.as_uuid(),
        };
        let slot = batch.add(st, "file", file_id.as_uuid(), tenant, &events, actor);
        for e in &events {
            st.apply_file(e, 1);
        }
        Ok((Some(slot), file_id))
    }

    /// Adds a charge for every due completion: this instance's once they
    /// are in the log, others' after [`CHARGE_ELSEWHERE_AFTER`]. Returns
    /// the charges added, with their tenant stream's slot.
    pub(super) fn decide_charges(
        &self,
        st: &mut State,
        batch: &mut Batch,
    ) -> Vec<(usize, TaskId, PendingCharge)> {
        let now = st.now;
        let due: Vec<(TaskId, PendingCharge)> = st
            .uncharged
            .iter()
            .filter(|(_, c)| c.mine || now - c.completed_at >= CHARGE_ELSEWHERE_AFTER)
            .map(|(t, c)| (*t, *c))
            .collect();
        let mut added = Vec::new();
        for (task_id, pending) in due {
            let Some((tenant, _)) = st.tenants.get(&pending.tenant_id) else {
                // The view has the job but not yet its tenant (a stream
                // reloaded ahead of the log): charged once the tenant is in.
                tracing::debug!(%task_id, tenant_id = %pending.tenant_id, "charge waits for its tenant");
                continue;
            };
            let node_class = st
                .nodes
                .get(&pending.node_id)
                .and_then(|n| n.0.capabilities())
                .map(|c| c.node_class.to_string())
                .unwrap_or_default();
            let price = self.inner.config.price_of(&node_class);
            let seconds = i64::try_from(pending.render_seconds).unwrap_or(i64::MAX);
            let amount = price.saturating_mul(seconds);
            let events = match AmountMinor::new(amount) {
                Ok(amount) if amount.get() > 0 => tenant.decide(TenantCommand::ChargeCredit {
                    job_id: pending.job_id,
                    task_id,
                    render_seconds: pending.render_seconds,
                    amount,
                    cap_at_balance: true,
                    at: now,
                }),
                _ => Ok(vec![]),
            };
            let events = match events {
                Ok(events) if !events.is_empty() => events,
                Ok(_) => {
                    // Already charged, or nothing to charge.
                    st.uncharged.remove(&task_id);
                    continue;
                }
                Err(e) => {
                    tracing::error!(%task_id, error = %e, "a completion could not be charged");
                    st.uncharged.remove(&task_id);
                    continue;
                }
            };
            let tenant_uuid = pending.tenant_id.as_uuid();
            let slot = batch.add(
                st,
                "tenant",
                tenant_uuid,
                Some(tenant_uuid),
                &events,
                system(),
            );
            Self::apply_tenant_events(st, pending.tenant_id, &events);
            added.push((slot, task_id, pending));
        }
        added
    }
}
