//! Group commit of the hot path (claims and completions).
//!
//! A caller queues its operation for the committer task, which drains
//! every queued operation under the scheduler's lock, decides each one in
//! the domain against the view (applying its events to the view as it
//! goes, so the next operation sees them), and appends everything in one
//! `append_many` — one request per stream at the version the view held
//! before the batch. A stream whose append fails (another instance wrote to
//! it) is forgotten and reloaded from the store, and every operation that
//! touched it is answered [`OrchestratorError::Contention`] so that its
//! caller decides again on fresh state. No lease is ever granted without its
//! append succeeding at the exact version: the fencing holds across
//! instances.
//!
//! Pipelined: while batch n is appended, the operations that arrive are
//! decided as batch n+1 on the view holding n's tentative events, and
//! answered only once n's outcome is known. n+1 is appended only if every
//! stream of n was; otherwise it is discarded — its streams reloaded, its
//! operations answered `Contention` — because its expected versions count
//! n's events, and another instance's events may now hold those versions
//! (see [`committer`]).
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
use eventstore::{Actor, NewEvent};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::state::{PendingCharge, State};
use crate::{Assignment, FileOutput, Orchestrator, OrchestratorError, metadata_traced};

mod decide;
mod pipeline;

pub use pipeline::AppendHold;
pub(crate) use pipeline::{HoldGate, committer};

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

/// How an operation is answered once its batch's appends are known.
struct Reply {
    /// The batch's streams the answer depends on (any refused: the
    /// operation is answered [`OrchestratorError::Contention`]).
    slots: Vec<usize>,
    answer: Answer,
}

/// An operation's reply channel and what the view decided for it.
enum Answer {
    Claim(
        oneshot::Sender<Result<Option<Assignment>, OrchestratorError>>,
        Result<Option<Assignment>, OrchestratorError>,
    ),
    Complete(
        oneshot::Sender<Result<(), OrchestratorError>>,
        Result<TaskId, OrchestratorError>,
    ),
    Charge(Option<oneshot::Sender<Result<(), OrchestratorError>>>),
    Progress(
        oneshot::Sender<Result<(), OrchestratorError>>,
        Result<(), OrchestratorError>,
    ),
    Output(
        oneshot::Sender<Result<FileId, OrchestratorError>>,
        Result<FileId, OrchestratorError>,
    ),
}

/// An operation decided on slots `Ok((slots, value))`, or refused.
fn reply<T>(
    decided: Result<(Vec<usize>, T), OrchestratorError>,
    answer: impl FnOnce(Result<T, OrchestratorError>) -> Answer,
) -> Reply {
    match decided {
        Ok((slots, value)) => Reply {
            slots,
            answer: answer(Ok(value)),
        },
        Err(e) => Reply {
            slots: Vec::new(),
            answer: answer(Err(e)),
        },
    }
}

/// A batch decided against the view (its events applied to the view),
/// not yet known to be in the store.
pub(crate) struct Decided {
    batch: Batch,
    replies: Vec<Reply>,
    charges: Vec<(usize, TaskId, PendingCharge)>,
    work: bool,
}

