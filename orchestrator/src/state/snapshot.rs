//! The view as bytes, for snapshots beside the log (see `crate::snapshot`)
//! and for the digest that compares two views.
//!
//! A snapshot holds what the log determines: jobs with their queues,
//! retired jobs, tenants, nodes, files, frame outputs, leases, completions
//! not yet charged, and the position the view has read to. What is not in
//! the log stays out: when nodes were last heard from (each instance's own,
//! and given a grace period at start), a lease's expiry (a start from the
//! log gives every lease found in it a full period from the start's clock;
//! so does a start from a snapshot), which completions this instance
//! appended (after a start, none). The index of schedulable jobs is rebuilt
//! from the jobs.
//!
//! Everything is written in a fixed order (by id), so two views that hold
//! the same have the same bytes and the same digest.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use domain::render_job::JobStatus;
use domain::{FileId, JobId, Node, NodeId, RenderJob, TaskId, Tenant, TenantId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{JobEntry, LiveLease, OutputOf, PendingCharge, Retired, SceneFile, State};

/// The body's format: a start ignores a snapshot of another format (it
/// rebuilds from the log instead).
pub(crate) const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Body {
    /// The global position of the last event the view read.
    position: i64,
    jobs: Vec<JobSnap>,
    retired: Vec<(JobId, u64, JobStatus, TenantId)>,
    tenants: Vec<(TenantId, Tenant, u64)>,
    nodes: Vec<(NodeId, Node, u64)>,
    files: Vec<(FileId, FileSnap, u64)>,
    lease_outputs: Vec<(TaskId, u32, u32, FileId)>,
    leases: Vec<(TaskId, LeaseSnap)>,
    uncharged: Vec<(TaskId, ChargeSnap)>,
    running: Vec<(TenantId, u32)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JobSnap {
    id: JobId,
    job: RenderJob,
    version: u64,
    queue: Vec<(u32, TaskId)>,
    submitted_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileSnap {
    tenant_id: TenantId,
    sha256: String,
    size_bytes: u64,
    content_type: String,
    input: bool,
    /// job, task, node, frame, lease epoch
    output: Option<(JobId, TaskId, NodeId, u32, Option<u32>)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseSnap {
    job_id: JobId,
    tenant_id: TenantId,
    node_id: NodeId,
    epoch: u32,
    assigned_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    output_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ChargeSnap {
    tenant_id: TenantId,
    job_id: JobId,
    node_id: NodeId,
    render_seconds: u64,
    completed_at: DateTime<Utc>,
}

fn sorted<K: Ord + Copy, V, T>(
    items: impl Iterator<Item = (K, V)>,
    f: impl Fn(K, V) -> T,
) -> Vec<T> {
    let mut items: Vec<(K, V)> = items.collect();
    items.sort_by_key(|(k, _)| *k);
    items.into_iter().map(|(k, v)| f(k, v)).collect()
}

impl State {
    /// What a snapshot of this view holds (a copy: taken under the view's
    /// lock, encoded after it is released).
    pub(crate) fn to_body(&self) -> Body {
        Body {
            position: self.position,
            jobs: sorted(self.jobs.iter(), |id, e| JobSnap {
                id: *id,
                job: e.job.clone(),
                version: e.version,
                queue: e.queue.iter().copied().collect(),
                submitted_at: e.submitted_at,
            }),
            retired: sorted(self.retired.iter(), |id, r| {
                (*id, r.version, r.status, r.tenant_id)
            }),
            tenants: sorted(self.tenants.iter(), |id, (t, v)| (*id, t.clone(), *v)),
            nodes: sorted(self.nodes.iter(), |id, (n, v)| (*id, n.clone(), *v)),
            files: sorted(self.files.iter(), |id, (f, v)| {
                (
                    *id,
                    FileSnap {
                        tenant_id: f.tenant_id,
                        sha256: f.sha256.clone(),
                        size_bytes: f.size_bytes,
                        content_type: f.content_type.clone(),
                        input: f.input,
                        output: f
                            .output
                            .map(|o| (o.job_id, o.task_id, o.node_id, o.frame, o.lease_epoch)),
                    },
                    *v,
                )
            }),
            lease_outputs: sorted(self.lease_outputs.iter(), |(t, e, f), id| (*t, *e, *f, *id)),
            leases: sorted(self.leases.iter(), |id, l| {
                (
                    *id,
                    LeaseSnap {
                        job_id: l.job_id,
                        tenant_id: l.tenant_id,
                        node_id: l.node_id,
                        epoch: l.epoch,
                        assigned_at: l.assigned_at,
                        started_at: l.started_at,
                        output_at: l.output_at,
                    },
                )
            }),
            uncharged: sorted(self.uncharged.iter(), |id, c| {
                (
                    *id,
                    ChargeSnap {
                        tenant_id: c.tenant_id,
                        job_id: c.job_id,
                        node_id: c.node_id,
                        render_seconds: c.render_seconds,
                        completed_at: c.completed_at,
                    },
                )
            }),
            running: sorted(self.running.iter().filter(|(_, n)| **n > 0), |id, n| {
                (*id, *n)
            }),
        }
    }

    /// Replaces this view's log-derived content with a snapshot's (its
    /// leases get a full period from `self.now`, as a start from the log
    /// gives them).
    pub(crate) fn restore(&mut self, body: Body) {
        self.position = body.position;
        self.jobs.clear();
        self.schedulable.clear();
        self.settling.clear();
        for j in body.jobs {
            self.jobs.insert(
                j.id,
                JobEntry {
                    job: j.job,
                    version: j.version,
                    queue: j.queue.into_iter().collect::<BTreeSet<_>>(),
                    submitted_at: j.submitted_at,
                    indexed: None,
                },
            );
            self.reindex(j.id);
            self.settle(j.id);
        }
        self.retired = body
            .retired
            .into_iter()
            .map(|(id, version, status, tenant_id)| {
                (
                    id,
                    Retired {
                        version,
                        status,
                        tenant_id,
                    },
                )
            })
            .collect();
        self.tenants = body
            .tenants
            .into_iter()
            .map(|(id, t, v)| (id, (t, v)))
            .collect();
        self.nodes = body
            .nodes
            .into_iter()
            .map(|(id, n, v)| (id, (n, v)))
            .collect();
        self.files = body
            .files
            .into_iter()
            .map(|(id, f, v)| {
                let output = f
                    .output
                    .map(|(job_id, task_id, node_id, frame, lease_epoch)| OutputOf {
                        job_id,
                        task_id,
                        node_id,
                        frame,
                        lease_epoch,
                    });
                let file = SceneFile {
                    tenant_id: f.tenant_id,
                    sha256: f.sha256,
                    size_bytes: f.size_bytes,
                    content_type: f.content_type,
                    input: f.input,
                    output,
                };
                (id, (file, v))
            })
            .collect();
        self.lease_outputs = body
            .lease_outputs
            .into_iter()
            .map(|(t, e, f, id)| ((t, e, f), id))
            .collect();
        let (now, ttl) = (self.now, self.lease_ttl);
        self.leases = body
            .leases
            .into_iter()
            .map(|(id, l)| {
                let lease = LiveLease {
                    job_id: l.job_id,
                    tenant_id: l.tenant_id,
                    node_id: l.node_id,
                    epoch: l.epoch,
                    assigned_at: l.assigned_at,
                    expires_at: now.max(l.assigned_at) + ttl,
                    started_at: l.started_at,
                    output_at: l.output_at,
                };
                (id, lease)
            })
            .collect();
        self.uncharged = body
            .uncharged
            .into_iter()
            .map(|(id, c)| {
                let charge = PendingCharge {
                    tenant_id: c.tenant_id,
                    job_id: c.job_id,
                    node_id: c.node_id,
                    render_seconds: c.render_seconds,
                    completed_at: c.completed_at,
                    mine: false,
                };
                (id, charge)
            })
            .collect();
        self.running = body.running.into_iter().collect();
        // Jobs the snapshot held as finished a moment before it was taken.
        self.retire_settled();
    }

    /// A digest of what the view holds from the log: equal for two views
    /// that hold the same, whichever way they were built.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let bytes = serde_json::to_vec(&self.to_body()).unwrap_or_default();
        Sha256::digest(&bytes).into()
    }
}

impl Body {
    pub(crate) fn position(&self) -> i64 {
        self.position
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
