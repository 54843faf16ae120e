//! Given/when/then for every render job command.

use domain::render_job::*;
use domain::*;

use crate::fixtures::*;
use crate::harness::given;

fn submit_command(start: u32, end: u32, chunk_size: u32, max_retries: u32) -> SubmitJob {
    SubmitJob {
        job_id: job_id(),
        tenant_id: tenant_id(),
        name: label("shot 010"),
        scene_file_id: file_id(1),
        renderer: ident("builtin"),
        frames: FrameRange::new(start, end).unwrap(),
        chunk_size: ChunkSize::new(chunk_size).unwrap(),
        resolution: Some(Resolution::new(640, 360).unwrap()),
        samples: Some(16),
        priority: Priority::new(70).unwrap(),
        requirements: Requirements::default(),
        max_retries,
        task_timeout_seconds: None,
        stall_timeout_seconds: None,
        depends_on: Vec::new(),
        at: t(0),
    }
}

/// A submitted job with frames 1..=10 in chunks of 4 (tasks 0,1,2), 1 retry.
fn submitted() -> Vec<RenderJobEvent> {
    RenderJob::default()
        .decide(RenderJobCommand::Submit(submit_command(1, 10, 4, 1)))
        .unwrap()
}

fn lease(index: u32, node: u128, epoch: u32) -> LeaseRef {
    LeaseRef {
        task_id: task_id(index),
        node_id: node_id(node),
        lease_epoch: epoch,
    }
}

fn assigned(index: u32, node: u128, epoch: u32) -> RenderJobEvent {
    let frames = [(1, 4), (5, 8), (9, 10)][index as usize];
    TaskAssigned {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(index),
        node_id: node_id(node),
        lease_epoch: epoch,
        frames: FrameRange::new(frames.0, frames.1).unwrap(),
        assigned_at: t(10),
    }
    .into()
}

fn started(index: u32, node: u128, epoch: u32) -> RenderJobEvent {
    TaskStarted {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(index),
        node_id: node_id(node),
        lease_epoch: epoch,
        started_at: t(11),
    }
    .into()
}

/// The output file a node stored for `frame` under lease `epoch`.
fn output_of(frame: u32, epoch: u32) -> FileId {
    file_id(1000 + u128::from(epoch) * 100 + u128::from(frame))
}

fn progressed(
    index: u32,
    node: u128,
    epoch: u32,
    frame: u32,
    done: u32,
    supersedes: Option<FileId>,
) -> RenderJobEvent {
    let frames = [(1, 4), (5, 8), (9, 10)][index as usize];
    TaskProgressed {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(index),
        node_id: node_id(node),
        lease_epoch: epoch,
        frame,
        output_file_id: Some(output_of(frame, epoch)),
        supersedes_output_file_id: supersedes,
        frames_done: done,
        frames_total: frames.1 - frames.0 + 1,
        finished_at: t(12),
    }
    .into()
}

/// A lease that rendered and reported every frame of its task.
fn rendered(index: u32, node: u128, epoch: u32) -> Vec<RenderJobEvent> {
    let frames = [(1, 4), (5, 8), (9, 10)][index as usize];
    let mut events = vec![assigned(index, node, epoch), started(index, node, epoch)];
    for (i, frame) in (frames.0..=frames.1).enumerate() {
        events.push(progressed(index, node, epoch, frame, i as u32 + 1, None));
    }
    events
}

fn completed(index: u32, node: u128, epoch: u32, seconds: u64) -> RenderJobEvent {
    TaskCompleted {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(index),
        node_id: node_id(node),
        lease_epoch: epoch,
        render_seconds: seconds,
        completed_at: t(20),
    }
    .into()
}

fn failed(index: u32, node: u128, epoch: u32, failures: u32) -> RenderJobEvent {
    TaskFailed {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(index),
        node_id: node_id(node),
        lease_epoch: epoch,
        error: note("boom"),
        failures,
        render_seconds: 5,
        failed_at: t(20),
        cause: None,
    }
    .into()
}

fn requeued(index: u32, node: u128, epoch: u32, reason: RequeueReason) -> RenderJobEvent {
    TaskRequeued {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(index),
        node_id: node_id(node),
        lease_epoch: epoch,
        reason,
        requeued_at: t(20),
    }
    .into()
}

fn with(
    mut history: Vec<RenderJobEvent>,
    more: impl IntoIterator<Item = RenderJobEvent>,
) -> Vec<RenderJobEvent> {
    history.extend(more);
    history
}

