//! Leases and liveness over time: the ticker charges what is due, shares
//! node liveness with the other instances beside the log, requeues expired
//! leases and marks silent nodes offline.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::node::OfflineReason;
use domain::render_job::RequeueReason;
use domain::{LeaseRef, NodeCommand, NodeId, RenderJobCommand, TaskId};
use uuid::Uuid;

use crate::state::LiveLease;
use crate::{Orchestrator, OrchestratorError, batch, system};

impl Orchestrator {
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

    /// Writes this instance's unshared contacts beside the log and reads
    /// everyone's. A failure is logged: judging then rests on what this
    /// instance knows, and the contacts are shared at the next tick.
    pub(crate) async fn share_liveness(&self) {
        let unshared: Vec<(Uuid, DateTime<Utc>)> = {
            let mut st = self.inner.state.lock().await;
            st.unshared
                .drain()
                .map(|(id, t)| (id.as_uuid(), t))
                .collect()
        };
        let instance = self.inner.instance;
        if let Err(e) = self.inner.store.record_liveness(instance, &unshared).await {
            tracing::warn!(error = %e, "sharing node liveness failed; retrying at the next tick");
            let mut st = self.inner.state.lock().await;
            for (id, t) in unshared {
                if let Ok(id) = NodeId::new(id) {
                    st.unshared.entry(id).or_insert(t);
                }
            }
            return;
        }
        match self.inner.store.liveness(instance).await {
            Ok(seen) => {
                // Another instance's clock may run fast. A time ahead of
                // this one's counts as the moment it was first read here,
                // and stays that while the row does not change: a dead
                // node whose last contact was written by a fast clock is
                // judged by its real silence, not kept alive until the
                // other clock's "now" has passed.
                let now = self.now();
                let mut st = self.inner.state.lock().await;
                let mut shared = std::collections::HashMap::with_capacity(seen.len());
                let mut raw = std::collections::HashMap::with_capacity(seen.len());
                for (id, t) in seen {
                    let Ok(id) = NodeId::new(id) else { continue };
                    let effective = if t <= now {
                        t
                    } else {
                        match st.shared_raw.get(&id) {
                            Some((before, first_read)) if *before == t => *first_read,
                            _ => now,
                        }
                    };
                    raw.insert(id, (t, effective));
                    shared.insert(id, effective);
                }
                st.shared_seen = shared;
                st.shared_raw = raw;
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
    /// heard from its node within a lease lifetime (that instance renews the
    /// lease from the node's heartbeats, and judges it), whatever this one
    /// heard itself: a node whose heartbeats go to one instance and claims
    /// to another keeps its lease on both.
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
        self.watch_timeouts_and_dependencies(now).await?;
        Ok(requeued)
    }

    pub(crate) async fn requeue(
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
                if matches!(reason, RequeueReason::LeaseExpired) {
                    self.count_lease_expired();
                }
                tracing::info!(%task_id, node_id = %l.node_id, ?reason, "lease ended; task requeued");
                Ok(1)
            }
            // Completed, released or requeued meanwhile.
            Err(OrchestratorError::Domain(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }
}
