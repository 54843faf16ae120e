//! Choosing the task for a claim: matching requirements to capabilities,
//! then priority, fair share and age; and the assignment sent to the node.

use chrono::{DateTime, Utc};
use domain::node::Capabilities;
use domain::{JobId, NodeId, TaskId, TenantId};
use uuid::Uuid;

use crate::state::State;
use crate::{Assignment, OrchestratorError, WireFrames, WireParams, WireScene};

pub(crate) fn meets(caps: &Capabilities, job: &domain::render_job::JobSubmitted) -> bool {
    let req = &job.requirements;
    caps.renderers.iter().any(|r| r.name == job.renderer)
        && (!req.gpu || !caps.gpus.is_empty())
        && req.min_memory_bytes.is_none_or(|m| caps.memory_bytes >= m)
        && req.min_cores.is_none_or(|c| caps.cores >= c)
        && req.tags.iter().all(|t| caps.tags.contains(t))
}

/// Whether some registered, enabled node meets the job's requirements and
/// is not blocklisted for it.
pub(crate) fn any_capable_node(st: &State, job_id: JobId) -> bool {
    let Some(job) = st.jobs.get(&job_id).and_then(|j| j.job.submission()) else {
        return false;
    };
    st.nodes.values().any(|(node, _)| {
        node.registration().is_some()
            && !node.is_deregistered()
            && node.availability() != domain::node::Availability::Disabled
            && !node.is_blocklisted(job_id)
            && node.capabilities().is_some_and(|c| meets(c, job))
    })
}

/// The best queued task for a node: among the jobs whose requirements it
/// meets and whose tenant may lease, the highest priority, then the tenant
/// furthest below its fair share (running tasks ÷ weight), then the oldest
/// job; within a job, the lowest frames first.
///
/// Only schedulable jobs are looked at, through the index that keeps each
/// tenant's in the order above (within one tenant the share is the same for
/// every job): each tenant's first job the node can run is its candidate,
/// and the best candidate wins. Jobs with nothing queued, paused, waiting or
/// finished cost nothing here.
pub(crate) fn pick(st: &State, node_id: NodeId) -> Option<(JobId, TaskId)> {
    pick_with(st, node_id, |_| false, |_| 0)
}

/// [`pick`] as if the jobs `taken` says had nothing queued and each tenant
/// had `promised` more tasks running (for waking waiting claims: tasks
/// already promised to claims woken before are not offered again).
pub(crate) fn pick_with(
    st: &State,
    node_id: NodeId,
    taken: impl Fn(JobId) -> bool,
    promised: impl Fn(TenantId) -> u32,
) -> Option<(JobId, TaskId)> {
    let (node, _) = st.nodes.get(&node_id)?;
    let caps = node.capabilities()?;
    let mut best: Option<(Key, JobId, TaskId)> = None;
    for &tenant_id in st.schedulable.keys() {
        let Some((tenant, _)) = st.tenants.get(&tenant_id) else {
            continue;
        };
        let running = st.running.get(&tenant_id).copied().unwrap_or(0) + promised(tenant_id);
        if !tenant.can_lease() || running >= tenant.max_running_tasks() {
            continue;
        }
        let weight = u64::from(tenant.weight().get().max(1));
        if let Some((b, _, _)) = &best {
            // A tenant whose best job is below the best found so far
            // cannot win.
            let top = st.schedulable_of(tenant_id).next().map(|(p, _)| p);
            if top.is_some_and(|p| p < b.priority) {
                continue;
            }
        }
        for (priority, job_id) in st.schedulable_of(tenant_id) {
            if taken(job_id) {
                continue;
            }
            let Some(entry) = st.jobs.get(&job_id) else {
                continue;
            };
            let Some(&(_, task_id)) = entry.queue.first() else {
                continue;
            };
            let Some(job) = entry.job.submission() else {
                continue;
            };
            if node.is_blocklisted(job_id) || !meets(caps, job) {
                continue;
            }
            let key = Key {
                priority,
                running: u64::from(running),
                weight,
                submitted_at: entry.submitted_at,
                job_id: job_id.as_uuid(),
            };
            if best.as_ref().is_none_or(|(b, _, _)| key.before(b)) {
                best = Some((key, job_id, task_id));
            }
            break;
        }
    }
    best.map(|(_, j, t)| (j, t))
}

struct Key {
    priority: u8,
    running: u64,
    weight: u64,
    submitted_at: DateTime<Utc>,
    job_id: Uuid,
}

impl Key {
    fn before(&self, other: &Key) -> bool {
        use std::cmp::Ordering;
        let share = (self.running * other.weight).cmp(&(other.running * self.weight));
        match other.priority.cmp(&self.priority) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => match share {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => {
                    (self.submitted_at, self.job_id) < (other.submitted_at, other.job_id)
                }
            },
        }
    }
}

pub(crate) fn assignment(
    st: &State,
    job_id: JobId,
    task_id: TaskId,
) -> Result<Assignment, OrchestratorError> {
    let entry = st
        .jobs
        .get(&job_id)
        .ok_or(OrchestratorError::NotFound("job"))?;
    let job = entry
        .job
        .submission()
        .ok_or(OrchestratorError::NotFound("job"))?;
    let task = entry
        .job
        .task(task_id)
        .ok_or(OrchestratorError::NotFound("task"))?;
    let lease = st
        .leases
        .get(&task_id)
        .ok_or(OrchestratorError::NotFound("lease"))?;
    let (scene, _) = st
        .files
        .get(&job.scene_file_id)
        .ok_or(OrchestratorError::NotFound("scene file"))?;
    Ok(Assignment {
        job_id: job_id.as_uuid(),
        task_id: task_id.as_uuid(),
        lease_epoch: lease.epoch,
        lease_expires_at: lease.expires_at,
        renderer: job.renderer.to_string(),
        params: WireParams {
            width: job.resolution.map(|r| r.width()),
            height: job.resolution.map(|r| r.height()),
            samples: job.samples,
        },
        frames: WireFrames {
            start: task.frames.start(),
            end: task.frames.end(),
        },
        scene: WireScene {
            sha256: scene.sha256.clone(),
            size_bytes: scene.size_bytes,
        },
        task_timeout_seconds: job.task_timeout_seconds,
        stall_timeout_seconds: job.stall_timeout_seconds,
    })
}