fn paused() -> RenderJobEvent {
    JobPaused {
        job_id: job_id(),
        tenant_id: tenant_id(),
        paused_at: t(5),
    }
    .into()
}

fn cancelled() -> RenderJobEvent {
    JobCancelled {
        job_id: job_id(),
        tenant_id: tenant_id(),
        reason: None,
        cancelled_at: t(5),
    }
    .into()
}

#[test]
fn submit_emits_submitted_and_split_covering_every_frame() {
    let cmd = submit_command(1, 10, 4, 1);
    let job = given::<RenderJob>([])
        .when(RenderJobCommand::Submit(cmd))
        .then([
            JobSubmitted {
                job_id: job_id(),
                tenant_id: tenant_id(),
                name: label("shot 010"),
                scene_file_id: file_id(1),
                renderer: ident("builtin"),
                frames: FrameRange::new(1, 10).unwrap(),
                chunk_size: ChunkSize::new(4).unwrap(),
                resolution: Some(Resolution::new(640, 360).unwrap()),
                samples: Some(16),
                priority: Priority::new(70).unwrap(),
                requirements: Requirements::default(),
                max_retries: 1,
                submitted_at: t(0),
                task_timeout_seconds: None,
                stall_timeout_seconds: None,
                depends_on: Vec::new(),
            }
            .into(),
            JobSplit {
                job_id: job_id(),
                tenant_id: tenant_id(),
                tasks: vec![
                    TaskSpec {
                        task_id: task_id(0),
                        index: 0,
                        frames: FrameRange::new(1, 4).unwrap(),
                    },
                    TaskSpec {
                        task_id: task_id(1),
                        index: 1,
                        frames: FrameRange::new(5, 8).unwrap(),
                    },
                    TaskSpec {
                        task_id: task_id(2),
                        index: 2,
                        frames: FrameRange::new(9, 10).unwrap(),
                    },
                ],
            }
            .into(),
        ]);
    assert_eq!(job.status(), JobStatus::Active);
    assert_eq!(job.tasks().count(), 3);
    assert!(job.tasks().all(|t| t.status == TaskStatus::Queued));
}

#[test]
fn submit_twice_is_refused() {
    given::<RenderJob>(submitted())
        .when(RenderJobCommand::Submit(submit_command(1, 10, 4, 1)))
        .then_err(DomainError::AlreadyExists {
            entity: "job",
            id: job_id().to_string(),
        });
}

#[test]
fn submit_validates_retries_samples_and_size() {
    given::<RenderJob>([])
        .when(RenderJobCommand::Submit(submit_command(1, 10, 4, 99)))
        .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == "max_retries"));
    let mut cmd = submit_command(1, 10, 4, 1);
    cmd.samples = Some(0);
    given::<RenderJob>([])
        .when(RenderJobCommand::Submit(cmd))
        .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == "samples"));
    given::<RenderJob>([])
        .when(RenderJobCommand::Submit(submit_command(0, 2_000_000, 1, 1)))
        .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == "frame_range"));
}

#[test]
fn commands_on_an_unsubmitted_job_are_not_found() {
    given::<RenderJob>([])
        .when(RenderJobCommand::Pause { at: t(1) })
        .then_err(DomainError::NotFound {
            entity: "job",
            id: "-".into(),
        });
}

#[test]
fn assign_leases_a_queued_task_with_the_next_epoch() {
    let job = given::<RenderJob>(submitted())
        .when(RenderJobCommand::Assign {
            task_id: task_id(0),
            node_id: node_id(1),
            at: t(10),
        })
        .then([assigned(0, 1, 1)]);
    let task = job.task(task_id(0)).unwrap();
    assert_eq!(task.status, TaskStatus::Leased);
    assert_eq!(
        task.lease,
        Some(Lease {
            node_id: node_id(1),
            epoch: 1
        })
    );
    // After a requeue the next lease gets epoch 2.
    given::<RenderJob>(with(
        submitted(),
        [
            assigned(0, 1, 1),
            requeued(0, 1, 1, RequeueReason::LeaseExpired),
        ],
    ))
    .when(RenderJobCommand::Assign {
        task_id: task_id(0),
        node_id: node_id(2),
        at: t(10),
    })
    .then([assigned(0, 2, 2)]);
}

#[test]
fn assign_refuses_a_leased_task_so_no_task_has_two_leases() {
    given::<RenderJob>(with(submitted(), [assigned(0, 1, 1)]))
        .when(RenderJobCommand::Assign {
            task_id: task_id(0),
            node_id: node_id(2),
            at: t(11),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "task",
            from: "leased",
            command: "assign",
        });
}

