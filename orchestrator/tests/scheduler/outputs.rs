//! A task completes only with every frame's output, of this lease; an
//! upload needs a started lease; a completion is charged exactly once,
//! even when its instance stopped before charging it.

use chrono::Duration;
use domain::{DomainError, FileId, JobId, LeaseRef, NodeId};
use orchestrator::{Assignment, Config, Orchestrator, OrchestratorError};

use crate::{Farm, TestDb, finish, frame_output, lease, log, of};

async fn farm() -> (Farm, TestDb) {
    let db = TestDb::sqlite().await;
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    (farm, db)
}

async fn count(db: &TestDb) -> usize {
    log(&db.store).await.len()
}

fn invalid_output(result: Result<(), OrchestratorError>) -> String {
    match result {
        Err(OrchestratorError::InvalidOutput(message)) => message,
        other => panic!("expected an invalid output, got {other:?}"),
    }
}

async fn claimed(farm: &Farm, job: JobId) -> (NodeId, Assignment) {
    let node = farm.node().await;
    let a = farm.claim(node).await.expect("work is queued");
    assert_eq!(a.job_id, job.as_uuid());
    (node, a)
}

async fn output(farm: &Farm, l: LeaseRef, frame: u32) -> FileId {
    farm.orch
        .record_output(l, frame, frame_output(frame))
        .await
        .unwrap()
}

#[tokio::test]
async fn complete_and_progress_are_refused_without_this_leases_output_of_each_frame() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm.render(tenant, 2, 2).await;
    let (node, a) = claimed(&farm, job).await;
    let l = lease(node, &a);

    // Nothing reported, not even started: refused, nothing appended.
    let before = count(&db).await;
    match farm.orch.complete(l).await {
        Err(OrchestratorError::Domain(DomainError::FramesMissing { missing, total, .. })) => {
            assert_eq!((missing, total), (2, 2));
        }
        other => panic!("a completion without frames was accepted: {other:?}"),
    }
    // An upload before the task started.
    assert!(matches!(
        farm.orch.check_upload(l, 1).await,
        Err(OrchestratorError::Domain(
            DomainError::InvalidTransition { .. }
        ))
    ));
    assert!(
        farm.orch
            .record_output(l, 1, frame_output(1))
            .await
            .is_err()
    );
    assert_eq!(count(&db).await, before, "a refusal appended events");

    farm.orch.progress(l, None, None).await.unwrap();
    assert_eq!(farm.orch.check_upload(l, 1).await.unwrap(), None);
    let frame1 = output(&farm, l, 1).await;
    // A retried upload of the same bytes (its answer was lost) is the
    // output already stored: same file id, nothing appended.
    let before_retry = count(&db).await;
    assert_eq!(output(&farm, l, 1).await, frame1);
    assert_eq!(count(&db).await, before_retry);
    // Another job's output, on another node.
    let other_job = farm.render(tenant, 1, 1).await;
    let (other_node, b) = claimed(&farm, other_job).await;
    let lb = lease(other_node, &b);
    farm.orch.progress(lb, None, None).await.unwrap();
    let foreign = output(&farm, lb, 1).await;

    let before = count(&db).await;
    let missing = invalid_output(farm.orch.progress(l, Some(1), None).await);
    assert!(missing.contains("upload frame 1"), "{missing}");
    let never = FileId::new(uuid::Uuid::new_v4()).unwrap();
    invalid_output(farm.orch.progress(l, Some(1), Some(never)).await);
    let wrong_frame = invalid_output(farm.orch.progress(l, Some(2), Some(frame1)).await);
    assert!(
        wrong_frame.contains("frame 1, not frame 2"),
        "{wrong_frame}"
    );
    invalid_output(farm.orch.progress(l, Some(1), Some(foreign)).await);
    // A frame outside the task.
    let outside = invalid_output(farm.orch.check_upload(l, 3).await.map(|_| ()));
    assert!(outside.contains("frames 1 to 2"), "{outside}");
    assert_eq!(count(&db).await, before, "a refusal appended events");

    // One of two frames: still not complete.
    farm.orch.progress(l, Some(1), Some(frame1)).await.unwrap();
    let before = count(&db).await;
    assert!(matches!(
        farm.orch.complete(l).await,
        Err(OrchestratorError::Domain(DomainError::FramesMissing {
            missing: 1,
            ..
        }))
    ));
    assert_eq!(count(&db).await, before);
    let frame2 = output(&farm, l, 2).await;
    farm.orch.progress(l, Some(2), Some(frame2)).await.unwrap();
    farm.orch.complete(l).await.unwrap();
    assert!(farm.orch.is_finished(job).await);
    db.cleanup().await;
}

