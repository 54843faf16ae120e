//! Property tests of the invariants: chunking, leases and fencing, job
//! status, credit; and replay from scratch equals incremental evolution.

use std::collections::BTreeMap;

use domain::render_job::*;
use domain::tenant::*;
use domain::*;
use proptest::prelude::*;

use crate::fixtures::*;

proptest! {
    /// Every frame is in exactly one chunk; chunks are contiguous, in order,
    /// and at most `chunk_size` long.
    #[test]
    fn chunking_covers_every_frame_exactly_once(start in 0u32..1_000_000, len in 1u32..5_000, size in 1u32..600) {
        let range = FrameRange::new(start, start + len - 1).unwrap();
        let chunks = chunk(range, ChunkSize::new(size).unwrap());
        prop_assert_eq!(chunks.first().unwrap().start(), range.start());
        prop_assert_eq!(chunks.last().unwrap().end(), range.end());
        for pair in chunks.windows(2) {
            prop_assert_eq!(pair[0].end() + 1, pair[1].start());
        }
        for c in &chunks {
            prop_assert!(c.len() <= u64::from(size));
        }
        prop_assert_eq!(chunks.iter().map(FrameRange::len).sum::<u64>(), range.len());
        // Only the last chunk may be shorter.
        for c in &chunks[..chunks.len() - 1] {
            prop_assert_eq!(c.len(), u64::from(size));
        }
    }

    /// Chunking near the top of the frame space does not overflow.
    #[test]
    fn chunking_at_the_end_of_the_frame_space(len in 1u32..100, size in 1u32..u32::MAX) {
        let range = FrameRange::new(u32::MAX - (len - 1), u32::MAX).unwrap();
        let chunks = chunk(range, ChunkSize::new(size).unwrap());
        prop_assert_eq!(chunks.iter().map(FrameRange::len).sum::<u64>(), range.len());
    }
}

/// A step a client, a node or the orchestrator might take, in terms of
/// task and node indices so that it applies to any job.
#[derive(Debug, Clone)]
enum JobOp {
    Assign {
        task: usize,
        node: u128,
    },
    Start {
        task: usize,
        forge: Option<(u128, u32)>,
    },
    Frame {
        task: usize,
        offset: u32,
        forge: Option<(u128, u32)>,
    },
    Complete {
        task: usize,
        forge: Option<(u128, u32)>,
    },
    Fail {
        task: usize,
        forge: Option<(u128, u32)>,
    },
    Release {
        task: usize,
        forge: Option<(u128, u32)>,
    },
    Requeue {
        task: usize,
        reason: RequeueReason,
        forge: Option<(u128, u32)>,
    },
    Retry {
        task: usize,
    },
    RetryAll,
    Pause,
    Resume,
    Cancel,
}

fn forge() -> impl Strategy<Value = Option<(u128, u32)>> {
    prop_oneof![4 => Just(None), 1 => (0u128..3, 0u32..4).prop_map(Some)]
}

fn job_op() -> impl Strategy<Value = JobOp> {
    let task = 0usize..6;
    prop_oneof![
        6 => (task.clone(), 0u128..3).prop_map(|(task, node)| JobOp::Assign { task, node }),
        3 => (task.clone(), forge()).prop_map(|(task, forge)| JobOp::Start { task, forge }),
        4 => (task.clone(), 0u32..5, forge()).prop_map(|(task, offset, forge)| JobOp::Frame { task, offset, forge }),
        4 => (task.clone(), forge()).prop_map(|(task, forge)| JobOp::Complete { task, forge }),
        3 => (task.clone(), forge()).prop_map(|(task, forge)| JobOp::Fail { task, forge }),
        1 => (task.clone(), forge()).prop_map(|(task, forge)| JobOp::Release { task, forge }),
        2 => (task.clone(), prop_oneof![
                Just(RequeueReason::LeaseExpired),
                Just(RequeueReason::NodeOffline),
                Just(RequeueReason::Retry)
            ], forge())
            .prop_map(|(task, reason, forge)| JobOp::Requeue { task, reason, forge }),
        1 => task.prop_map(|task| JobOp::Retry { task }),
        1 => Just(JobOp::RetryAll),
        1 => Just(JobOp::Pause),
        1 => Just(JobOp::Resume),
        1 => Just(JobOp::Cancel),
    ]
}