#[test]
fn assign_refuses_paused_cancelled_and_unknown() {
    given::<RenderJob>(with(submitted(), [paused()]))
        .when(RenderJobCommand::Assign {
            task_id: task_id(0),
            node_id: node_id(1),
            at: t(10),
        })
        .then_err(DomainError::JobPaused { job_id: job_id() });
    given::<RenderJob>(with(submitted(), [cancelled()]))
        .when(RenderJobCommand::Assign {
            task_id: task_id(0),
            node_id: node_id(1),
            at: t(10),
        })
        .then_err(DomainError::JobCancelled { job_id: job_id() });
    given::<RenderJob>(submitted())
        .when(RenderJobCommand::Assign {
            task_id: task_id(7),
            node_id: node_id(1),
            at: t(10),
        })
        .then_err(DomainError::NotFound {
            entity: "task",
            id: task_id(7).to_string(),
        });
}

#[test]
fn start_moves_a_leased_task_to_running() {
    let job = given::<RenderJob>(with(submitted(), [assigned(0, 1, 1)]))
        .when(RenderJobCommand::Start {
            lease: lease(0, 1, 1),
            at: t(11),
        })
        .then([TaskStarted {
            job_id: job_id(),
            tenant_id: tenant_id(),
            task_id: task_id(0),
            node_id: node_id(1),
            lease_epoch: 1,
            started_at: t(11),
        }
        .into()]);
    assert_eq!(job.task(task_id(0)).unwrap().status, TaskStatus::Running);
}

#[test]
fn reports_from_a_stale_lease_are_refused() {
    let history = with(
        submitted(),
        [
            assigned(0, 1, 1),
            requeued(0, 1, 1, RequeueReason::NodeOffline),
            assigned(0, 2, 2),
        ],
    );
    let stale = DomainError::StaleLease {
        task_id: task_id(0),
        presented: 1,
        current: Some(2),
    };
    given::<RenderJob>(history.clone())
        .when(RenderJobCommand::Complete {
            lease: lease(0, 1, 1),
            render_seconds: 3,
            at: t(30),
        })
        .then_err(stale.clone());
    given::<RenderJob>(history.clone())
        .when(RenderJobCommand::Fail {
            lease: lease(0, 1, 1),
            error: note("x"),
            cause: None,
            render_seconds: 3,
            at: t(30),
        })
        .then_err(stale.clone());
    given::<RenderJob>(history.clone())
        .when(RenderJobCommand::ReportFrame {
            lease: lease(0, 1, 1),
            frame: 2,
            output_file_id: output_of(2, 1),
            at: t(30),
        })
        .then_err(stale);
    // Right epoch, wrong node.
    given::<RenderJob>(history)
        .when(RenderJobCommand::Start {
            lease: lease(0, 1, 2),
            at: t(30),
        })
        .then_err(DomainError::StaleLease {
            task_id: task_id(0),
            presented: 2,
            current: Some(2),
        });
    // A queued task has no lease at all.
    given::<RenderJob>(submitted())
        .when(RenderJobCommand::Start {
            lease: lease(0, 1, 1),
            at: t(30),
        })
        .then_err(DomainError::StaleLease {
            task_id: task_id(0),
            presented: 1,
            current: None,
        });
}

#[test]
fn start_twice_is_an_invalid_transition() {
    let started: RenderJobEvent = TaskStarted {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(0),
        node_id: node_id(1),
        lease_epoch: 1,
        started_at: t(11),
    }
    .into();
    given::<RenderJob>(with(submitted(), [assigned(0, 1, 1), started]))
        .when(RenderJobCommand::Start {
            lease: lease(0, 1, 1),
            at: t(12),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "task",
            from: "running",
            command: "start",
        });
}

#[test]
fn report_frame_records_each_frame_once() {
    let progressed = progressed(0, 1, 1, 2, 1, None);
    let running = [assigned(0, 1, 1), started(0, 1, 1)];
    given::<RenderJob>(with(submitted(), running.clone()))
        .when(RenderJobCommand::ReportFrame {
            lease: lease(0, 1, 1),
            frame: 2,
            output_file_id: output_of(2, 1),
            at: t(12),
        })
        .then([progressed.clone()]);
    given::<RenderJob>(with(with(submitted(), running.clone()), [progressed]))
        .when(RenderJobCommand::ReportFrame {
            lease: lease(0, 1, 1),
            frame: 2,
            output_file_id: output_of(2, 1),
            at: t(13),
        })
        .then([]);
    given::<RenderJob>(with(submitted(), running))
        .when(RenderJobCommand::ReportFrame {
            lease: lease(0, 1, 1),
            frame: 9,
            output_file_id: output_of(9, 1),
            at: t(13),
        })
        .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == "frame"));
}

