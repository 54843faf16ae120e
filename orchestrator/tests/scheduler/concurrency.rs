//! Fair share under saturation, and the rule that no task is ever leased
//! to two nodes at once — with many concurrent claimers on PostgreSQL and
//! SQLite, and with two orchestrator instances sharing one database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use domain::NodeId;
use eventstore::AnyStore;
use orchestrator::Orchestrator;

use crate::{Farm, TestDb, finish, lease, log, of};

#[tokio::test]
async fn running_shares_converge_to_the_tenants_weights() {
    let db = TestDb::sqlite().await;
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    let light = farm.tenant(1, 1_000, 1_000_000).await;
    let heavy = farm.tenant(2, 1_000, 1_000_000).await;
    farm.render(light, 400, 1).await;
    farm.render(heavy, 400, 1).await;
    let mut nodes = Vec::new();
    for _ in 0..30 {
        nodes.push(farm.node().await);
    }
    // Saturate the farm, then keep it saturated: each round the node with
    // the oldest lease finishes and claims again.
    let mut held = std::collections::VecDeque::new();
    for node in &nodes {
        held.push_back((*node, farm.claim(*node).await.expect("saturated")));
    }
    let mut ratios = Vec::new();
    for _ in 0..200 {
        let (node, a) = held.pop_front().unwrap();
        finish(&farm.orch, node, &a).await;
        held.push_back((node, farm.claim(node).await.expect("work left")));
        let running = farm.orch.running_by_tenant().await;
        let (l, h) = (running[&light] as f64, running[&heavy] as f64);
        assert_eq!(l + h, 30.0, "the farm stays saturated");
        ratios.push(h / l);
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    assert!(
        (mean - 2.0).abs() <= 0.2,
        "running shares heavy:light averaged {mean:.3}, not within 10 % of 2"
    );
    db.cleanup().await;
}

/// Runs `nodes` concurrent claim → complete loops over the given
/// orchestrators (node i uses instance i mod n) until every task of the
/// jobs is done, then checks from the log that no task was ever leased to
/// two nodes at once.
async fn race(instances: Vec<Orchestrator>, farm: &Farm, store: &AnyStore, tasks: usize) {
    let nodes: Vec<NodeId> = {
        let mut v = Vec::new();
        for _ in 0..24 {
            v.push(farm.node().await);
        }
        v
    };
    for orch in &instances {
        orch.catch_up().await.unwrap();
    }
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let orch = instances[i % instances.len()].clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while done.load(std::sync::atomic::Ordering::SeqCst) < tasks {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the race did not finish"
                );
                orch.heartbeat(node, &[]).await.unwrap();
                match orch.claim(node).await {
                    Ok(Some(a)) => {
                        finish(&orch, node, &a).await;
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(None) | Err(orchestrator::OrchestratorError::Contention) => {
                        orch.catch_up().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("claim failed: {e}"),
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    // The race ran through the pipelined committer (24 claimers keep a
    // batch waiting while the one before is appended).
    let pipelined: u64 = instances
        .iter()
        .map(|o| o.counter_totals().batches_pipelined)
        .sum();
    assert!(
        pipelined > 0,
        "no batch was decided while another was appended"
    );
    let events = log(store).await;
    let assigned = of(&events, "render.task.assigned.v1");
    let completed = of(&events, "render.task.completed.v1");
    // Every task leased exactly once (nothing expired), completed exactly once.
    let mut leases_per_task: BTreeMap<String, usize> = BTreeMap::new();
    for e in &assigned {
        *leases_per_task
            .entry(e.payload["task_id"].to_string())
            .or_default() += 1;
    }
    assert_eq!(leases_per_task.len(), tasks);
    assert!(
        leases_per_task.values().all(|n| *n == 1),
        "a task was leased twice"
    );
    let completed_tasks: BTreeSet<String> = completed
        .iter()
        .map(|e| e.payload["task_id"].to_string())
        .collect();
    assert_eq!(completed.len(), tasks);
    assert_eq!(completed_tasks.len(), tasks);
    assert!(of(&events, "render.task.requeued.v1").is_empty());
    assert_charged_once_per_completion(&instances, store, tasks).await;
}

/// Money exactly once: one charge per completed task, whatever instance
/// won each race, and every tenant's balance is its top-ups minus its
/// charges. (Charges land just after their completion; an instance's
/// ticker records any still pending.)
async fn assert_charged_once_per_completion(
    instances: &[Orchestrator],
    store: &AnyStore,
    tasks: usize,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let events = loop {
        let events = log(store).await;
        if of(&events, "tenant.credit_charged.v1").len() >= tasks
            || std::time::Instant::now() > deadline
        {
            break events;
        }
        for orch in instances {
            orch.catch_up().await.unwrap();
            orch.tick().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let charges = of(&events, "tenant.credit_charged.v1");
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for e in &charges {
        *per_task
            .entry(e.payload["task_id"].to_string())
            .or_default() += 1;
    }
    let completed: BTreeSet<String> = of(&events, "render.task.completed.v1")
        .iter()
        .map(|e| e.payload["task_id"].to_string())
        .collect();
    assert!(
        per_task.values().all(|n| *n == 1),
        "a task was charged more than once: {} charges for {} tasks",
        charges.len(),
        per_task.len()
    );
    assert_eq!(charges.len(), completed.len(), "charges equal completions");
    assert_eq!(per_task.keys().cloned().collect::<BTreeSet<_>>(), completed);
    let mut by_tenant: BTreeMap<String, (i64, i64, (u64, i64))> = BTreeMap::new();
    for e in &events {
        let minor = |field: &str| e.payload[field].as_i64().unwrap_or(0);
        let entry = by_tenant
            .entry(e.payload["tenant_id"].to_string())
            .or_default();
        match e.routing_key.as_str() {
            "tenant.credit_added.v1" => entry.0 += minor("amount_minor"),
            "tenant.credit_charged.v1" => {
                entry.1 += minor("amount_minor");
                if e.stream_version > entry.2.0 {
                    entry.2 = (e.stream_version, minor("balance_after_minor"));
                }
            }
            _ => {}
        }
    }
    for (tenant, (added, charged, (_, balance))) in by_tenant {
        if charged > 0 {
            assert_eq!(added - charged, balance, "tenant {tenant}'s balance");
        }
    }
}

async fn many_claimers(db: TestDb) {
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    let tenant = farm.tenant(1, 10_000, 1_000_000).await;
    farm.render(tenant, 150, 1).await;
    race(vec![farm.orch.clone()], &farm, &db.store, 150).await;
    db.cleanup().await;
}

/// Two orchestrator instances over one database: a farm and a second one.
pub(crate) async fn two_farms(db: &TestDb) -> (Farm, Orchestrator) {
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    let second = Orchestrator::open(
        db.second_instance().await,
        db.clock.clone(),
        crate::config(),
    )
    .await
    .unwrap();
    (farm, second)
}

async fn two_instances(db: TestDb) {
    let (farm, second) = two_farms(&db).await;
    let tenant = farm.tenant(1, 10_000, 1_000_000).await;
    farm.render(tenant, 80, 1).await;
    farm.render(tenant, 70, 1).await;
    race(vec![farm.orch.clone(), second], &farm, &db.store, 150).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_claimers_never_double_lease_on_sqlite() {
    many_claimers(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_claimers_never_double_lease_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        many_claimers(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orchestrator_instances_sharing_postgres_never_double_lease() {
    if let Some(db) = TestDb::postgres().await {
        two_instances(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orchestrator_instances_sharing_sqlite_never_double_lease() {
    two_instances(TestDb::sqlite().await).await;
}

/// Heartbeats are not events: a node that talks to one instance must still
/// count as alive for the others, and one that falls silent must be judged
/// by an instance that never heard from it.
async fn liveness_is_shared_between_instances(db: TestDb) {
    let (farm, second) = two_farms(&db).await;
    let tenant = farm.tenant(1, 10, 1_000_000).await;
    farm.render(tenant, 1, 1).await;
    let node = farm.node().await;
    let a = farm.claim(node).await.expect("a task");
    let held = [lease(node, &a)];
    // The second instance learns of the lease from the log (on PostgreSQL,
    // once no older transaction of the cluster holds it back).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while second.check_lease(held[0]).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never reached the second instance"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        second.catch_up().await.unwrap();
    }
    // Three lease lifetimes (30 s each) of a long frame, the node beating
    // to the first instance only; both instances tick.
    for _ in 0..18 {
        farm.clock.advance(chrono::Duration::seconds(5));
        assert!(farm.orch.heartbeat(node, &held).await.unwrap().is_empty());
        farm.orch.tick().await.unwrap();
        second.catch_up().await.unwrap();
        assert_eq!(
            second.tick().await.unwrap(),
            0,
            "the instance the node does not talk to ended its live lease"
        );
        farm.orch.catch_up().await.unwrap();
    }
    let events = log(&db.store).await;
    assert!(of(&events, "render.task.requeued.v1").is_empty());
    assert!(of(&events, "node.offline.v1").is_empty());
    assert!(farm.orch.check_lease(held[0]).await.is_ok());
    // The node falls silent and the instance it talked to is gone: the other
    // one, which never heard from it, takes its lease back.
    farm.clock.advance(chrono::Duration::seconds(31));
    second.catch_up().await.unwrap();
    assert_eq!(second.tick().await.unwrap(), 1);
    // Read through the instance that wrote the verdict, so the read waits
    // for it.
    let events = log(second.store()).await;
    assert_eq!(of(&events, "node.offline.v1").len(), 1);
    let requeued = of(&events, "render.task.requeued.v1");
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].payload["reason"], "node_offline");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_is_shared_between_instances_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        liveness_is_shared_between_instances(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_is_shared_between_instances_on_sqlite() {
    liveness_is_shared_between_instances(TestDb::sqlite().await).await;
}

/// A node that claimed through one instance and reports through another
/// (failover, a round-robin balancer) before that one has read the lease:
/// it is never told to stop a lease it holds, and its reports and upload
/// checks are taken.
async fn reports_through_an_instance_that_has_not_read_the_lease_yet(db: TestDb) {
    let (farm, second) = two_farms(&db).await;
    let tenant = farm.tenant(1, 10, 1_000_000).await;
    farm.render(tenant, 2, 2).await;
    let node = farm.node().await;
    second.catch_up().await.unwrap();
    let a = farm.claim(node).await.expect("a task");
    let held = lease(node, &a);
    // The second instance's view is behind (no follower runs here).
    assert!(
        second.heartbeat(node, &[held]).await.unwrap().is_empty(),
        "a node was told to stop a lease it holds"
    );
    second.progress(held, None, None).await.unwrap();
    assert_eq!(second.check_upload(held, 1).await.unwrap(), None);
    let file = second
        .record_output(held, 1, crate::frame_output(1))
        .await
        .unwrap();
    second.progress(held, Some(1), Some(file)).await.unwrap();
    // The first instance's view is behind now: a start it has not seen is
    // no error, and the completion needs the frames the second recorded.
    farm.orch.progress(held, None, None).await.unwrap();
    let file = farm
        .orch
        .record_output(held, 2, crate::frame_output(2))
        .await
        .unwrap();
    farm.orch.progress(held, Some(2), Some(file)).await.unwrap();
    farm.orch.complete(held).await.unwrap();
    let events = log(farm.orch.store()).await;
    assert_eq!(of(&events, "render.task.completed.v1").len(), 1);
    assert!(of(&events, "render.task.requeued.v1").is_empty());
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_through_a_lagging_instance_are_taken_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        reports_through_an_instance_that_has_not_read_the_lease_yet(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_through_a_lagging_instance_are_taken_on_sqlite() {
    reports_through_an_instance_that_has_not_read_the_lease_yet(TestDb::sqlite().await).await;
}

/// A round-robin balancer: the node's heartbeats (which renew its lease)
/// reach one instance, its other requests (claims for more work) the other.
/// The instance that granted the lease hears the node itself, more recently
/// than the other instance's shared contact, and must still leave the lease
/// to the instance that renews it (one liveness time per node could not
/// tell the two apart, and requeued the running task).
async fn a_node_whose_requests_alternate_between_instances_keeps_its_lease(db: TestDb) {
    let (farm, second) = two_farms(&db).await;
    let tenant = farm.tenant(1, 10, 1_000_000).await;
    farm.render(tenant, 1, 1).await;
    let node = farm.node().await;
    second.catch_up().await.unwrap();
    // The second instance grants the lease.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let a = loop {
        // (On PostgreSQL the node and the render reach it after a moment.)
        if let Ok(Some(a)) = second.claim(node).await {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no task reached the second instance"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        second.catch_up().await.unwrap();
    };
    let held = [lease(node, &a)];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while farm.orch.check_lease(held[0]).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never reached the first instance"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        farm.orch.catch_up().await.unwrap();
    }
    // Three lease lifetimes: heartbeats to the first instance, claims (no
    // more work) to the second, both ticking.
    for round in 0..18 {
        farm.clock.advance(chrono::Duration::seconds(5));
        assert!(farm.orch.heartbeat(node, &held).await.unwrap().is_empty());
        farm.orch.tick().await.unwrap();
        assert!(second.claim(node).await.unwrap().is_none());
        second.catch_up().await.unwrap();
        assert_eq!(
            second.tick().await.unwrap(),
            0,
            "round {round}: the instance that hears claims ended the lease the other renews"
        );
        farm.orch.catch_up().await.unwrap();
    }
    let events = log(&db.store).await;
    assert!(of(&events, "render.task.requeued.v1").is_empty());
    assert!(of(&events, "node.offline.v1").is_empty());
    assert!(second.check_lease(held[0]).await.is_ok());
    // The node dies: within a lease lifetime and a tick, the lease is ended.
    farm.clock.advance(chrono::Duration::seconds(31));
    let mut ended = farm.orch.tick().await.unwrap();
    second.catch_up().await.unwrap();
    ended += second.tick().await.unwrap();
    farm.orch.catch_up().await.unwrap();
    ended += farm.orch.tick().await.unwrap();
    assert_eq!(
        ended, 1,
        "exactly one instance takes the dead node's lease back"
    );
    let events = log(second.store()).await;
    assert_eq!(of(&events, "render.task.requeued.v1").len(), 1);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_requests_alternate_between_instances_keeps_its_lease_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        a_node_whose_requests_alternate_between_instances_keeps_its_lease(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_requests_alternate_between_instances_keeps_its_lease_on_sqlite() {
    a_node_whose_requests_alternate_between_instances_keeps_its_lease(TestDb::sqlite().await).await;
}

/// An instance whose clock runs ten minutes fast wrote a dead node's last
/// contact: the others judge the node by its real silence (a lease
/// lifetime), not by the fast clock's idea of "recently".
async fn a_fast_clock_does_not_keep_a_dead_node_alive(db: TestDb) {
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    let tenant = farm.tenant(1, 10, 1_000_000).await;
    farm.render(tenant, 1, 1).await;
    let node = farm.node().await;
    let a = farm.claim(node).await.expect("a task");
    assert!(
        farm.orch
            .heartbeat(node, &[lease(node, &a)])
            .await
            .unwrap()
            .is_empty()
    );
    farm.orch.tick().await.unwrap();
    // Another instance, ten minutes ahead, heard the node once.
    let fast = eventstore::Clock::now(&*farm.clock) + chrono::Duration::minutes(10);
    db.store
        .record_liveness(uuid::Uuid::new_v4(), &[(node.as_uuid(), fast)])
        .await
        .unwrap();
    // The node is silent from now on.
    let mut requeued = 0;
    for _ in 0..10 {
        farm.clock.advance(chrono::Duration::seconds(5));
        requeued += farm.orch.tick().await.unwrap();
    }
    assert_eq!(
        requeued, 1,
        "50 s of silence ended the lease despite a contact written 10 minutes ahead"
    );
    let events = log(&db.store).await;
    assert_eq!(of(&events, "render.task.requeued.v1").len(), 1);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_clock_does_not_keep_a_dead_node_alive_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        a_fast_clock_does_not_keep_a_dead_node_alive(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_clock_does_not_keep_a_dead_node_alive_on_sqlite() {
    a_fast_clock_does_not_keep_a_dead_node_alive(TestDb::sqlite().await).await;
}
