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
//!
//! Charges ride in the batch after their completion's: a completion is
//! charged only once the store took it (so a refused completion is never
//! charged, and its retry is charged once), by the instance that appended
//! it — or, if that instance died before charging, by any instance after
//! [`CHARGE_ELSEWHERE_AFTER`]. The tenant refuses a second charge of a
//! task, so two instances racing to charge it record one charge.

use std::collections::HashMap;

use domain::render_job::RenderJobEvent;
use domain::{DomainEvent, FileId, JobId, LeaseRef, NodeId, TaskId, TenantEvent, TenantId};
use eventstore::{Actor, AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::state::State;
use crate::{Assignment, FileOutput, Orchestrator, OrchestratorError, metadata_traced};

mod decide;

/// An operation waiting for the next batch.
#[derive(Debug)]
pub(crate) enum Op {
    Claim {
        node_id: NodeId,
        reply: oneshot::Sender<Result<Option<Assignment>, OrchestratorError>>,
    },
    Complete {
        lease: LeaseRef,
        reply: oneshot::Sender<Result<(), OrchestratorError>>,
    },
    /// Charge every completion that is due (answers when the batch's
    /// charges are stored, or `Contention` if a tenant stream changed).
    Charge {
        reply: Option<oneshot::Sender<Result<(), OrchestratorError>>>,
    },
    /// The node goes on (starting the task if it is only leased) and, with
    /// a frame, finished that frame with this output (already checked to
    /// be known to the view; checked again here against the lease).
    Progress {
        lease: LeaseRef,
        frame: Option<(u32, FileId)>,
        reply: oneshot::Sender<Result<(), OrchestratorError>>,
    },
    /// A rendered frame's bytes are stored: record them as an output of
    /// this lease (`file.output_stored.v1`), answering its file id.
    Output {
        lease: LeaseRef,
        frame: u32,
        file: Box<FileOutput>,
        reply: oneshot::Sender<Result<FileId, OrchestratorError>>,
    },
}

/// How long a completion appended by another instance may stay uncharged
/// before this one charges it (that instance died before charging).
pub(crate) const CHARGE_ELSEWHERE_AFTER: chrono::Duration = chrono::Duration::seconds(10);

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
    /// The trace id of the operation being decided (its request's).
    trace: Option<String>,
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
        let meta = metadata_traced(actor, self.trace.clone());
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
        oneshot::Sender<Result<(), OrchestratorError>>,
        usize,
        TaskId,
    ),
    Charge(Option<oneshot::Sender<Result<(), OrchestratorError>>>),
    Progress(
        oneshot::Sender<Result<(), OrchestratorError>>,
        Option<usize>,
    ),
    Output(
        oneshot::Sender<Result<FileId, OrchestratorError>>,
        Option<usize>,
        FileId,
    ),
}

impl Orchestrator {
    /// Hands `op` to the committer; its answer comes on the op's channel.
    pub(crate) fn submit_op(&self, op: Op) {
        // If the committer is gone the op (and its reply channel) is
        // dropped, which the caller sees as a closed channel.
        let _ = self.inner.ops.send((op, crate::trace::current()));
    }

    fn apply_job_events(&self, st: &mut State, events: &[RenderJobEvent]) -> bool {
        let mut work = false;
        let now = st.now;
        for e in events {
            let Ok(job_id) = JobId::new(e.stream_id()) else {
                continue;
            };
            let v = st.jobs.get(&job_id).map_or(0, |j| j.version) + 1;
            work |= st.apply_job(e, v, now).wakes();
        }
        work
    }

    fn apply_tenant_events(st: &mut State, tenant_id: TenantId, events: &[TenantEvent]) {
        for e in events {
            let v = st.tenants.get(&tenant_id).map_or(0, |t| t.1) + 1;
            st.apply_tenant(e, v);
        }
    }