#[test]
fn a_frame_is_reported_only_once_the_task_started() {
    given::<RenderJob>(with(submitted(), [assigned(0, 1, 1)]))
        .when(RenderJobCommand::ReportFrame {
            lease: lease(0, 1, 1),
            frame: 2,
            output_file_id: output_of(2, 1),
            at: t(12),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "task",
            from: "leased",
            command: "report a frame of",
        });
}

#[test]
fn a_task_completes_only_when_every_frame_has_a_reported_output() {
    let complete = RenderJobCommand::Complete {
        lease: lease(0, 1, 1),
        render_seconds: 4,
        at: t(20),
    };
    // Nothing reported, not even started.
    given::<RenderJob>(with(submitted(), [assigned(0, 1, 1)]))
        .when(complete.clone())
        .then_err(DomainError::FramesMissing {
            task_id: task_id(0),
            missing: 4,
            total: 4,
        });
    // Three of four frames.
    let mut three = rendered(0, 1, 1);
    three.pop();
    given::<RenderJob>(with(submitted(), three))
        .when(complete.clone())
        .then_err(DomainError::FramesMissing {
            task_id: task_id(0),
            missing: 1,
            total: 4,
        });
    // Frames reported under an earlier lease do not count for this one.
    let mut earlier = rendered(0, 1, 1);
    earlier.push(requeued(0, 1, 1, RequeueReason::LeaseExpired));
    earlier.push(assigned(0, 1, 2));
    given::<RenderJob>(with(submitted(), earlier))
        .when(RenderJobCommand::Complete {
            lease: lease(0, 1, 2),
            render_seconds: 4,
            at: t(20),
        })
        .then_err(DomainError::FramesMissing {
            task_id: task_id(0),
            missing: 4,
            total: 4,
        });
    given::<RenderJob>(with(submitted(), rendered(0, 1, 1)))
        .when(complete)
        .then([completed(0, 1, 1, 4)]);
}

#[test]
fn completing_the_last_task_completes_the_job() {
    given::<RenderJob>(with(submitted(), rendered(0, 1, 1)))
        .when(RenderJobCommand::Complete {
            lease: lease(0, 1, 1),
            render_seconds: 40,
            at: t(20),
        })
        .then([completed(0, 1, 1, 40)]);
    let mut history = submitted();
    history.extend(rendered(0, 1, 1));
    history.push(completed(0, 1, 1, 40));
    history.extend(rendered(1, 1, 1));
    history.push(completed(1, 1, 1, 30));
    history.extend(rendered(2, 2, 1));
    let job = given::<RenderJob>(history)
        .when(RenderJobCommand::Complete {
            lease: lease(2, 2, 1),
            render_seconds: 20,
            at: t(20),
        })
        .then([
            completed(2, 2, 1, 20),
            JobCompleted {
                job_id: job_id(),
                tenant_id: tenant_id(),
                render_seconds: 90,
                completed_at: t(20),
            }
            .into(),
        ]);
    assert_eq!(job.status(), JobStatus::Completed);
}

#[test]
fn a_failure_with_retries_left_requeues_the_task() {
    let job = given::<RenderJob>(with(submitted(), [assigned(0, 1, 1)]))
        .when(RenderJobCommand::Fail {
            lease: lease(0, 1, 1),
            error: note("boom"),
            cause: None,
            render_seconds: 5,
            at: t(20),
        })
        .then([failed(0, 1, 1, 1), requeued(0, 1, 1, RequeueReason::Retry)]);
    assert_eq!(job.task(task_id(0)).unwrap().status, TaskStatus::Queued);
    assert_eq!(job.failures_on_node(node_id(1)), 1);
}

#[test]
fn a_task_exceeding_max_retries_fails_the_job() {
    let history = with(
        submitted(),
        [
            assigned(0, 1, 1),
            failed(0, 1, 1, 1),
            requeued(0, 1, 1, RequeueReason::Retry),
            assigned(0, 2, 2),
        ],
    );
    let job = given::<RenderJob>(history)
        .when(RenderJobCommand::Fail {
            lease: lease(0, 2, 2),
            error: note("boom"),
            cause: None,
            render_seconds: 5,
            at: t(20),
        })
        .then([
            failed(0, 2, 2, 2),
            JobFailed {
                job_id: job_id(),
                tenant_id: tenant_id(),
                task_id: task_id(0),
                error: note("boom"),
                failed_at: t(20),
            }
            .into(),
        ]);
    assert_eq!(job.status(), JobStatus::Failed);
    assert!(!job.accepts_assignments());
}

