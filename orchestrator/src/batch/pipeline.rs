//! Pipelined group commit: the committer task, the append of a decided
//! batch as a task of its own, and the hold tests put on an append.

use eventstore::{AppendRequest, EventStore, ExpectedVersion, StoreError};
use tokio::sync::oneshot;

use super::{Decided, Op, Outcomes};
use crate::state::State;
use crate::{Orchestrator, OrchestratorError};

/// A decided batch and its append, running as a task of its own so that
/// the next batch can be decided meanwhile (`None`: nothing to append).
pub(crate) struct InFlight {
    decided: Decided,
    append: Option<tokio::task::JoinHandle<Outcomes>>,
    started: std::time::Instant,
}

/// A hold on an instance's next batched append: the append waits, once
/// `entered` has fired, until `release` is sent or dropped. For tests that
/// need a batch in flight at a chosen moment (see `pipeline` in the
/// scheduler's tests); nothing else sets one.
#[doc(hidden)]
#[derive(Debug)]
pub struct AppendHold {
    /// Fires when the held append is about to run.
    pub entered: oneshot::Receiver<()>,
    /// Lets the append run.
    pub release: oneshot::Sender<()>,
}

/// The ends of an [`AppendHold`] that the append waits on.
pub(crate) type HoldGate = (oneshot::Sender<()>, oneshot::Receiver<()>);

impl Orchestrator {
    /// Holds this instance's next batched append (see [`AppendHold`]).
    #[doc(hidden)]
    pub fn hold_next_append(&self) -> AppendHold {
        let (entered_tx, entered) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        *self
            .inner
            .append_hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((entered_tx, release_rx));
        AppendHold { entered, release }
    }

    /// Starts appending a decided batch: one request per stream at the
    /// version the view held before the batch.
    fn start_append(&self, mut decided: Decided) -> InFlight {
        if decided.batch.streams.is_empty() {
            return InFlight {
                decided,
                append: None,
                started: std::time::Instant::now(),
            };
        }
        let requests: Vec<AppendRequest> = decided
            .batch
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
        let store = self.inner.store.clone();
        let hold = self
            .inner
            .append_hold
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let orch = self.clone();
        let append = tokio::spawn(async move {
            if let Some((entered, release)) = hold {
                let _ = entered.send(());
                let _ = release.await;
            }
            let started = std::time::Instant::now();
            let results = store.append_many(requests).await;
            orch.count_append(started.elapsed());
            results
                .into_iter()
                .map(|result| match result {
                    Ok(_) => None,
                    Err(StoreError::WrongExpectedVersion { .. }) => {
                        Some(OrchestratorError::Contention)
                    }
                    Err(other) => Some(OrchestratorError::Storage(other.to_string())),
                })
                .collect()
        });
        InFlight {
            decided,
            append: Some(append),
            started: std::time::Instant::now(),
        }
    }

    /// Waits for a batch's append; meanwhile, if `decide_from` is given
    /// and operations have arrived by then, decides them as the next batch
    /// (on the view that holds this batch's events; it is appended only if
    /// this batch is). Until `decide_from` the next batch only gathers: it
    /// is decided while the append ends, not the moment its first operation
    /// arrives, so that batches stay about as large as unpipelined ones
    /// (smaller batches mean more appends, and the store is the bottleneck).
    async fn wait_deciding_next(
        &self,
        st: &mut State,
        streams: usize,
        append: Option<tokio::task::JoinHandle<Outcomes>>,
        ops: &mut Queue,
        decide_from: Option<std::time::Instant>,
    ) -> (Outcomes, Option<Decided>) {
        let Some(mut append) = append else {
            return (Vec::new(), None);
        };
        let mut next = None;
        if let Some(from) = decide_from {
            tokio::select! {
                biased;
                appended = &mut append => return (joined(appended, streams), None),
                () = tokio::time::sleep_until(from.into()) => {}
            }
            tokio::select! {
                biased;
                appended = &mut append => return (joined(appended, streams), None),
                Some(first) = ops.recv() => {
                    next = Some(self.decide_batch(st, gather(first, ops)));
                    self.count_pipelined();
                }
            }
        }
        (joined(append.await, streams), next)
    }
}

/// An append task's results (a task that panicked refused nothing it
/// could vouch for: every stream is a storage error).
fn joined(appended: Result<Outcomes, tokio::task::JoinError>, streams: usize) -> Outcomes {
    appended.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a batched append task failed");
        (0..streams)
            .map(|_| Some(OrchestratorError::Storage("the append task failed".into())))
            .collect()
    })
}

/// The most operations one group commit takes.
const MAX_BATCH: usize = 4096;

/// The most batches decided in a row while the one before is appended:
/// then the pipe drains, the view retires what settled, and what waits
/// for the scheduler's lock (commands, catch-up, the waker) has it.
const MAX_PIPELINED: usize = 8;

type Queue = tokio::sync::mpsc::UnboundedReceiver<(Op, Option<String>)>;

/// `first` and every operation waiting after it, up to [`MAX_BATCH`].
fn gather(first: (Op, Option<String>), ops: &mut Queue) -> Vec<(Op, Option<String>)> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match ops.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
    batch
}

/// The committer: takes every operation waiting, decides them as one
/// batch under the scheduler's lock and appends them; while a batch is
/// appended, decides the next one (pipelined group commit, unless
/// [`crate::Config::pipeline`] is off). Batch n+1 is decided on a view
/// holding batch n's tentative events, so it is appended only once batch
/// n is stored in full: if the store refused any of n's streams, n+1 is
/// discarded (its streams reloaded, its operations answered `Contention`
/// and decided again). Appending n+1 anyway would put its writes at
/// versions that another instance's events may now hold, and lease a task
/// that instance leased. The lock is held while anything is in flight, so
/// nothing else decides on tentative events. It ends when the last
/// [`Orchestrator`] handle is dropped.
pub(crate) async fn committer(inner: std::sync::Weak<crate::Inner>, mut ops: Queue) {
    // How long an append takes (a moving average): the next batch is
    // decided once three quarters of it have passed.
    let mut expected = std::time::Duration::from_millis(1);
    while let Some(first) = ops.recv().await {
        let queued = gather(first, &mut ops);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let orch = Orchestrator { inner };
        let mut st = orch.inner.state.lock().await;
        if !st.dropped.is_empty() {
            orch.reload_dropped(&mut st).await;
        }
        let decided = orch.decide_batch(&mut st, queued);
        let mut flight = Some(orch.start_append(decided));
        let mut depth = 0;
        while let Some(InFlight {
            decided,
            append,
            started,
        }) = flight.take()
        {
            let pipeline =
                orch.inner.config.pipeline && depth < MAX_PIPELINED && st.dropped.is_empty();
            let streams = decided.batch.streams.len();
            let decide_from = pipeline.then(|| started + expected * 3 / 4);
            let (outcomes, next) = orch
                .wait_deciding_next(&mut st, streams, append, &mut ops, decide_from)
                .await;
            if streams > 0 {
                expected = (expected * 7 + started.elapsed()) / 8;
            }
            let stored = orch.settle(&mut st, decided, outcomes, false).await;
            if let Some(next) = next {
                if stored {
                    depth += 1;
                    flight = Some(orch.start_append(next));
                } else {
                    orch.count_discarded();
                    orch.settle(&mut st, next, Vec::new(), true).await;
                }
            }
        }
        st.retire_settled();
    }
}
