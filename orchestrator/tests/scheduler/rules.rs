//! The scheduling rules of SPEC §5–§6, one at a time, on SQLite.

use chrono::Duration;
use domain::render_job::Requirements;
use domain::{DomainError, Note, RenderJobCommand};
use orchestrator::OrchestratorError;

use crate::{Farm, TestDb, finish, lease, log, of, render_frames};

async fn farm() -> (Farm, TestDb) {
    let db = TestDb::sqlite().await;
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    (farm, db)
}

#[tokio::test]
async fn a_task_is_leased_completed_and_charged_at_the_node_class_price() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm.render(tenant, 4, 2).await;
    let node = farm.node().await;

    let a = farm.claim(node).await.expect("work is queued");
    assert_eq!((a.frames.start, a.frames.end, a.lease_epoch), (1, 2, 1));
    assert_eq!(a.job_id, job.as_uuid());
    let l = lease(node, &a);
    render_frames(&farm.orch, node, &a).await;
    farm.clock.advance(Duration::milliseconds(2_500));
    farm.orch.complete(l).await.unwrap();
    // 2.5 s rounds up to 3 render-seconds at the default price of 1.
    assert_eq!(farm.orch.balance(tenant).await, Some(997));

    let b = farm.claim(node).await.expect("second task");
    assert_eq!((b.frames.start, b.frames.end), (3, 4));
    finish(&farm.orch, node, &b).await;
    assert!(farm.orch.is_finished(job).await);
    assert_eq!(farm.claim(node).await, None);

    let events = log(&db.store).await;
    let charges = of(&events, "tenant.credit_charged.v1");
    assert_eq!(charges.len(), 2);
    assert_eq!(charges[0].payload["render_seconds"], 3);
    assert_eq!(charges[0].payload["amount_minor"], 3);
    assert_eq!(of(&events, "render.job.completed.v1").len(), 1);
    assert_eq!(of(&events, "render.task.progressed.v1").len(), 4);
    db.cleanup().await;
}

#[tokio::test]
async fn an_expired_lease_is_requeued_with_its_reason_and_leased_again_with_a_new_epoch() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    farm.render(tenant, 1, 1).await;
    let node = farm.node().await;
    let a = farm.claim(node).await.unwrap();
    // The node keeps beating but does not report the lease: it is not renewed.
    for _ in 0..4 {
        farm.clock.advance(Duration::seconds(8));
        farm.orch.heartbeat(node, &[]).await.unwrap();
        farm.orch.tick().await.unwrap();
    }
    let events = log(&db.store).await;
    let requeued = of(&events, "render.task.requeued.v1");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].payload["reason"], "lease_expired");
    let b = farm.claim(node).await.expect("requeued");
    assert_eq!(b.task_id, a.task_id);
    assert_eq!(b.lease_epoch, 2);
    // The first lease is fenced off.
    assert!(matches!(
        farm.orch.complete(lease(node, &a)).await,
        Err(OrchestratorError::Domain(DomainError::StaleLease { .. }))
    ));
    finish(&farm.orch, node, &b).await;
    db.cleanup().await;
}

#[tokio::test]
async fn heartbeats_and_progress_renew_a_lease() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    farm.render(tenant, 1, 1).await;
    let node = farm.node().await;
    let a = farm.claim(node).await.unwrap();
    let l = lease(node, &a);
    for _ in 0..10 {
        farm.clock.advance(Duration::seconds(8));
        assert!(farm.orch.heartbeat(node, &[l]).await.unwrap().is_empty());
        farm.orch.tick().await.unwrap();
    }
    finish(&farm.orch, node, &a).await;
    assert!(of(&log(&db.store).await, "render.task.requeued.v1").is_empty());
    db.cleanup().await;
}

