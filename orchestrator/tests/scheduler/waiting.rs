//! Claims that wait for work (the node API's long poll): idle, they make
//! no claims; a new render wakes as many of them as it has tasks, not all;
//! work they cannot run wakes none of them; and a slot freed under a
//! tenant's quota wakes one.

use std::time::Duration;

use domain::NodeId;
use domain::render_job::Requirements;

use crate::{Farm, TestDb, finish};

/// Spawns a waiting claim per node; returns their handles.
fn wait_all(
    farm: &Farm,
    nodes: &[NodeId],
) -> Vec<tokio::task::JoinHandle<Option<orchestrator::Assignment>>> {
    nodes
        .iter()
        .map(|node| {
            let orch = farm.orch.clone();
            let node = *node;
            tokio::spawn(async move {
                orch.claim_waiting(node, Duration::from_secs(60))
                    .await
                    .unwrap()
            })
        })
        .collect()
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_new_render_wakes_as_many_waiting_claims_as_it_has_tasks() {
    let db = TestDb::sqlite().await;
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    let tenant = farm.tenant(1, 1_000, 1_000_000).await;
    let mut nodes = Vec::new();
    for _ in 0..40 {
        nodes.push(farm.node().await);
    }
    let waiting = wait_all(&farm, &nodes);
    until("every claim waits", async || {
        farm.orch.waiting_claims() == 40
    })
    .await;
    // Idle: nobody claims again while waiting.
    let idle = farm.orch.counter_totals().claims_empty;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        farm.orch.counter_totals().claims_empty,
        idle,
        "idle claims polled"
    );
    // A GPU render: none of these nodes can run it, none is woken.
    let gpu = Requirements {
        gpu: true,
        ..Requirements::default()
    };
    farm.render_with(tenant, 5, 1, 50, gpu, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        farm.orch.counter_totals().claims_empty,
        idle,
        "woken for work they cannot run"
    );
    assert_eq!(farm.orch.waiting_claims(), 40);
    // Ten tasks they can run: ten claims leased, the others never woken.
    farm.render(tenant, 10, 1).await;
    until("ten leases", async || farm.orch.waiting_claims() == 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(farm.orch.waiting_claims(), 30);
    let woken_empty = farm.orch.counter_totals().claims_empty - idle;
    assert_eq!(woken_empty, 0, "claims woken for nothing");
    let mut leased = Vec::new();
    for (node, handle) in nodes.iter().zip(waiting) {
        if handle.is_finished() {
            leased.push((*node, handle.await.unwrap().expect("a lease")));
        } else {
            handle.abort();
        }
    }
    assert_eq!(leased.len(), 10);
    db.cleanup().await;
}

#[tokio::test]
async fn a_slot_freed_under_a_quota_wakes_a_waiting_claim() {
    let db = TestDb::sqlite().await;
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    let tenant = farm.tenant(1, 1, 1_000_000).await;
    farm.render(tenant, 3, 1).await;
    let busy = farm.node().await;
    let a = farm.claim(busy).await.expect("the first task");
    let other = farm.node().await;
    let waiting = wait_all(&farm, &[other]);
    until("the claim waits", async || farm.orch.waiting_claims() == 1).await;
    // At its quota: the tenant's queued tasks wait. The running one ends.
    finish(&farm.orch, busy, &a).await;
    let b = tokio::time::timeout(Duration::from_secs(10), waiting.into_iter().next().unwrap())
        .await
        .expect("woken by the freed slot, not the deadline")
        .unwrap()
        .expect("a lease");
    assert_ne!(b.task_id, a.task_id);
    db.cleanup().await;
}
