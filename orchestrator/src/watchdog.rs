//! What the ticker enforces beyond leases: a render's task and stall
//! timeouts (a task past them is failed with its cause, then retried under
//! the retry rules; the node's lease is gone, so it is told to stop on its
//! next request and its late reports are refused by the fencing token),
//! and dependencies between renders (a waiting render is released when
//! every render it depends on completed, and fails when one of them failed
//! or was cancelled).
//!
//! The agent enforces the timeouts itself; the orchestrator acts
//! [`TIMEOUT_GRACE`] later, for a node that did not stop (or an agent that
//! does not know timeouts). A stall is judged only by an instance that may
//! have been told of the task's output: not when another instance heard
//! from the node within the stall window (the node talks to that one).

use chrono::{DateTime, Utc};
use domain::render_job::{FailureCause, JobStatus};
use domain::{Identifier, JobId, LeaseRef, Note, RenderJobCommand, TaskId};

use crate::state::LiveLease;
use crate::{Orchestrator, OrchestratorError, system};

/// How long after a timeout the orchestrator fails the task itself.
pub const TIMEOUT_GRACE: chrono::Duration = chrono::Duration::seconds(5);

/// A lease past one of its render's timeouts.
struct Overdue {
    task_id: TaskId,
    lease: LiveLease,
    cause: FailureCause,
    limit: u32,
}

/// What a waiting render's dependencies say.
enum Verdict {
    Release,
    Fail(JobId, Identifier),
}

impl Orchestrator {
    /// Fails the tasks past their timeouts and releases or fails waiting
    /// renders. Returns how many tasks and renders it changed.
    pub(crate) async fn watch_timeouts_and_dependencies(
        &self,
        now: DateTime<Utc>,
    ) -> Result<usize, OrchestratorError> {
        let (overdue, waiting) = {
            let st = self.inner.state.lock().await;
            let overdue: Vec<Overdue> = st
                .leases
                .iter()
                .filter_map(|(task_id, l)| {
                    let submission = st.jobs.get(&l.job_id)?.job.submission()?;
                    let started = l.started_at?;
                    if let Some(limit) = submission.task_timeout_seconds
                        && now - started >= seconds(limit) + TIMEOUT_GRACE
                    {
                        return Some(Overdue {
                            task_id: *task_id,
                            lease: *l,
                            cause: FailureCause::TimedOut,
                            limit,
                        });
                    }
                    let limit = submission.stall_timeout_seconds?;
                    let window = seconds(limit) + TIMEOUT_GRACE;
                    let heard_elsewhere = st
                        .heard_elsewhere_more_recently(l.node_id)
                        .is_some_and(|t| now - t < window && t > l.output_at);
                    (now - l.output_at >= window && !heard_elsewhere).then_some(Overdue {
                        task_id: *task_id,
                        lease: *l,
                        cause: FailureCause::Stalled,
                        limit,
                    })
                })
                .collect();
            let waiting: Vec<(JobId, Verdict)> = st
                .jobs
                .iter()
                .filter(|(_, j)| j.job.status() == JobStatus::Waiting)
                .filter_map(|(id, j)| {
                    let depends_on = &j.job.submission()?.depends_on;
                    let mut all_done = true;
                    for dependency in depends_on {
                        let status = st.job_status(*dependency);
                        let ended = match status {
                            Some(JobStatus::Completed) => continue,
                            Some(JobStatus::Failed) => "failed",
                            Some(JobStatus::Cancelled) => "cancelled",
                            _ => {
                                all_done = false;
                                continue;
                            }
                        };
                        return Identifier::parse(ended)
                            .ok()
                            .map(|ended| (*id, Verdict::Fail(*dependency, ended)));
                    }
                    all_done.then_some((*id, Verdict::Release))
                })
                .collect();
            (overdue, waiting)
        };
        let mut changed = 0;
        for o in overdue {
            changed += self.fail_overdue(o, now).await?;
        }
        for (job_id, verdict) in waiting {
            let result = self
                .job_command(job_id, system(), |at| match &verdict {
                    Verdict::Release => RenderJobCommand::ReleaseDependencies { at },
                    Verdict::Fail(dependency, status) => RenderJobCommand::FailDependency {
                        dependency_id: *dependency,
                        dependency_status: status.clone(),
                        at,
                    },
                })
                .await;
            match result {
                Ok(_) => {
                    changed += 1;
                    match verdict {
                        Verdict::Release => {
                            tracing::info!(%job_id, "dependencies completed; render released");
                        }
                        Verdict::Fail(dependency, status) => {
                            tracing::info!(%job_id, %dependency, status = status.as_str(), "a dependency did not complete; render failed");
                        }
                    }
                }
                // Released, failed or cancelled meanwhile (another instance).
                Err(OrchestratorError::Domain(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    async fn fail_overdue(
        &self,
        o: Overdue,
        now: DateTime<Utc>,
    ) -> Result<usize, OrchestratorError> {
        let lease = LeaseRef {
            task_id: o.task_id,
            node_id: o.lease.node_id,
            lease_epoch: o.lease.epoch,
        };
        let what = match o.cause {
            FailureCause::TimedOut => format!(
                "timed_out: ran longer than task_timeout_seconds ({} s); the node did not stop it",
                o.limit
            ),
            FailureCause::Stalled => format!(
                "stalled: no output and no progress for stall_timeout_seconds ({} s); the node did not stop it",
                o.limit
            ),
        };
        let error = Note::parse(what).map_err(domain::DomainError::from)?;
        let started = o.lease.started_at.unwrap_or(o.lease.assigned_at);
        let render_seconds = u64::try_from((now - started).num_seconds()).unwrap_or(0);
        match self
            .job_command(o.lease.job_id, system(), |at| RenderJobCommand::Fail {
                lease,
                error: error.clone(),
                cause: Some(o.cause),
                render_seconds,
                at,
            })
            .await
        {
            Ok(_) => {
                tracing::warn!(task_id = %o.task_id, node_id = %o.lease.node_id, cause = o.cause.as_str(), "task failed by the orchestrator's timeout");
                Ok(1)
            }
            // The node reported (or the lease ended) meanwhile.
            Err(OrchestratorError::Domain(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

fn seconds(n: u32) -> chrono::Duration {
    chrono::Duration::seconds(i64::from(n))
}
