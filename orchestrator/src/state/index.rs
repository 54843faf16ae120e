//! The index of schedulable jobs: for each tenant, its jobs that have a
//! queued task and accept assignments, in the order a claim prefers them
//! within one tenant (highest priority, then oldest, then job id). A claim
//! walks each tenant's first few entries instead of every job in the view,
//! so its cost follows the tenants and the jobs it must skip, not the
//! number of jobs (see `pick`).

use std::cmp::Reverse;
use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use domain::{JobId, TenantId};
use uuid::Uuid;

use super::State;

/// Where a job sits in its tenant's order.
pub(crate) type IndexKey = (Reverse<u8>, DateTime<Utc>, Uuid);

impl State {
    /// Puts the job where its queue, status and priority now place it (or
    /// takes it out of the index). Called after every change to a job.
    pub(crate) fn reindex(&mut self, job_id: JobId) {
        let wanted = self.jobs.get(&job_id).and_then(|entry| {
            let submission = entry.job.submission()?;
            (!entry.queue.is_empty() && entry.job.accepts_assignments()).then(|| {
                let priority = entry.job.priority().unwrap_or(submission.priority).get();
                (
                    submission.tenant_id,
                    (Reverse(priority), entry.submitted_at, job_id.as_uuid()),
                )
            })
        });
        let current = self.jobs.get(&job_id).and_then(|e| e.indexed);
        if current == wanted {
            return;
        }
        self.unindex(job_id);
        if let Some((tenant_id, key)) = wanted {
            self.schedulable.entry(tenant_id).or_default().insert(key);
            if let Some(entry) = self.jobs.get_mut(&job_id) {
                entry.indexed = Some((tenant_id, key));
            }
        }
    }

    /// Takes the job out of the index.
    pub(crate) fn unindex(&mut self, job_id: JobId) {
        let Some((tenant_id, key)) = self.jobs.get_mut(&job_id).and_then(|e| e.indexed.take())
        else {
            return;
        };
        if let Some(set) = self.schedulable.get_mut(&tenant_id) {
            set.remove(&key);
            if set.is_empty() {
                self.schedulable.remove(&tenant_id);
            }
        }
    }

    /// The tenant's schedulable jobs in the order a claim prefers them.
    pub(crate) fn schedulable_of(
        &self,
        tenant_id: TenantId,
    ) -> impl Iterator<Item = (u8, JobId)> + '_ {
        self.schedulable
            .get(&tenant_id)
            .into_iter()
            .flat_map(BTreeSet::iter)
            .filter_map(|(Reverse(priority), _, id)| {
                JobId::new(*id).ok().map(|job_id| (*priority, job_id))
            })
    }
}
