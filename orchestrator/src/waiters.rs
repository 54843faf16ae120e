//! Claims that wait for work (the node API's long poll). An idle claim
//! costs nothing while it waits: it is queued, and when work appears one
//! pass of the waker wakes, oldest first, the waiting claims whose node can
//! run a queued task (the pick the claim will make, asked of the view),
//! each promised one task so that no task wakes two claims. One new render
//! wakes as many claims as it has tasks, not every waiting agent; work no
//! waiting node can run wakes none; nothing is polled while the farm is
//! idle.
//!
//! A claim registers before it looks for work, so work that appears
//! between its empty claim and its wait still wakes it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::collections::HashMap;

use domain::{JobId, NodeId, TenantId};
use tokio::sync::{Notify, oneshot};

use crate::pick::pick_with;
use crate::{Assignment, Inner, Orchestrator, OrchestratorError};

/// The waiting claims of one instance.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    queue: Mutex<Queue>,
    /// Work may have appeared (coalesced: one pass serves many signals).
    pending: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Waiter>,
    /// Tasks promised to woken claims that have not answered yet, by job
    /// and by tenant: the next pass does not offer them again.
    jobs: HashMap<JobId, usize>,
    tenants: HashMap<TenantId, u32>,
}

#[derive(Debug)]
struct Waiter {
    node_id: NodeId,
    wake: oneshot::Sender<Promise>,
}

/// A task of `job` promised to a woken claim; dropped (the claim answered,
/// or went away) it is offered again.
#[derive(Debug)]
struct Promise {
    waiters: Arc<Waiters>,
    job: JobId,
    tenant: TenantId,
}

impl Drop for Promise {
    fn drop(&mut self) {
        let mut q = self.waiters.lock();
        if let Some(n) = q.jobs.get_mut(&self.job) {
            *n -= 1;
            if *n == 0 {
                q.jobs.remove(&self.job);
            }
        }
        if let Some(n) = q.tenants.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                q.tenants.remove(&self.tenant);
            }
        }
    }
}

impl Waiters {
    fn register(&self, node_id: NodeId) -> oneshot::Receiver<Promise> {
        let (wake, woken) = oneshot::channel();
        self.lock().waiting.push_back(Waiter { node_id, wake });
        woken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called whenever work may have become available.
    pub(crate) fn signal(&self) {
        self.pending.notify_one();
    }

    /// Claims waiting right now (for `/metrics` and tests).
    pub(crate) fn waiting(&self) -> usize {
        self.lock()
            .waiting
            .iter()
            .filter(|w| !w.wake.is_closed())
            .count()
    }
}

impl Orchestrator {
    /// A claim that waits up to `wait` for a task this node can run: the
    /// lease, or `None` when none came in time.
    pub async fn claim_waiting(
        &self,
        node_id: NodeId,
        wait: Duration,
    ) -> Result<Option<Assignment>, OrchestratorError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let woken = self.inner.waiters.register(node_id);
            if let Some(assignment) = self.claim(node_id).await? {
                return Ok(Some(assignment));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match tokio::time::timeout(deadline - now, woken).await {
                Ok(Ok(promise)) => {
                    // Woken for a task: the claim answers the promise.
                    let claimed = self.claim(node_id).await;
                    drop(promise);
                    if let Some(assignment) = claimed? {
                        return Ok(Some(assignment));
                    }
                }
                Ok(Err(_)) => {}
                Err(_) => return Ok(None),
            }
        }
    }

    /// Claims waiting for work on this instance.
    pub fn waiting_claims(&self) -> usize {
        self.inner.waiters.waiting()
    }
}

/// The waker: after each signal, wakes the waiting claims (oldest first)
/// whose node can run a queued task not yet promised to another woken
/// claim, one task each. Ends when the last [`Orchestrator`] handle is
/// dropped.
pub(crate) async fn waker(inner: Weak<Inner>, waiters: Arc<Waiters>) {
    loop {
        // Also wakes now and then to notice that the orchestrator is gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), waiters.pending.notified()).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        {
            let mut q = waiters.lock();
            q.waiting.retain(|w| !w.wake.is_closed());
            if q.waiting.is_empty() {
                continue;
            }
        }
        let st = inner.state.lock().await;
        if st.schedulable.is_empty() {
            continue;
        }
        let mut q = waiters.lock();
        let mut waiting = std::mem::take(&mut q.waiting);
        let mut kept = VecDeque::with_capacity(waiting.len());
        while let Some(w) = waiting.pop_front() {
            let taken = |job: JobId| {
                let queued = st.jobs.get(&job).map_or(0, |e| e.queue.len());
                q.jobs.get(&job).copied().unwrap_or(0) >= queued
            };
            let promised = |tenant: TenantId| q.tenants.get(&tenant).copied().unwrap_or(0);
            let Some((job, _)) = pick_with(&st, w.node_id, taken, promised) else {
                kept.push_back(w);
                continue;
            };
            let Some(tenant) = st.job_tenant(job) else {
                kept.push_back(w);
                continue;
            };
            *q.jobs.entry(job).or_default() += 1;
            *q.tenants.entry(tenant).or_default() += 1;
            let promise = Promise {
                waiters: waiters.clone(),
                job,
                tenant,
            };
            if let Err(promise) = w.wake.send(promise) {
                // The claim went away: the task is offered again (the
                // promise's drop takes the lock: release it first).
                drop(q);
                drop(promise);
                q = waiters.lock();
            }
        }
        // Claims registered during the pass go after those kept.
        kept.append(&mut q.waiting);
        q.waiting = kept;
    }
}