#[tokio::test]
async fn a_node_back_from_offline_is_told_to_stop_and_its_late_completion_is_refused() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm.render(tenant, 1, 1).await;
    let lost = farm.node().await;
    let other = farm.node().await;
    let first = farm.claim(lost).await.unwrap();
    // `lost` goes silent; `other` keeps beating.
    farm.clock.advance(Duration::seconds(11));
    farm.orch.heartbeat(other, &[]).await.unwrap();
    assert_eq!(farm.orch.tick().await.unwrap(), 1);
    let second = farm.claim(other).await.expect("requeued to the other node");
    assert_eq!(second.task_id, first.task_id);
    assert_eq!(second.lease_epoch, 2);

    // `lost` comes back, still holding its old lease: told to stop, and
    // its completion is refused.
    let old = lease(lost, &first);
    assert_eq!(farm.orch.heartbeat(lost, &[old]).await.unwrap(), vec![old]);
    match farm.orch.complete(old).await {
        Err(OrchestratorError::Domain(DomainError::StaleLease {
            presented, current, ..
        })) => assert_eq!((presented, current), (1, Some(2))),
        other => panic!("a stale completion was not refused: {other:?}"),
    }
    finish(&farm.orch, other, &second).await;
    assert!(farm.orch.is_finished(job).await);

    // The log tells the story: offline, requeued (why), leased again, one completion.
    let events = log(&db.store).await;
    let offline = of(&events, "node.offline.v1");
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0].payload["node_id"], lost.to_string());
    let requeued = of(&events, "render.task.requeued.v1");
    assert_eq!(requeued[0].payload["reason"], "node_offline");
    assert_eq!(requeued[0].payload["lease_epoch"], 1);
    let assigned = of(&events, "render.task.assigned.v1");
    assert_eq!(assigned.len(), 2);
    assert_eq!(assigned[1].payload["node_id"], other.to_string());
    let completed = of(&events, "render.task.completed.v1");
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].payload["node_id"], other.to_string());
    assert!(offline[0].global_position < requeued[0].global_position);
    assert!(requeued[0].global_position < assigned[1].global_position);
    // Coming back brought the node online again (an event too).
    assert_eq!(of(&events, "node.online.v1").len(), 3);
    db.cleanup().await;
}

#[tokio::test]
async fn a_tenant_gets_no_more_running_tasks_than_its_quota_and_none_without_credit() {
    let (farm, db) = farm().await;
    let capped = farm.tenant(1, 2, 1_000).await;
    let broke = farm.tenant(5, 10, 0).await;
    farm.render(capped, 10, 1).await;
    farm.render(broke, 10, 1).await;
    let mut leased = Vec::new();
    for _ in 0..5 {
        let node = farm.node().await;
        if let Some(a) = farm.claim(node).await {
            leased.push((node, a));
        }
    }
    assert_eq!(leased.len(), 2, "the quota of 2 running tasks holds");
    let running = farm.orch.running_by_tenant().await;
    assert_eq!(running.get(&capped), Some(&2));
    assert_eq!(running.get(&broke), None, "no credit, no leases");
    // A finished task frees a slot.
    let (node, a) = &leased[0];
    finish(&farm.orch, *node, a).await;
    assert!(farm.claim(*node).await.is_some());
    db.cleanup().await;
}

#[tokio::test]
async fn requirements_are_matched_and_priority_comes_first() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 100, 1_000).await;
    let gpu_only = Requirements {
        gpu: true,
        ..Requirements::default()
    };
    let gpu_job = farm.render_with(tenant, 2, 1, 90, gpu_only, 3).await;
    let low = farm
        .render_with(tenant, 2, 1, 10, Requirements::default(), 3)
        .await;
    let high = farm
        .render_with(tenant, 2, 1, 80, Requirements::default(), 3)
        .await;
    let cpu = farm.node().await;
    // The GPU job has the highest priority but this node has no GPU.
    let a = farm.claim(cpu).await.unwrap();
    assert_eq!(a.job_id, high.as_uuid());
    let b = farm.claim(cpu).await.unwrap();
    assert_eq!(b.job_id, high.as_uuid());
    let c = farm.claim(cpu).await.unwrap();
    assert_eq!(c.job_id, low.as_uuid());
    assert_ne!(c.job_id, gpu_job.as_uuid());
    db.cleanup().await;
}

