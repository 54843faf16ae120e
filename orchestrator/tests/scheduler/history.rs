//! The scheduler over a long history: finished renders leave its view, and
//! with thousands of them in the log the scheduling decisions are the same
//! as on an empty store (the priority and fair-share rules rerun after a
//! history, on SQLite), also after a restart that rebuilds the view from
//! the log. A retired render comes back into the view when it is retried.

use chrono::Duration;
use domain::render_job::Requirements;
use domain::{JobId, Note, RenderJobCommand, TenantId};

use crate::{Farm, TestDb, finish, lease};

/// Renders finished before the rules run: completed, failed and cancelled.
const HISTORY: usize = 2_000;

/// Fills the log with `n` finished renders of a tenant of their own (every
/// tenth completed, every tenth failed, the rest cancelled; one frame each).
async fn history(farm: &Farm, n: usize) -> TenantId {
    let tenant = farm.tenant(1, 1_000, 1_000_000).await;
    let node = farm.node().await;
    for i in 0..n {
        farm.clock.advance(Duration::milliseconds(1));
        let job = farm
            .render_with(tenant, 1, 1, 50, Requirements::default(), 0)
            .await;
        match i % 10 {
            0 => {
                let a = farm.claim(node).await.expect("the history's task");
                finish(&farm.orch, node, &a).await;
            }
            1 => {
                let a = farm.claim(node).await.expect("the history's task");
                farm.orch
                    .fail(lease(node, &a), Note::parse("crashed").unwrap())
                    .await
                    .unwrap();
            }
            _ => {
                cancel(farm, job, tenant).await;
            }
        }
        farm.orch.heartbeat(node, &[]).await.unwrap();
    }
    // The history's node leaves: the rules below run on their own nodes.
    farm.orch
        .operate_node(node, orchestrator_actor(), |at| {
            domain::NodeCommand::Disable { reason: None, at }
        })
        .await
        .unwrap();
    tenant
}

fn orchestrator_actor() -> eventstore::Actor {
    eventstore::Actor::System {
        component: "test".into(),
    }
}

async fn cancel(farm: &Farm, job: JobId, tenant: TenantId) {
    farm.orch
        .control(job, tenant, |at| RenderJobCommand::Cancel {
            reason: None,
            at,
        })
        .await
        .unwrap();
}

/// The priority rule's decisions: which render each claim of a CPU node
/// got, by name (the renders are cancelled afterwards).
async fn priority_decisions(farm: &Farm) -> Vec<&'static str> {
    let tenant = farm.tenant(1, 100, 1_000).await;
    let gpu_only = Requirements {
        gpu: true,
        ..Requirements::default()
    };
    let mut named = Vec::new();
    for (name, priority, requirements) in [
        ("gpu", 90, gpu_only),
        ("low", 10, Requirements::default()),
        ("high", 80, Requirements::default()),
        ("high too", 80, Requirements::default()),
    ] {
        farm.clock.advance(Duration::milliseconds(1));
        let job = farm
            .render_with(tenant, 2, 1, priority, requirements, 3)
            .await;
        named.push((job, name));
    }
    let cpu = farm.node().await;
    let mut decisions = Vec::new();
    while let Some(a) = farm.claim(cpu).await {
        let name = named
            .iter()
            .find(|(job, _)| job.as_uuid() == a.job_id)
            .map(|(_, name)| *name)
            .expect("a render of this rule");
        decisions.push(name);
        finish(&farm.orch, cpu, &a).await;
    }
    for (job, name) in &named {
        if *name == "gpu" {
            cancel(farm, *job, tenant).await;
        }
    }
    decisions
}

/// The fair-share rule's decisions: under saturation, which tenant (0
/// light, 1 heavy) each claim went to.
async fn fair_share_decisions(farm: &Farm) -> Vec<u8> {
    let light = farm.tenant(1, 1_000, 1_000_000).await;
    let heavy = farm.tenant(2, 1_000, 1_000_000).await;
    farm.clock.advance(Duration::milliseconds(1));
    let light_job = farm.render(light, 200, 1).await;
    farm.clock.advance(Duration::milliseconds(1));
    farm.render(heavy, 200, 1).await;
    let mut nodes = Vec::new();
    for _ in 0..12 {
        nodes.push(farm.node().await);
    }
    let mut decisions = Vec::new();
    let mut held = std::collections::VecDeque::new();
    let which = |a: &orchestrator::Assignment| u8::from(a.job_id != light_job.as_uuid());
    for node in &nodes {
        let a = farm.claim(*node).await.expect("saturated");
        decisions.push(which(&a));
        held.push_back((*node, a));
    }
    for _ in 0..100 {
        let (node, a) = held.pop_front().unwrap();
        finish(&farm.orch, node, &a).await;
        let a = farm.claim(node).await.expect("work left");
        decisions.push(which(&a));
        held.push_back((node, a));
    }
    decisions
}