#[test]
fn release_puts_the_task_back_in_the_queue() {
    let job = given::<RenderJob>(with(submitted(), [assigned(1, 1, 1)]))
        .when(RenderJobCommand::Release {
            lease: lease(1, 1, 1),
            at: t(20),
        })
        .then([TaskReleased {
            job_id: job_id(),
            tenant_id: tenant_id(),
            task_id: task_id(1),
            node_id: node_id(1),
            lease_epoch: 1,
            released_at: t(20),
        }
        .into()]);
    assert_eq!(job.task(task_id(1)).unwrap().status, TaskStatus::Queued);
    assert_eq!(job.task(task_id(1)).unwrap().lease, None);
}

#[test]
fn requeue_ends_the_lease_with_a_reason() {
    given::<RenderJob>(with(submitted(), [assigned(0, 1, 1)]))
        .when(RenderJobCommand::Requeue {
            lease: lease(0, 1, 1),
            reason: RequeueReason::LeaseExpired,
            at: t(20),
        })
        .then([requeued(0, 1, 1, RequeueReason::LeaseExpired)]);
    given::<RenderJob>(with(submitted(), [assigned(0, 1, 1)]))
        .when(RenderJobCommand::Requeue {
            lease: lease(0, 1, 1),
            reason: RequeueReason::Retry,
            at: t(20),
        })
        .then_err_matches(|e| matches!(e, DomainError::Validation(v) if v.field == "reason"));
    // The lease already ended with a completion: the expiry lost the race.
    given::<RenderJob>(with(
        submitted(),
        [assigned(0, 1, 1), completed(0, 1, 1, 4)],
    ))
    .when(RenderJobCommand::Requeue {
        lease: lease(0, 1, 1),
        reason: RequeueReason::LeaseExpired,
        at: t(20),
    })
    .then_err(DomainError::StaleLease {
        task_id: task_id(0),
        presented: 1,
        current: None,
    });
}

fn failed_job() -> Vec<RenderJobEvent> {
    with(
        submitted(),
        [
            assigned(0, 1, 1),
            failed(0, 1, 1, 1),
            requeued(0, 1, 1, RequeueReason::Retry),
            assigned(0, 2, 2),
            failed(0, 2, 2, 2),
            JobFailed {
                job_id: job_id(),
                tenant_id: tenant_id(),
                task_id: task_id(0),
                error: note("boom"),
                failed_at: t(20),
            }
            .into(),
        ],
    )
}

fn retried(index: u32) -> RenderJobEvent {
    TaskRetried {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(index),
        retried_at: t(40),
    }
    .into()
}

#[test]
fn retry_task_requeues_a_failed_task_and_reactivates_the_job() {
    let job = given::<RenderJob>(failed_job())
        .when(RenderJobCommand::RetryTask {
            task_id: task_id(0),
            at: t(40),
        })
        .then([retried(0)]);
    assert_eq!(job.status(), JobStatus::Active);
    let task = job.task(task_id(0)).unwrap();
    assert_eq!((task.status, task.failures), (TaskStatus::Queued, 0));
    given::<RenderJob>(submitted())
        .when(RenderJobCommand::RetryTask {
            task_id: task_id(0),
            at: t(40),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "task",
            from: "queued",
            command: "retry",
        });
    given::<RenderJob>(with(failed_job(), [cancelled()]))
        .when(RenderJobCommand::RetryTask {
            task_id: task_id(0),
            at: t(40),
        })
        .then_err(DomainError::JobCancelled { job_id: job_id() });
}

#[test]
fn retry_failed_tasks_retries_all_of_them() {
    given::<RenderJob>(failed_job())
        .when(RenderJobCommand::RetryFailedTasks { at: t(40) })
        .then([retried(0)]);
    given::<RenderJob>(submitted())
        .when(RenderJobCommand::RetryFailedTasks { at: t(40) })
        .then_err(DomainError::InvalidTransition {
            entity: "job",
            from: "active",
            command: "retry",
        });
}