/// The lease a report presents: the task's current one, or a forged one.
fn lease_for(job: &RenderJob, task_id: TaskId, forge: Option<(u128, u32)>) -> LeaseRef {
    match (forge, job.task(task_id).and_then(|t| t.lease)) {
        (None, Some(lease)) => LeaseRef {
            task_id,
            node_id: lease.node_id,
            lease_epoch: lease.epoch,
        },
        (Some((node, epoch)), _) => LeaseRef {
            task_id,
            node_id: node_id(node),
            lease_epoch: epoch,
        },
        (None, None) => LeaseRef {
            task_id,
            node_id: node_id(0),
            lease_epoch: 1,
        },
    }
}

fn command(job: &RenderJob, op: &JobOp, step: i64) -> RenderJobCommand {
    let at = t(step);
    let ids: Vec<TaskId> = {
        let mut tasks: Vec<&Task> = job.tasks().collect();
        tasks.sort_by_key(|t| t.index);
        tasks.into_iter().map(|t| t.id).collect()
    };
    let pick = |i: usize| ids[i % ids.len()];
    match op.clone() {
        JobOp::Assign { task, node } => RenderJobCommand::Assign {
            task_id: pick(task),
            node_id: node_id(node),
            at,
        },
        JobOp::Start { task, forge } => RenderJobCommand::Start {
            lease: lease_for(job, pick(task), forge),
            at,
        },
        JobOp::Frame {
            task,
            offset,
            forge,
        } => {
            let frames = job.task(pick(task)).unwrap().frames;
            RenderJobCommand::ReportFrame {
                lease: lease_for(job, pick(task), forge),
                frame: frames.start().saturating_add(offset),
                output_file_id: FileId::new(uuid::Uuid::from_u128(
                    0xf11e_0000 + u128::from(offset),
                ))
                .unwrap(),
                at,
            }
        }
        JobOp::Complete { task, forge } => RenderJobCommand::Complete {
            lease: lease_for(job, pick(task), forge),
            render_seconds: 7,
            at,
        },
        JobOp::Fail { task, forge } => RenderJobCommand::Fail {
            lease: lease_for(job, pick(task), forge),
            error: note("renderer crashed"),
            cause: None,
            render_seconds: 3,
            at,
        },
        JobOp::Release { task, forge } => RenderJobCommand::Release {
            lease: lease_for(job, pick(task), forge),
            at,
        },
        JobOp::Requeue {
            task,
            reason,
            forge,
        } => RenderJobCommand::Requeue {
            lease: lease_for(job, pick(task), forge),
            reason,
            at,
        },
        JobOp::Retry { task } => RenderJobCommand::RetryTask {
            task_id: pick(task),
            at,
        },
        JobOp::RetryAll => RenderJobCommand::RetryFailedTasks { at },
        JobOp::Pause => RenderJobCommand::Pause { at },
        JobOp::Resume => RenderJobCommand::Resume { at },
        JobOp::Cancel => RenderJobCommand::Cancel { reason: None, at },
    }
}

/// Invariants of one state.
fn check_state(job: &RenderJob) -> Result<(), TestCaseError> {
    for task in job.tasks() {
        let leased = matches!(task.status, TaskStatus::Leased | TaskStatus::Running);
        prop_assert_eq!(
            task.lease.is_some(),
            leased,
            "lease iff leased/running: {:?}",
            task
        );
        if let Some(lease) = task.lease {
            prop_assert_eq!(lease.epoch, task.last_epoch);
        }
        prop_assert!(task.frames_done.iter().all(|f| task.frames.contains(*f)));
    }
    let all_done = job.tasks().all(|t| t.status == TaskStatus::Completed);
    prop_assert_eq!(all_done, job.status() == JobStatus::Completed);
    if job.status() == JobStatus::Cancelled {
        prop_assert!(job.tasks().all(|t| t.lease.is_none()));
    }
    Ok(())
}