#[tokio::test]
async fn an_output_of_an_earlier_lease_does_not_count_and_a_rerender_supersedes_it() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm.render(tenant, 1, 1).await;
    let (node, a) = claimed(&farm, job).await;
    let first = lease(node, &a);
    farm.orch.progress(first, None, None).await.unwrap();
    let earlier = output(&farm, first, 1).await;
    farm.orch
        .progress(first, Some(1), Some(earlier))
        .await
        .unwrap();
    // The lease expires before the completion gets through.
    farm.clock.advance(Duration::seconds(31));
    farm.orch.heartbeat(node, &[]).await.unwrap();
    assert_eq!(farm.orch.tick().await.unwrap(), 1);
    let again = farm.claim(node).await.expect("requeued");
    assert_eq!(again.lease_epoch, 2);
    let second = lease(node, &again);
    farm.orch.progress(second, None, None).await.unwrap();
    invalid_output(farm.orch.progress(second, Some(1), Some(earlier)).await);
    let rerender = output(&farm, second, 1).await;
    farm.orch
        .progress(second, Some(1), Some(rerender))
        .await
        .unwrap();
    farm.orch.complete(second).await.unwrap();

    let events = log(&db.store).await;
    let progressed = of(&events, "render.task.progressed.v1");
    assert_eq!(progressed.len(), 2);
    assert_eq!(
        progressed[1].payload["supersedes_output_file_id"],
        earlier.to_string(),
        "the re-render says it supersedes the earlier output"
    );
    assert_eq!(
        farm.orch.current_outputs(job).await,
        vec![(1, rerender)],
        "one current output per frame"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_completion_left_uncharged_by_a_stopped_instance_is_charged_once_after_restart() {
    let db = TestDb::sqlite().await;
    // The first instance charges nothing (price 0), as if it had stopped
    // between the completion and its charge.
    let free = Config {
        default_price_minor_per_second: 0,
        ..crate::config()
    };
    let orch = Orchestrator::open(db.store.clone(), db.clock.clone(), free)
        .await
        .unwrap();
    let farm = Farm {
        orch,
        clock: db.clock.clone(),
    };
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm.render(tenant, 2, 1).await;
    let node = farm.node().await;
    for _ in 0..2 {
        let a = farm.claim(node).await.unwrap();
        finish(&farm.orch, node, &a).await;
    }
    assert!(farm.orch.is_finished(job).await);
    assert!(of(&log(&db.store).await, "tenant.credit_charged.v1").is_empty());
    drop(farm);

    let restarted = Farm::open(db.store.clone(), db.clock.clone()).await;
    db.clock.advance(Duration::seconds(11));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while of(&log(&db.store).await, "tenant.credit_charged.v1").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "never charged");
        restarted.orch.tick().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Ticking on charges nothing more.
    for _ in 0..5 {
        restarted.orch.tick().await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let events = log(&db.store).await;
    assert_eq!(of(&events, "tenant.credit_charged.v1").len(), 2);
    assert_eq!(restarted.orch.balance(tenant).await, Some(998));
    db.cleanup().await;
}