#[test]
fn pause_and_resume() {
    let job = given::<RenderJob>(submitted())
        .when(RenderJobCommand::Pause { at: t(5) })
        .then([paused()]);
    assert_eq!(job.status(), JobStatus::Paused);
    given::<RenderJob>(with(submitted(), [paused()]))
        .when(RenderJobCommand::Pause { at: t(6) })
        .then_err(DomainError::InvalidTransition {
            entity: "job",
            from: "paused",
            command: "pause",
        });
    given::<RenderJob>(with(submitted(), [paused()]))
        .when(RenderJobCommand::Resume { at: t(6) })
        .then([JobResumed {
            job_id: job_id(),
            tenant_id: tenant_id(),
            resumed_at: t(6),
        }
        .into()]);
    given::<RenderJob>(submitted())
        .when(RenderJobCommand::Resume { at: t(6) })
        .then_err(DomainError::InvalidTransition {
            entity: "job",
            from: "active",
            command: "resume",
        });
    given::<RenderJob>(with(submitted(), [cancelled()]))
        .when(RenderJobCommand::Resume { at: t(6) })
        .then_err(DomainError::JobCancelled { job_id: job_id() });
}

#[test]
fn a_paused_job_still_accepts_reports_from_running_tasks() {
    given::<RenderJob>(with(with(submitted(), rendered(0, 1, 1)), [paused()]))
        .when(RenderJobCommand::Complete {
            lease: lease(0, 1, 1),
            render_seconds: 4,
            at: t(20),
        })
        .then([completed(0, 1, 1, 4)]);
}

#[test]
fn cancel_stops_all_work() {
    let job = given::<RenderJob>(with(submitted(), [assigned(0, 1, 1)]))
        .when(RenderJobCommand::Cancel {
            reason: Some(note("wrong camera")),
            at: t(5),
        })
        .then([JobCancelled {
            job_id: job_id(),
            tenant_id: tenant_id(),
            reason: Some(note("wrong camera")),
            cancelled_at: t(5),
        }
        .into()]);
    assert!(
        job.tasks()
            .all(|t| t.status == TaskStatus::Cancelled && t.lease.is_none())
    );
    given::<RenderJob>(with(submitted(), [assigned(0, 1, 1), cancelled()]))
        .when(RenderJobCommand::Complete {
            lease: lease(0, 1, 1),
            render_seconds: 4,
            at: t(20),
        })
        .then_err(DomainError::JobCancelled { job_id: job_id() });
    given::<RenderJob>(with(submitted(), [cancelled()]))
        .when(RenderJobCommand::Cancel {
            reason: None,
            at: t(6),
        })
        .then_err(DomainError::JobCancelled { job_id: job_id() });
    let done = with(
        submitted(),
        [
            assigned(0, 1, 1),
            completed(0, 1, 1, 1),
            assigned(1, 1, 1),
            completed(1, 1, 1, 1),
            assigned(2, 1, 1),
            completed(2, 1, 1, 1),
            JobCompleted {
                job_id: job_id(),
                tenant_id: tenant_id(),
                render_seconds: 3,
                completed_at: t(20),
            }
            .into(),
        ],
    );
    given::<RenderJob>(done)
        .when(RenderJobCommand::Cancel {
            reason: None,
            at: t(30),
        })
        .then_err(DomainError::InvalidTransition {
            entity: "job",
            from: "completed",
            command: "cancel",
        });
}

#[test]
fn retrying_a_job_that_failed_while_paused_leaves_it_paused() {
    // Found by the property test: the failure must not forget the pause.
    let history = with(failed_job(), []);
    let mut paused_history = submitted();
    paused_history.push(paused());
    paused_history.extend(history.into_iter().skip(2));
    let job = given::<RenderJob>(paused_history)
        .when(RenderJobCommand::RetryTask {
            task_id: task_id(0),
            at: t(40),
        })
        .then([retried(0)]);
    assert_eq!(job.status(), JobStatus::Paused);
    assert!(!job.accepts_assignments());
}

#[test]
fn a_new_lease_reports_every_frame_again_and_its_output_supersedes_the_earlier() {
    let history = with(
        submitted(),
        [
            assigned(0, 1, 1),
            started(0, 1, 1),
            progressed(0, 1, 1, 1, 1, None),
            requeued(0, 1, 1, RequeueReason::NodeOffline),
            assigned(0, 2, 2),
            started(0, 2, 2),
        ],
    );
    let job = given::<RenderJob>(history)
        .when(RenderJobCommand::ReportFrame {
            lease: lease(0, 2, 2),
            frame: 1,
            output_file_id: output_of(1, 2),
            at: t(12),
        })
        .then([progressed(0, 2, 2, 1, 1, Some(output_of(1, 1)))]);
    // One current output per frame: the re-render's.
    assert_eq!(job.current_output(1), Some(output_of(1, 2)));
    assert_eq!(job.current_outputs().count(), 1);
}