/// Invariants of the whole log, checked from the events alone: a task never
/// has two current leases, epochs only grow, reports come from the current
/// lease, and cancelled or paused jobs get no new work.
fn check_log(log: &[RenderJobEvent]) -> Result<(), TestCaseError> {
    let mut holder: BTreeMap<TaskId, (NodeId, u32)> = BTreeMap::new();
    let mut last_epoch: BTreeMap<TaskId, u32> = BTreeMap::new();
    let (mut cancelled, mut paused) = (false, false);
    for event in log {
        match event {
            RenderJobEvent::TaskAssigned(e) => {
                prop_assert!(
                    !cancelled && !paused,
                    "assignment to a cancelled or paused job"
                );
                prop_assert!(
                    holder
                        .insert(e.task_id, (e.node_id, e.lease_epoch))
                        .is_none(),
                    "two current leases"
                );
                let last = last_epoch.insert(e.task_id, e.lease_epoch).unwrap_or(0);
                prop_assert_eq!(e.lease_epoch, last + 1, "epochs grow by one");
            }
            RenderJobEvent::TaskStarted(e) => {
                prop_assert_eq!(holder.get(&e.task_id), Some(&(e.node_id, e.lease_epoch)));
            }
            RenderJobEvent::TaskProgressed(e) => {
                prop_assert_eq!(holder.get(&e.task_id), Some(&(e.node_id, e.lease_epoch)));
            }
            RenderJobEvent::TaskCompleted(e) => {
                prop_assert_eq!(holder.remove(&e.task_id), Some((e.node_id, e.lease_epoch)));
            }
            RenderJobEvent::TaskFailed(e) => {
                prop_assert_eq!(holder.remove(&e.task_id), Some((e.node_id, e.lease_epoch)));
            }
            RenderJobEvent::TaskReleased(e) => {
                prop_assert_eq!(holder.remove(&e.task_id), Some((e.node_id, e.lease_epoch)));
            }
            RenderJobEvent::TaskRequeued(e) if e.reason != RequeueReason::Retry => {
                prop_assert_eq!(holder.remove(&e.task_id), Some((e.node_id, e.lease_epoch)));
            }
            RenderJobEvent::TaskRetried(_) => prop_assert!(!cancelled, "retry in a cancelled job"),
            RenderJobEvent::Paused(_) => paused = true,
            RenderJobEvent::Resumed(_) => paused = false,
            RenderJobEvent::Cancelled(_) => {
                cancelled = true;
                holder.clear();
            }
            _ => {}
        }
    }
    Ok(())
}