#[tokio::test]
async fn decisions_over_thousands_of_finished_renders_are_those_of_an_empty_store() {
    let fresh_db = TestDb::sqlite().await;
    let fresh = Farm::open(fresh_db.store.clone(), fresh_db.clock.clone()).await;
    let priority = priority_decisions(&fresh).await;
    let share = fair_share_decisions(&fresh).await;
    assert_eq!(
        priority,
        ["high", "high", "high too", "high too", "low", "low"],
        "priority first, then the older render; the GPU render waits"
    );
    let heavy = share.iter().filter(|t| **t == 1).count();
    assert!(
        heavy > share.len() / 2,
        "the heavier tenant leads: {share:?}"
    );

    let db = TestDb::sqlite().await;
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    history(&farm, HISTORY).await;
    let stats = farm.orch.view_stats().await;
    assert_eq!(
        stats.retired, HISTORY,
        "every finished render left the view"
    );
    assert_eq!(stats.jobs, 0, "{stats:?}");
    assert_eq!(stats.leases, 0, "{stats:?}");
    // The scenes stay (a later render may name one); the frames went.
    assert_eq!(stats.files, HISTORY, "{stats:?}");
    assert_eq!(priority_decisions(&farm).await, priority);
    assert_eq!(fair_share_decisions(&farm).await, share);

    // A restart rebuilds the same view from the log: the finished renders
    // retire as they are read, and the live one is scheduled the same way.
    let live = farm.orch.view_stats().await;
    drop(farm);
    let again = Farm::open(db.store.clone(), db.clock.clone()).await;
    let rebuilt = again.orch.view_stats().await;
    assert_eq!(rebuilt.jobs, live.jobs, "{rebuilt:?} vs {live:?}");
    assert_eq!(rebuilt.schedulable, live.schedulable);
    assert_eq!(rebuilt.retired, live.retired);
    assert_eq!(rebuilt.leases, live.leases);
    fresh_db.cleanup().await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_retired_failed_render_is_read_back_when_retried_and_cancelled() {
    let db = TestDb::sqlite().await;
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    let tenant = farm.tenant(1, 10, 1_000).await;
    let job = farm
        .render_with(tenant, 2, 1, 50, Requirements::default(), 0)
        .await;
    let node = farm.node().await;
    let a = farm.claim(node).await.unwrap();
    let b = farm.claim(node).await.unwrap();
    farm.orch
        .fail(lease(node, &a), Note::parse("crashed").unwrap())
        .await
        .unwrap();
    // Failed, but a lease is still running: it stays in the view.
    assert_eq!(farm.orch.view_stats().await.retired, 0);
    finish(&farm.orch, node, &b).await;
    let stats = farm.orch.view_stats().await;
    assert_eq!((stats.jobs, stats.retired), (0, 1), "{stats:?}");
    // What readers ask of it still answers.
    assert!(farm.orch.is_finished(job).await);
    assert_eq!(farm.orch.tenant_of(job).await, Some(tenant));
    assert_eq!(farm.orch.job_progress(job).await.unwrap().status, "failed");
    assert_eq!(farm.orch.current_outputs(job).await.len(), 1);
    assert!(farm.orch.submission(job).await.is_some());
    // A late report on its task is refused as a stale lease's would be
    // (the task is not in the view: the node API tells it from an unknown
    // task by the read model).
    assert!(farm.orch.complete(lease(node, &b)).await.is_err());
    // Retried: read back, its failed task queued and leased again.
    farm.orch
        .control(job, tenant, |at| RenderJobCommand::RetryFailedTasks { at })
        .await
        .unwrap();
    let again = farm.claim(node).await.expect("the retried task");
    assert_eq!(again.task_id, a.task_id);
    assert_eq!(farm.orch.view_stats().await.retired, 0);
    finish(&farm.orch, node, &again).await;
    assert_eq!(
        farm.orch.job_progress(job).await.unwrap().status,
        "completed"
    );
    assert_eq!(farm.orch.view_stats().await.retired, 1);
    // A command the retired render refuses leaves it retired.
    assert!(
        farm.orch
            .control(job, tenant, |at| RenderJobCommand::Cancel {
                reason: None,
                at
            })
            .await
            .is_err()
    );
    let stats = farm.orch.view_stats().await;
    assert_eq!((stats.jobs, stats.retired), (0, 1), "{stats:?}");
    db.cleanup().await;
}