#[test]
fn giving_up_fails_an_active_job_and_nothing_else() {
    let note = Note::parse("no capable node left").unwrap();
    let expected: RenderJobEvent = JobFailed {
        job_id: job_id(),
        tenant_id: tenant_id(),
        task_id: task_id(0),
        error: note.clone(),
        failed_at: t(30),
    }
    .into();
    given::<RenderJob>(submitted())
        .when(RenderJobCommand::GiveUp {
            task_id: task_id(0),
            error: note.clone(),
            at: t(30),
        })
        .then([expected]);
    given::<RenderJob>(with(submitted(), [cancelled()]))
        .when(RenderJobCommand::GiveUp {
            task_id: task_id(0),
            error: note,
            at: t(30),
        })
        .then_err_matches(|e| matches!(e, DomainError::JobCancelled { .. }));
}

#[test]
fn the_priority_of_an_active_or_paused_job_changes_and_a_finished_one_refuses() {
    let changed = |p: u8| -> RenderJobEvent {
        domain::render_job::JobPriorityChanged {
            job_id: job_id(),
            tenant_id: tenant_id(),
            priority: Priority::new(p).unwrap(),
            changed_at: t(9),
        }
        .into()
    };
    let change = |p: u8| RenderJobCommand::ChangePriority {
        priority: Priority::new(p).unwrap(),
        at: t(9),
    };
    let job = given::<RenderJob>(submitted())
        .when(change(90))
        .then([changed(90)]);
    assert_eq!(job.priority(), Some(Priority::new(90).unwrap()));
    // The same priority again changes nothing.
    given::<RenderJob>(with(submitted(), [changed(90)]))
        .when(change(90))
        .then([]);
    given::<RenderJob>(with(submitted(), [paused()]))
        .when(change(10))
        .then([changed(10)]);
    given::<RenderJob>(with(submitted(), [cancelled()]))
        .when(change(10))
        .then_err_matches(|e| matches!(e, DomainError::JobCancelled { .. }));
}

fn other_job(n: u128) -> JobId {
    JobId::new(uuid::Uuid::from_u128(
        0x5000_0000_0000_4000_8000_0000_0000_0000 + n,
    ))
    .unwrap()
}

/// A job of frames 1..=10 (chunks of 4) waiting for `other_job(1)`.
fn waiting() -> Vec<RenderJobEvent> {
    let mut cmd = submit_command(1, 10, 4, 1);
    cmd.depends_on = vec![other_job(1)];
    RenderJob::default()
        .decide(RenderJobCommand::Submit(cmd))
        .unwrap()
}

#[test]
fn a_job_with_dependencies_waits_and_leases_nothing_until_released() {
    let events = waiting();
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[2],
        JobWaiting {
            job_id: job_id(),
            tenant_id: tenant_id(),
            depends_on: vec![other_job(1)],
            waiting_since: t(0),
        }
        .into()
    );
    let job = RenderJob::replay(&events);
    assert_eq!(job.status(), JobStatus::Waiting);
    assert!(!job.accepts_assignments());
    given::<RenderJob>(waiting())
        .when(RenderJobCommand::Assign {
            task_id: task_id(0),
            node_id: node_id(1),
            at: t(1),
        })
        .then_err_matches(|e| matches!(e, DomainError::InvalidTransition { .. }));
    given::<RenderJob>(waiting())
        .when(RenderJobCommand::Pause { at: t(1) })
        .then_err_matches(|e| matches!(e, DomainError::InvalidTransition { .. }));
    let job = given::<RenderJob>(waiting())
        .when(RenderJobCommand::ReleaseDependencies { at: t(5) })
        .then([JobReleased {
            job_id: job_id(),
            tenant_id: tenant_id(),
            released_at: t(5),
        }
        .into()]);
    assert_eq!(job.status(), JobStatus::Active);
    assert!(job.accepts_assignments());
    // Released once: a second release (another instance) is refused.
    let mut released = waiting();
    released.push(
        JobReleased {
            job_id: job_id(),
            tenant_id: tenant_id(),
            released_at: t(5),
        }
        .into(),
    );
    given::<RenderJob>(released)
        .when(RenderJobCommand::ReleaseDependencies { at: t(6) })
        .then_err_matches(|e| matches!(e, DomainError::InvalidTransition { .. }));
    // Without dependencies a job never waits.
    given::<RenderJob>(submitted())
        .when(RenderJobCommand::ReleaseDependencies { at: t(6) })
        .then_err_matches(|e| matches!(e, DomainError::InvalidTransition { .. }));
}