fn submission() -> impl Strategy<Value = SubmitJob> {
    (0u32..100, 1u32..30, 1u32..8, 0u32..3).prop_map(|(start, len, size, max_retries)| SubmitJob {
        job_id: job_id(),
        tenant_id: tenant_id(),
        name: label("prop"),
        scene_file_id: file_id(1),
        renderer: ident("builtin"),
        frames: FrameRange::new(start, start + len - 1).unwrap(),
        chunk_size: ChunkSize::new(size).unwrap(),
        resolution: None,
        samples: None,
        priority: Priority::default(),
        requirements: Requirements::default(),
        max_retries,
        task_timeout_seconds: None,
        stall_timeout_seconds: None,
        depends_on: Vec::new(),
        at: t(0),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random command sequences: accepted events keep every invariant, and
    /// replaying them from scratch gives the incrementally evolved state.
    #[test]
    fn render_job_invariants_hold_and_replay_matches(submit in submission(), ops in prop::collection::vec(job_op(), 0..120)) {
        let mut job = RenderJob::default();
        let mut log: Vec<RenderJobEvent> = Vec::new();
        for event in job.decide(RenderJobCommand::Submit(submit.clone())).unwrap() {
            job = job.evolve(&event);
            log.push(event);
        }
        let frames: Vec<u32> = {
            let mut tasks: Vec<&Task> = job.tasks().collect();
            tasks.sort_by_key(|t| t.index);
            tasks.iter().flat_map(|t| t.frames.frames()).collect()
        };
        prop_assert_eq!(frames, submit.frames.frames().collect::<Vec<_>>(), "every frame in exactly one task, in order");
        for (step, op) in ops.iter().enumerate() {
            let cmd = command(&job, op, step as i64 + 1);
            if let Ok(events) = job.decide(cmd) {
                for event in events {
                    job = job.evolve(&event);
                    log.push(event);
                }
                check_state(&job)?;
            }
        }
        check_log(&log)?;
        prop_assert_eq!(RenderJob::replay(&log), job);
    }
}

#[derive(Debug, Clone)]
enum TenantOp {
    Add(i64),
    Charge(i64, bool),
    Suspend,
    Reactivate,
    Quota(u32, u32),
}

fn tenant_op() -> impl Strategy<Value = TenantOp> {
    prop_oneof![
        3 => (0i64..1_000).prop_map(TenantOp::Add),
        5 => (0i64..1_500, any::<bool>()).prop_map(|(a, cap)| TenantOp::Charge(a, cap)),
        1 => Just(TenantOp::Suspend),
        1 => Just(TenantOp::Reactivate),
        1 => (1u32..=1000, 0u32..100).prop_map(|(w, m)| TenantOp::Quota(w, m)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The balance is never negative, always equals top-ups minus charges,
    /// and replay gives the same tenant.
    #[test]
    fn tenant_credit_never_goes_negative(ops in prop::collection::vec(tenant_op(), 0..80)) {
        let mut tenant = Tenant::default();
        let mut log: Vec<TenantEvent> = Vec::new();
        let create = TenantCommand::Create {
            tenant_id: tenant_id(),
            name: label("prop"),
            weight: ShareWeight::default(),
            max_running_tasks: 10,
            at: t(0),
        };
        for e in tenant.decide(create).unwrap() {
            tenant = tenant.evolve(&e);
            log.push(e);
        }
        let (mut added, mut charged) = (0i64, 0i64);
        for (step, op) in ops.into_iter().enumerate() {
            let at = t(step as i64 + 1);
            let cmd = match op {
                TenantOp::Add(a) => TenantCommand::AddCredit { amount: amount(a), reference: label("top-up"), at },
                TenantOp::Charge(a, cap_at_balance) => TenantCommand::ChargeCredit {
                    job_id: job_id(),
                    task_id: task_id(0),
                    render_seconds: 1,
                    amount: amount(a),
                    cap_at_balance,
                    at,
                },
                TenantOp::Suspend => TenantCommand::Suspend { reason: note("test"), at },
                TenantOp::Reactivate => TenantCommand::Reactivate { at },
                TenantOp::Quota(w, m) => TenantCommand::ChangeQuota { weight: ShareWeight::new(w).unwrap(), max_running_tasks: m, at },
            };
            let before = tenant.balance();
            match tenant.decide(cmd) {
                Ok(events) => {
                    for e in events {
                        match &e {
                            TenantEvent::CreditAdded(c) => added += c.amount_minor.get(),
                            TenantEvent::CreditCharged(c) => {
                                charged += c.amount_minor.get();
                                prop_assert!(c.amount_minor.get() + c.uncovered_minor.get() > 0);
                            }
                            _ => {}
                        }
                        tenant = tenant.evolve(&e);
                        log.push(e);
                    }
                }
                Err(DomainError::InsufficientCredit { balance_minor, requested_minor }) => {
                    prop_assert_eq!(balance_minor, before.get());
                    prop_assert!(requested_minor > balance_minor);
                }
                Err(_) => {}
            }
            prop_assert!(tenant.balance().get() >= 0);
            prop_assert_eq!(tenant.balance().get(), added - charged);
        }
        prop_assert_eq!(Tenant::replay(&log), tenant);
    }
}