/// Per stream of a batch, in order: `None` if the store took its
/// events, else why not.
type Outcomes = Vec<Option<OrchestratorError>>;

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

    /// Decides every operation against the view, applying their events to
    /// it as it goes; nothing is answered yet (see [`Self::settle`]).
    pub(super) fn decide_batch(&self, st: &mut State, ops: Vec<(Op, Option<String>)>) -> Decided {
        st.now = self.now();
        let mut batch = Batch::default();
        let mut replies = Vec::with_capacity(ops.len());
        let mut work = false;
        for (op, trace) in ops {
            batch.trace = trace;
            replies.push(match op {
                Op::Claim { node_id, reply: tx } => {
                    reply(self.decide_claim(st, &mut batch, node_id, &mut work), |r| {
                        Answer::Claim(tx, r)
                    })
                }
                Op::Complete { lease, reply: tx } => reply(
                    self.decide_complete(st, &mut batch, lease, &mut work)
                        .map(|slot| (vec![slot], lease.task_id)),
                    |r| Answer::Complete(tx, r),
                ),
                Op::Charge { reply } => Reply {
                    // Filled in once the batch's charges are decided.
                    slots: Vec::new(),
                    answer: Answer::Charge(reply),
                },
                Op::Progress {
                    lease,
                    frame,
                    reply: tx,
                } => reply(
                    self.decide_progress(st, &mut batch, lease, frame)
                        .map(|slot| (slot.into_iter().collect(), ())),
                    |r| Answer::Progress(tx, r),
                ),
                Op::Output {
                    lease,
                    frame,
                    file,
                    reply: tx,
                } => reply(
                    self.decide_output(st, &mut batch, lease, frame, *file)
                        .map(|(slot, file_id)| (slot.into_iter().collect(), file_id)),
                    |r| Answer::Output(tx, r),
                ),
            });
        }
        batch.trace = None;
        let charges = self.decide_charges(st, &mut batch);
        work |= !charges.is_empty();
        let charge_slots: Vec<usize> = charges.iter().map(|(slot, _, _)| *slot).collect();
        for r in &mut replies {
            if matches!(r.answer, Answer::Charge(_)) {
                r.slots.clone_from(&charge_slots);
            }
        }
        Decided {
            batch,
            replies,
            charges,
            work,
        }
    }

    /// Forgets a stream the store refused (or that a refused batch built
    /// on) and reads it again; completions of this instance already in
    /// the log stay this instance's to charge.
    async fn refresh(&self, st: &mut State, stream_type: &'static str, stream_id: Uuid) {
        let mine: Vec<TaskId> = st
            .uncharged
            .iter()
            .filter(|(_, c)| c.mine && c.job_id.as_uuid() == stream_id)
            .map(|(t, _)| *t)
            .collect();
        st.forget(stream_type, stream_id);
        if let Err(reload) = self.reload(st, stream_type, stream_id).await {
            // Retried by the next catch-up or batch.
            tracing::error!(error = %reload, "reloading a stream failed");
            st.dropped.insert((stream_type.to_owned(), stream_id));
        }
        for task_id in mine {
            if let Some(pending) = st.uncharged.get_mut(&task_id) {
                pending.mine = true;
            }
        }
    }

    /// Takes a batch's append results into the view and answers its
    /// operations. A refused stream is forgotten and reloaded, and every
    /// operation that touched it is answered `Contention` so that its
    /// caller decides again on fresh state. A `discarded` batch (decided
    /// on the events of a batch the store then refused) is treated as
    /// refused in every stream. Returns whether every stream was appended.
    pub(super) async fn settle(
        &self,
        st: &mut State,
        decided: Decided,
        outcomes: Outcomes,
        discarded: bool,
    ) -> bool {
        let Decided {
            batch,
            replies,
            charges,
            work,
        } = decided;
        let mut failed: HashMap<usize, OrchestratorError> = HashMap::new();
        if discarded {
            failed
                .extend((0..batch.streams.len()).map(|slot| (slot, OrchestratorError::Contention)));
        }
        for (slot, outcome) in outcomes.into_iter().enumerate() {
            if let Some(e) = outcome {
                tracing::debug!(stream = %batch.streams[slot].stream_id, error = %e, "batched append refused; reloading");
                failed.insert(slot, e);
            }
        }
        for slot in failed.keys() {
            let s = &batch.streams[*slot];
            self.refresh(st, s.stream_type, s.stream_id).await;
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
        let outcome = |slots: &[usize]| -> Result<(), OrchestratorError> {
            if discarded {
                return Err(OrchestratorError::Contention);
            }
            match slots.iter().find_map(|s| failed.get(s)) {
                None => Ok(()),
                Some(OrchestratorError::Storage(m)) => Err(OrchestratorError::Storage(m.clone())),
                Some(_) => Err(OrchestratorError::Contention),
            }
        };
        for Reply { slots, answer } in replies {
            let outcome = outcome(&slots);
            match answer {
                Answer::Claim(tx, decided) => {
                    let _ = tx.send(outcome.and(decided));
                }
                Answer::Complete(tx, decided) => {
                    let result = outcome.and(decided);
                    if let Ok(task_id) = result
                        && let Some(pending) = st.uncharged.get_mut(&task_id)
                    {
                        // In the log now: this instance charges it next.
                        pending.mine = true;
                    }
                    let _ = tx.send(result.map(|_| ()));
                }
                Answer::Charge(Some(tx)) => {
                    let _ = tx.send(outcome);
                }
                Answer::Charge(None) => {}
                Answer::Progress(tx, decided) => {
                    let _ = tx.send(outcome.and(decided));
                }
                Answer::Output(tx, decided) => {
                    let _ = tx.send(outcome.and(decided));
                }
            }
        }
        if work {
            self.signal_work();
        }
        failed.is_empty()
    }
}
