//! Group commit of the hot path (claims and completions).
//!
//! A caller queues its operation and then takes the scheduler's lock; the
//! lock holder drains every queued operation, decides each one in the
//! domain against the view (applying its events to the view as it goes, so
//! the next operation sees them), and appends everything in one
//! `append_many` — one request per stream at the version the view held
//! before the batch. A stream whose append fails (another instance wrote to
//! it) is forgotten and reloaded from the store, and every operation that
//! touched it is answered [`OrchestratorError::Contention`] so that its
//! caller decides again on fresh state. No lease is ever granted without its
//! append succeeding at the exact version: the fencing holds across
//! instances.

use std::collections::HashMap;

use domain::render_job::RenderJobEvent;
use domain::{
    Aggregate, AmountMinor, DomainError, DomainEvent, JobId, LeaseRef, NodeId, RenderJobCommand,
    TenantCommand, TenantEvent, TenantId,
};
use eventstore::{Actor, AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::state::State;
use crate::{
    Assignment, Orchestrator, OrchestratorError, assignment, metadata, pick, render_seconds, system,
};

/// An operation waiting for the next batch.
#[derive(Debug)]
pub(crate) enum Op {
    Claim {
        node_id: NodeId,
        reply: oneshot::Sender<Result<Option<Assignment>, OrchestratorError>>,
    },
    Complete {
        lease: LeaseRef,
        reply: oneshot::Sender<Result<Option<Charge>, OrchestratorError>>,
    },
}

/// A charge the batch could not record (its tenant stream changed under
/// it): the completion stands, and the caller records the charge alone.
pub(crate) type Charge = (TenantId, TenantCommand);

/// The writes of one batch to one stream.
struct StreamWrite {
    stream_type: &'static str,
    stream_id: Uuid,
    tenant_id: Option<Uuid>,
    expected: u64,
    events: Vec<NewEvent>,
}

#[derive(Default)]
struct Batch {
    streams: Vec<StreamWrite>,
    index: HashMap<Uuid, usize>,
}

impl Batch {
    /// Adds events for a stream (expected version: the view's, taken the
    /// first time the batch touches the stream). Returns the stream's slot.
    fn add<E: DomainEvent>(
        &mut self,
        st: &State,
        stream_type: &'static str,
        stream_id: Uuid,
        tenant_id: Option<Uuid>,
        events: &[E],
        actor: Actor,
    ) -> usize {
        let slot = *self.index.entry(stream_id).or_insert_with(|| {
            self.streams.push(StreamWrite {
                stream_type,
                stream_id,
                tenant_id,
                expected: st.version_of(stream_type, stream_id),
                events: Vec::new(),
            });
            self.streams.len() - 1
        });
        let meta = metadata(actor);
        self.streams[slot].events.extend(
            events
                .iter()
                .map(|e| NewEvent::from_domain(Uuid::new_v4(), e, meta.clone())),
        );
        slot
    }
}

enum Reply {
    Claim(
        oneshot::Sender<Result<Option<Assignment>, OrchestratorError>>,
        Vec<usize>,
        Option<Assignment>,
    ),
    Complete(
        oneshot::Sender<Result<Option<Charge>, OrchestratorError>>,
        usize,
        Option<(usize, Charge)>,
    ),
}

impl Orchestrator {
    /// Hands `op` to the committer; its answer comes on the op's channel.
    pub(crate) fn submit_op(&self, op: Op) {
        // If the committer is gone the op (and its reply channel) is
        // dropped, which the caller sees as a closed channel.
        let _ = self.inner.ops.send(op);
    }

    fn apply_job_events(&self, st: &mut State, events: &[RenderJobEvent]) -> bool {
        let mut work = false;
        let now = st.now;
        for e in events {
            let Ok(job_id) = JobId::new(e.stream_id()) else {
                continue;
            };
            let v = st.jobs.get(&job_id).map_or(0, |j| j.version) + 1;
            work |= st.apply_job(e, v, now).work;
        }
        work
    }

    fn apply_tenant_events(st: &mut State, tenant_id: TenantId, events: &[TenantEvent]) {
        for e in events {
            let v = st.tenants.get(&tenant_id).map_or(0, |t| t.1) + 1;
            st.apply_tenant(e, v);
        }
    }

    async fn process(&self, st: &mut State, ops: Vec<Op>) {
        let now = self.now();
        st.now = now;
        let mut batch = Batch::default();
        let mut replies = Vec::with_capacity(ops.len());
        let mut work = false;
        for op in ops {
            match op {
                Op::Claim { node_id, reply } => {
                    match self.decide_claim(st, &mut batch, node_id, &mut work) {
                        Ok((slots, a)) => replies.push(Reply::Claim(reply, slots, a)),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Op::Complete { lease, reply } => {
                    match self.decide_complete(st, &mut batch, lease, &mut work) {
                        Ok((job_slot, charge)) => {
                            replies.push(Reply::Complete(reply, job_slot, charge));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        }
        if batch.streams.is_empty() {
            for r in replies {
                if let Reply::Claim(reply, _, a) = r {
                    let _ = reply.send(Ok(a));
                }
            }
            return;
        }
        let requests: Vec<AppendRequest> = batch
            .streams
            .iter_mut()
            .map(|s| AppendRequest {
                stream_id: s.stream_id,
                stream_type: s.stream_type.into(),
                tenant_id: s.tenant_id,
                expected: if s.expected == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(s.expected)
                },
                events: std::mem::take(&mut s.events),
            })
            .collect();
        let results = self.inner.store.append_many(requests).await;
        let mut failed: HashMap<usize, OrchestratorError> = HashMap::new();
        for (slot, result) in results.into_iter().enumerate() {
            if let Err(e) = result {
                let s = &batch.streams[slot];
                tracing::debug!(stream = %s.stream_id, error = %e, "batched append refused; reloading");
                st.forget(s.stream_type, s.stream_id);
                if let Err(reload) = self.reload(st, s.stream_type, s.stream_id).await {
                    tracing::error!(error = %reload, "reloading a stream failed");
                }
                let error = match e {
                    StoreError::WrongExpectedVersion { .. } => OrchestratorError::Contention,
                    other => OrchestratorError::Storage(other.to_string()),
                };
                failed.insert(slot, error);
            }
        }
        let outcome = |slots: &[usize]| -> Result<(), OrchestratorError> {
            match slots.iter().find_map(|s| failed.get(s)) {
                None => Ok(()),
                Some(OrchestratorError::Storage(m)) => Err(OrchestratorError::Storage(m.clone())),
                Some(_) => Err(OrchestratorError::Contention),
            }
        };
        for r in replies {
            match r {
                Reply::Claim(reply, slots, a) => {
                    let _ = reply.send(outcome(&slots).map(|()| a));
                }
                Reply::Complete(reply, job_slot, charge) => {
                    let result = outcome(&[job_slot]).map(|()| match charge {
                        Some((slot, charge)) if failed.contains_key(&slot) => Some(charge),
                        _ => None,
                    });
                    let _ = reply.send(result);
                }
            }
        }
        if work {
            self.signal_work();
        }
    }

    fn decide_claim(
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

    fn decide_complete(
        &self,
        st: &mut State,
        batch: &mut Batch,
        lease: LeaseRef,
        work: &mut bool,
    ) -> Result<(usize, Option<(usize, Charge)>), OrchestratorError> {
        let live = self.current_lease(st, lease)?;
        st.heard_from(lease.node_id, st.now);
        let node_class = st
            .nodes
            .get(&lease.node_id)
            .and_then(|n| n.0.capabilities())
            .map(|c| c.node_class.to_string())
            .unwrap_or_default();
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
        let mut charged = None;
        let price = self.inner.config.price_of(&node_class);
        let amount = price.saturating_mul(i64::try_from(seconds).unwrap_or(i64::MAX));
        if amount > 0
            && let Some((tenant, _)) = st.tenants.get(&tenant_id)
        {
            let charge = TenantCommand::ChargeCredit {
                job_id,
                task_id: lease.task_id,
                render_seconds: seconds,
                amount: AmountMinor::new(amount).map_err(DomainError::from)?,
                cap_at_balance: true,
                at: now,
            };
            let events = tenant.decide(charge.clone())?;
            let slot = batch.add(
                st,
                "tenant",
                tenant_id.as_uuid(),
                Some(tenant_id.as_uuid()),
                &events,
                system(),
            );
            Self::apply_tenant_events(st, tenant_id, &events);
            charged = Some((slot, (tenant_id, charge)));
            *work = true;
        }
        Ok((job_slot, charged))
    }
}

/// The most operations one group commit takes.
const MAX_BATCH: usize = 4096;

/// The committer: takes every operation waiting, processes them as one
/// batch under the scheduler's lock, and waits for the next. It ends when
/// the last [`Orchestrator`] handle is dropped.
pub(crate) async fn committer(
    inner: std::sync::Weak<crate::Inner>,
    mut ops: tokio::sync::mpsc::UnboundedReceiver<Op>,
) {
    while let Some(first) = ops.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let orch = Orchestrator { inner };
        let mut st = orch.inner.state.lock().await;
        orch.process(&mut st, batch).await;
    }
}