#[tokio::test]
async fn a_node_failing_a_job_repeatedly_is_blocklisted_for_it_and_the_job_fails_after_its_retries()
{
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm
        .render_with(tenant, 1, 1, 50, Requirements::default(), 2)
        .await;
    let flaky = farm.node().await;
    let other = farm.node().await;
    let error = Note::parse("Error: out of memory").unwrap();
    for _ in 0..2 {
        let a = farm.claim(flaky).await.expect("retried");
        farm.orch
            .fail(lease(flaky, &a), error.clone())
            .await
            .unwrap();
    }
    // Two failures on this node (the test's blocklist_after): blocklisted.
    assert_eq!(farm.claim(flaky).await, None);
    let events = log(&db.store).await;
    let blocked = of(&events, "node.blocklisted.v1");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].payload["job_id"], job.to_string());
    // Another node takes it and fails it a third time: out of retries.
    let a = farm.claim(other).await.expect("another node may take it");
    farm.orch.fail(lease(other, &a), error).await.unwrap();
    let events = log(&db.store).await;
    let failed = of(&events, "render.job.failed.v1");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload["error"], "Error: out of memory");
    assert!(farm.orch.is_finished(job).await);
    db.cleanup().await;
}

#[tokio::test]
async fn pause_stops_new_leases_and_cancel_tells_running_nodes_to_stop() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm.render(tenant, 3, 1).await;
    let node = farm.node().await;
    let a = farm.claim(node).await.unwrap();
    let l = lease(node, &a);
    farm.orch
        .control(job, tenant, |at| RenderJobCommand::Pause { at })
        .await
        .unwrap();
    assert_eq!(farm.claim(node).await, None, "paused: no new leases");
    // Running tasks of a paused job go on.
    assert!(farm.orch.heartbeat(node, &[l]).await.unwrap().is_empty());
    farm.orch
        .control(job, tenant, |at| RenderJobCommand::Resume { at })
        .await
        .unwrap();
    let b = farm.claim(node).await.expect("resumed");
    // Another tenant cannot touch the job.
    let stranger = farm.tenant(1, 10, 0).await;
    assert!(matches!(
        farm.orch
            .control(job, stranger, |at| RenderJobCommand::Cancel {
                reason: None,
                at
            })
            .await,
        Err(OrchestratorError::NotFound(_))
    ));
    farm.orch
        .control(job, tenant, |at| RenderJobCommand::Cancel {
            reason: None,
            at,
        })
        .await
        .unwrap();
    let lb = lease(node, &b);
    let stop = farm.orch.heartbeat(node, &[l, lb]).await.unwrap();
    assert_eq!(stop, vec![l, lb], "both leases end with the job");
    assert!(farm.orch.complete(l).await.is_err());
    assert_eq!(farm.claim(node).await, None);
    assert_eq!(farm.orch.running_by_tenant().await.get(&tenant), None);
    db.cleanup().await;
}

#[tokio::test]
async fn a_restarted_orchestrator_rebuilds_its_view_from_the_log() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm.render(tenant, 2, 1).await;
    let node = farm.node().await;
    let a = farm.claim(node).await.unwrap();
    drop(farm);
    let again = Farm::open(db.store.clone(), db.clock.clone()).await;
    // The lease survived the restart; the other task is still queued.
    finish(&again.orch, node, &a).await;
    let b = again.claim(node).await.expect("the second task");
    assert_ne!(b.task_id, a.task_id);
    finish(&again.orch, node, &b).await;
    assert!(again.orch.is_finished(job).await);
    db.cleanup().await;
}

#[tokio::test]
async fn a_job_fails_when_every_capable_node_is_blocklisted_for_it() {
    let (farm, db) = farm().await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm
        .render_with(tenant, 1, 1, 50, Requirements::default(), 10)
        .await;
    let only = farm.node().await;
    let error = Note::parse("Error: segfault").unwrap();
    for _ in 0..2 {
        let a = farm.claim(only).await.expect("retried");
        farm.orch
            .fail(lease(only, &a), error.clone())
            .await
            .unwrap();
    }
    assert!(
        farm.orch.is_finished(job).await,
        "no node can run it any more"
    );
    let events = log(&db.store).await;
    let failed = of(&events, "render.job.failed.v1");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].payload["error"]
            .as_str()
            .unwrap()
            .contains("no capable node")
    );
    db.cleanup().await;
}