#[test]
fn a_failed_dependency_fails_the_waiting_job_and_a_waiting_job_can_be_cancelled() {
    let job = given::<RenderJob>(waiting())
        .when(RenderJobCommand::FailDependency {
            dependency_id: other_job(1),
            dependency_status: ident("cancelled"),
            at: t(7),
        })
        .then([JobDependencyFailed {
            job_id: job_id(),
            tenant_id: tenant_id(),
            dependency_id: other_job(1),
            dependency_status: ident("cancelled"),
            failed_at: t(7),
        }
        .into()]);
    assert_eq!(job.status(), JobStatus::Failed);
    assert!(!job.accepts_assignments());
    let job = given::<RenderJob>(waiting())
        .when(RenderJobCommand::Cancel {
            reason: None,
            at: t(3),
        })
        .then([JobCancelled {
            job_id: job_id(),
            tenant_id: tenant_id(),
            reason: None,
            cancelled_at: t(3),
        }
        .into()]);
    assert_eq!(job.status(), JobStatus::Cancelled);
}

#[test]
fn submit_refuses_bad_timeouts_and_dependencies() {
    let field_of = |cmd: SubmitJob| -> &'static str {
        match RenderJob::default().decide(RenderJobCommand::Submit(cmd)) {
            Err(DomainError::Validation(v)) => v.field,
            other => panic!("{other:?}"),
        }
    };
    let mut cmd = submit_command(1, 10, 4, 1);
    cmd.task_timeout_seconds = Some(0);
    assert_eq!(field_of(cmd), "task_timeout_seconds");
    let mut cmd = submit_command(1, 10, 4, 1);
    cmd.stall_timeout_seconds = Some(MAX_TIMEOUT_SECONDS + 1);
    assert_eq!(field_of(cmd), "stall_timeout_seconds");
    let mut cmd = submit_command(1, 10, 4, 1);
    cmd.depends_on = vec![job_id()];
    assert_eq!(field_of(cmd), "depends_on");
    let mut cmd = submit_command(1, 10, 4, 1);
    cmd.depends_on = vec![other_job(1), other_job(1)];
    assert_eq!(field_of(cmd), "depends_on");
    let mut cmd = submit_command(1, 10, 4, 1);
    cmd.depends_on = (0..=MAX_DEPENDENCIES as u128).map(other_job).collect();
    assert_eq!(field_of(cmd), "depends_on");
    // In range, they are kept on the submission.
    let mut cmd = submit_command(1, 10, 4, 1);
    cmd.task_timeout_seconds = Some(60);
    cmd.stall_timeout_seconds = Some(MAX_TIMEOUT_SECONDS);
    let job = RenderJob::replay(
        &RenderJob::default()
            .decide(RenderJobCommand::Submit(cmd))
            .unwrap(),
    );
    let s = job.submission().unwrap();
    assert_eq!(
        (s.task_timeout_seconds, s.stall_timeout_seconds),
        (Some(60), Some(MAX_TIMEOUT_SECONDS))
    );
}

#[test]
fn a_timed_out_attempt_says_why_and_is_retried_like_any_failure() {
    let job = given::<RenderJob>(with(submitted(), [assigned(0, 1, 1), started(0, 1, 1)]))
        .when(RenderJobCommand::Fail {
            lease: lease(0, 1, 1),
            error: note("timed_out: ran longer than 60 s"),
            cause: Some(FailureCause::TimedOut),
            render_seconds: 60,
            at: t(70),
        })
        .then([
            TaskFailed {
                job_id: job_id(),
                tenant_id: tenant_id(),
                task_id: task_id(0),
                node_id: node_id(1),
                lease_epoch: 1,
                error: note("timed_out: ran longer than 60 s"),
                failures: 1,
                render_seconds: 60,
                failed_at: t(70),
                cause: Some(FailureCause::TimedOut),
            }
            .into(),
            TaskRequeued {
                job_id: job_id(),
                tenant_id: tenant_id(),
                task_id: task_id(0),
                node_id: node_id(1),
                lease_epoch: 1,
                reason: RequeueReason::Retry,
                requeued_at: t(70),
            }
            .into(),
        ]);
    assert_eq!(job.task(task_id(0)).unwrap().status, TaskStatus::Queued);
}