    async fn process(&self, st: &mut State, ops: Vec<(Op, Option<String>)>) {
        if !st.dropped.is_empty() {
            self.reload_dropped(st).await;
        }
        let now = self.now();
        st.now = now;
        let mut batch = Batch::default();
        let mut replies = Vec::with_capacity(ops.len());
        let mut work = false;
        for (op, trace) in ops {
            batch.trace = trace;
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
                        Ok(job_slot) => {
                            replies.push(Reply::Complete(reply, job_slot, lease.task_id));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Op::Charge { reply } => replies.push(Reply::Charge(reply)),
                Op::Progress {
                    lease,
                    frame,
                    reply,
                } => match self.decide_progress(st, &mut batch, lease, frame) {
                    Ok(slot) => replies.push(Reply::Progress(reply, slot)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Op::Output {
                    lease,
                    frame,
                    file,
                    reply,
                } => match self.decide_output(st, &mut batch, lease, frame, *file) {
                    Ok((slot, file_id)) => replies.push(Reply::Output(reply, slot, file_id)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
            }
        }
        batch.trace = None;
        let charges = self.decide_charges(st, &mut batch);
        if !charges.is_empty() {
            work = true;
        }
        if batch.streams.is_empty() {
            for r in replies {
                match r {
                    Reply::Claim(reply, _, a) => {
                        let _ = reply.send(Ok(a));
                    }
                    Reply::Charge(Some(reply)) => {
                        let _ = reply.send(Ok(()));
                    }
                    Reply::Progress(reply, None) => {
                        let _ = reply.send(Ok(()));
                    }
                    Reply::Output(reply, None, file_id) => {
                        let _ = reply.send(Ok(file_id));
                    }
                    _ => {}
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
        let started = std::time::Instant::now();
        let results = self.inner.store.append_many(requests).await;
        self.count_append(started.elapsed());
        let mut failed: HashMap<usize, OrchestratorError> = HashMap::new();
        for (slot, result) in results.into_iter().enumerate() {
            if let Err(e) = result {
                let s = &batch.streams[slot];
                tracing::debug!(stream = %s.stream_id, error = %e, "batched append refused; reloading");
                st.forget(s.stream_type, s.stream_id);
                if let Err(reload) = self.reload(st, s.stream_type, s.stream_id).await {
                    // Retried by the next catch-up or batch.
                    tracing::error!(error = %reload, "reloading a stream failed");
                    st.dropped.insert((s.stream_type.to_owned(), s.stream_id));
                }
                let error = match e {
                    StoreError::WrongExpectedVersion { .. } => OrchestratorError::Contention,
                    other => OrchestratorError::Storage(other.to_string()),
                };
                failed.insert(slot, error);
            }
        }
        // A refused charge is charged again by a later batch, unless the
        // reloaded tenant shows it was charged meanwhile (another instance).
        for (slot, task_id, pending) in &charges {
            if failed.contains_key(slot)
                && !st
                    .tenants
                    .get(&pending.tenant_id)
                    .is_some_and(|t| t.0.is_charged(*task_id))
            {
                st.uncharged.insert(*task_id, *pending);
            }
        }
        let charge_slots: Vec<usize> = charges.iter().map(|(slot, _, _)| *slot).collect();
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
                Reply::Complete(reply, job_slot, task_id) => {
                    let result = outcome(&[job_slot]);
                    if result.is_ok()
                        && let Some(pending) = st.uncharged.get_mut(&task_id)
                    {
                        // In the log now: this instance charges it next.
                        pending.mine = true;
                    }
                    let _ = reply.send(result);
                }
                Reply::Charge(Some(reply)) => {
                    let _ = reply.send(outcome(&charge_slots));
                }
                Reply::Charge(None) => {}
                Reply::Progress(reply, slot) => {
                    let _ = reply.send(outcome(slot.as_slice()));
                }
                Reply::Output(reply, slot, file_id) => {
                    let _ = reply.send(outcome(slot.as_slice()).map(|()| file_id));
                }
            }
        }
        if work {
            self.signal_work();
        }
    }
}

/// The most operations one group commit takes.
const MAX_BATCH: usize = 4096;

/// The committer: takes every operation waiting, processes them as one
/// batch under the scheduler's lock, and waits for the next. It ends when
/// the last [`Orchestrator`] handle is dropped.
pub(crate) async fn committer(
    inner: std::sync::Weak<crate::Inner>,
    mut ops: tokio::sync::mpsc::UnboundedReceiver<(Op, Option<String>)>,
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
        st.retire_settled();
    }
}
