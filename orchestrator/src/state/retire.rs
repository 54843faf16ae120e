//! Jobs leave the view when they are done: a completed or cancelled job,
//! or a failed one with no lease left, keeps only what later decisions ask
//! of it (its status for the renders that depend on it, its tenant, the
//! version of its stream); its tasks, queue and frame outputs go. What
//! readers need about finished renders is in the read models, and a
//! command on a retired job (retrying a failed render, cancelling it)
//! first reads its stream back into the view.
//!
//! Retirement is deferred: applying an event only marks the job as
//! settling, and [`State::retire_settled`] runs once the events of a
//! catch-up batch, a reload or a commit are all applied, so a job is never
//! retired in the middle of a stream it is still being read from.

use domain::render_job::JobStatus;
use domain::{FileId, JobId, TenantId};

use super::State;

/// What the view keeps of a finished job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retired {
    /// The stream's version when it left the view.
    pub version: u64,
    pub status: JobStatus,
    pub tenant_id: TenantId,
}

impl State {
    /// Marks the job for [`State::retire_settled`] if it reached a final
    /// state.
    pub(crate) fn settle(&mut self, job_id: JobId) {
        if self.jobs.get(&job_id).is_some_and(|e| {
            matches!(
                e.job.status(),
                JobStatus::Completed | JobStatus::Cancelled | JobStatus::Failed
            )
        }) {
            self.settling.insert(job_id);
        }
    }

    /// Retires every settling job that is still final and holds no lease.
    /// Returns how many left the view.
    pub(crate) fn retire_settled(&mut self) -> usize {
        if self.settling.is_empty() {
            return 0;
        }
        let settling: Vec<JobId> = self.settling.drain().collect();
        let leased: std::collections::HashSet<JobId> =
            self.leases.values().map(|l| l.job_id).collect();
        let mut retired = 0;
        for job_id in settling {
            let Some(entry) = self.jobs.get(&job_id) else {
                continue;
            };
            let status = entry.job.status();
            let done = match status {
                JobStatus::Completed | JobStatus::Cancelled => true,
                JobStatus::Failed => !leased.contains(&job_id),
                _ => false,
            };
            let Some(tenant_id) = entry.job.submission().map(|s| s.tenant_id) else {
                continue;
            };
            if !done {
                continue;
            }
            self.unindex(job_id);
            let Some(entry) = self.jobs.remove(&job_id) else {
                continue;
            };
            // Its frames' files, found by the leases that stored them.
            for task in entry.job.tasks() {
                for epoch in 1..=task.last_epoch {
                    for frame in task.frames.start()..=task.frames.end() {
                        if let Some(file_id) = self.lease_outputs.get(&(task.id, epoch, frame)) {
                            let file_id = *file_id;
                            self.forget_output(file_id);
                        }
                    }
                }
            }
            self.retired.insert(
                job_id,
                Retired {
                    version: entry.version,
                    status,
                    tenant_id,
                },
            );
            retired += 1;
        }
        retired
    }

    /// Drops a rendered frame's file from the view.
    pub(crate) fn forget_output(&mut self, file_id: FileId) {
        if let Some((file, _)) = self.files.remove(&file_id)
            && let Some(o) = file.output
            && let Some(epoch) = o.lease_epoch
            && self.lease_outputs.get(&(o.task_id, epoch, o.frame)) == Some(&file_id)
        {
            self.lease_outputs.remove(&(o.task_id, epoch, o.frame));
        }
    }

    /// The status of a job, in the view or retired.
    pub(crate) fn job_status(&self, job_id: JobId) -> Option<JobStatus> {
        self.jobs
            .get(&job_id)
            .map(|j| j.job.status())
            .or_else(|| self.retired.get(&job_id).map(|r| r.status))
    }

    /// The tenant of a job, in the view or retired.
    pub(crate) fn job_tenant(&self, job_id: JobId) -> Option<TenantId> {
        self.jobs
            .get(&job_id)
            .and_then(|j| j.job.submission().map(|s| s.tenant_id))
            .or_else(|| self.retired.get(&job_id).map(|r| r.tenant_id))
    }
}
