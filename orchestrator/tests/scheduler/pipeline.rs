//! Pipelined group commit across instances: batch n+1 is decided while
//! batch n is being appended, on a view holding n's tentative events. If
//! the store refuses n (another instance wrote one of its streams), n+1
//! must be decided again, never appended: with one event per stream, n+1's
//! expected version is the version the other instance's event now holds,
//! so its append would pass and lease a task that instance leased.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::concurrency::two_farms;
use crate::{TestDb, lease, log, of};

async fn a_batch_decided_after_a_refused_one_is_decided_again(db: TestDb) {
    let (farm, second) = two_farms(&db).await;
    let tenant = farm.tenant(1, 10, 1_000_000).await;
    farm.render(tenant, 2, 1).await;
    let (w, y, z) = (farm.node().await, farm.node().await, farm.node().await);
    let first = farm.claim(w).await.expect("a task for w");
    second.catch_up().await.unwrap();

    // Batch n: w starts its task; its append is held in flight.
    let hold = farm.orch.hold_next_append();
    let orch = farm.orch.clone();
    let held = lease(w, &first);
    let started = tokio::spawn(async move { orch.progress(held, None, None).await });
    hold.entered.await.unwrap();

    // Batch n+1, decided while n is in flight: y claims, on a view where
    // the job's other task is queued.
    let pipelined = farm.orch.counter_totals().batches_pipelined;
    let orch = farm.orch.clone();
    let claimed = tokio::spawn(async move { orch.claim(y).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while farm.orch.counter_totals().batches_pipelined == pipelined {
        assert!(
            std::time::Instant::now() < deadline,
            "the claim was not decided while the batch before it was in flight"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Meanwhile the other instance leases that task to z: the job's stream
    // is now one event past the version batch n expects.
    let for_z = second.claim(z).await.unwrap().expect("a task for z");
    assert_ne!(for_z.task_id, first.task_id);
    hold.release.send(()).unwrap();

    // n is refused and decided again (w's start stands); n+1 is decided
    // again on the reloaded view, where no task is left for y.
    started.await.unwrap().expect("w's start, decided again");
    let for_y = claimed.await.unwrap().unwrap();
    assert!(
        for_y.is_none(),
        "y was leased {for_y:?}, which the other instance leased to z"
    );
    assert_eq!(farm.orch.counter_totals().batches_discarded, 1);

    let events = log(farm.orch.store()).await;
    let assigned = of(&events, "render.task.assigned.v1");
    let tasks: BTreeSet<String> = assigned
        .iter()
        .map(|e| e.payload["task_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        (assigned.len(), tasks.len()),
        (2, 2),
        "each task leased exactly once"
    );
    assert_eq!(of(&events, "render.task.started.v1").len(), 1);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_decided_after_a_refused_one_is_decided_again_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        a_batch_decided_after_a_refused_one_is_decided_again(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_decided_after_a_refused_one_is_decided_again_on_sqlite() {
    a_batch_decided_after_a_refused_one_is_decided_again(TestDb::sqlite().await).await;
}
