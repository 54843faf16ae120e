//! Starting from a snapshot of the view: a view started from a snapshot
//! plus the newer events equals (by digest) a view rebuilt from position
//! 0, on both backends; a corrupted, foreign, unreadable or unknown-format
//! snapshot is ignored (the start rebuilds from the log, never wrong), and
//! a stale one only means more events to replay.

use chrono::Duration;
use domain::render_job::Requirements;
use domain::{JobId, Note, RenderJobCommand, TenantId};
use eventstore::{AnyStore, EventStore, SnapshotRead, ViewSnapshot};
use orchestrator::{Orchestrator, SNAPSHOT_NAME};

use crate::{Farm, TestDb, finish, lease, render_frames};

/// Catches the view up to everything this process appended (on
/// PostgreSQL a read may hold back events while another transaction of
/// the cluster is open).
async fn caught_up(orch: &Orchestrator, store: &AnyStore) {
    let appended = *store.appended().borrow();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while orch.position().await < appended {
        assert!(
            std::time::Instant::now() < deadline,
            "the view never reached position {appended}"
        );
        orch.catch_up().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Panics, showing where they differ, unless the two views hold the same.
async fn same_view(a: &Orchestrator, b: &Orchestrator, what: &str) {
    if a.view_digest().await == b.view_digest().await {
        return;
    }
    let (a, b) = (a.view_content().await, b.view_content().await);
    let mut diff = Vec::new();
    for key in a.as_object().unwrap().keys() {
        if a[key] != b[key] {
            diff.push(format!("{key}:\n  {}\n  {}", a[key], b[key]));
        }
    }
    panic!("{what}: the views differ in\n{}", diff.join("\n"));
}

/// A fresh instance's view, caught up, with how it started.
async fn reopen(db: &TestDb) -> Farm {
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    caught_up(&farm.orch, &db.store).await;
    farm
}

async fn control(
    farm: &Farm,
    job: JobId,
    tenant: TenantId,
    command: fn(chrono::DateTime<chrono::Utc>) -> RenderJobCommand,
) {
    farm.orch.control(job, tenant, command).await.unwrap();
}

/// A farm with every kind of thing a view holds: finished renders (retired),
/// a failed render whose other lease still runs, running leases with frames
/// reported, a paused render, a queued one, a disabled node.
struct Busy {
    tenant: TenantId,
    other: TenantId,
    failing: JobId,
    /// The failing render's lease that still runs.
    still_running: orchestrator::Assignment,
    paused: JobId,
    nodes: Vec<domain::NodeId>,
}

async fn busy_farm(farm: &Farm) -> Busy {
    let tenant = farm.tenant(2, 100, 1_000_000).await;
    let other = farm.tenant(1, 3, 1_000_000).await;
    let nodes = [
        farm.node().await,
        farm.node().await,
        farm.node().await,
        farm.node().await,
    ];
    // History: finished renders of both tenants.
    for i in 0..20 {
        farm.clock.advance(Duration::milliseconds(5));
        let owner = if i % 2 == 0 { tenant } else { other };
        let job = farm.render(owner, 2, 2).await;
        if i % 3 == 0 {
            control(farm, job, owner, |at| RenderJobCommand::Cancel {
                reason: None,
                at,
            })
            .await;
        } else {
            let a = farm.claim(nodes[0]).await.expect("a history task");
            assert_eq!(a.job_id, job.as_uuid());
            finish(&farm.orch, nodes[0], &a).await;
        }
    }
    // A render that fails while its other task still runs.
    let failing = farm
        .render_with(tenant, 2, 1, 90, Requirements::default(), 0)
        .await;
    let first = farm.claim(nodes[1]).await.unwrap();
    let second = farm.claim(nodes[2]).await.unwrap();
    assert_eq!(first.job_id, failing.as_uuid());
    assert_eq!(second.job_id, failing.as_uuid());
    farm.orch
        .fail(lease(nodes[1], &first), Note::parse("crashed").unwrap())
        .await
        .unwrap();
    // A running render with frames reported, one paused, one queued.
    farm.clock.advance(Duration::milliseconds(5));
    let running = farm
        .render_with(tenant, 6, 3, 70, Requirements::default(), 2)
        .await;
    let a = farm.claim(nodes[3]).await.unwrap();
    assert_eq!(a.job_id, running.as_uuid());
    render_frames(&farm.orch, nodes[3], &a).await;
    farm.clock.advance(Duration::milliseconds(5));
    let paused = farm.render(other, 4, 1).await;
    control(farm, paused, other, |at| RenderJobCommand::Pause { at }).await;
    farm.clock.advance(Duration::milliseconds(5));
    farm.render(other, 3, 1).await;
    farm.orch.heartbeat(nodes[0], &[]).await.unwrap();
    Busy {
        tenant,
        other,
        failing,
        still_running: second,
        paused,
        nodes: nodes.to_vec(),
    }
}

async fn snapshot_equals_rebuild(db: TestDb) {
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    let busy = busy_farm(&farm).await;
    let nodes = &busy.nodes;
    caught_up(&farm.orch, &db.store).await;
    let covered = farm
        .orch
        .write_snapshot()
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(covered, farm.orch.position().await);
    let at_snapshot = farm.orch.view_digest().await;

    // The log goes on after the snapshot: the failed render's last lease
    // ends (it retires), it is retried (read back), the paused render is
    // cancelled, new work is leased and a running task completes.
    let next = farm.claim(nodes[0]).await;
    farm.orch
        .fail(
            lease(nodes[2], &busy.still_running),
            Note::parse("lost").unwrap(),
        )
        .await
        .unwrap();
    control(&farm, busy.failing, busy.tenant, |at| {
        RenderJobCommand::RetryFailedTasks { at }
    })
    .await;
    control(&farm, busy.paused, busy.other, |at| {
        RenderJobCommand::Cancel { reason: None, at }
    })
    .await;
    if let Some(a) = next {
        finish(&farm.orch, nodes[0], &a).await;
    }
    farm.clock.advance(Duration::milliseconds(5));
    farm.render(busy.tenant, 4, 2).await;
    farm.claim(nodes[1]).await.expect("work for node 1");
    caught_up(&farm.orch, &db.store).await;
    let live = farm.orch.view_digest().await;
    assert_ne!(live, at_snapshot, "the log moved on after the snapshot");

    // From the snapshot and the newer events only.
    let from_snapshot = reopen(&db).await;
    let report = from_snapshot.orch.start_report();
    assert_eq!(report.snapshot_position, Some(covered), "{report:?}");
    assert_eq!(report.snapshot_ignored, None);
    let total = crate::log(&db.store).await.len();
    assert!(
        report.replayed > 0 && report.replayed < total / 2,
        "replayed {} of {total} events",
        report.replayed
    );
    // From position 0.
    assert!(db.store.delete_view_snapshot(SNAPSHOT_NAME).await.unwrap());
    let rebuilt = reopen(&db).await;
    assert_eq!(rebuilt.orch.start_report().snapshot_position, None);
    assert!(rebuilt.orch.start_report().replayed >= total / 2);

    same_view(
        &from_snapshot.orch,
        &rebuilt.orch,
        "from the snapshot vs from the log",
    )
    .await;
    same_view(
        &farm.orch,
        &rebuilt.orch,
        "the instance that ran it all vs from the log",
    )
    .await;
    assert_eq!(
        from_snapshot.orch.view_stats().await,
        rebuilt.orch.view_stats().await
    );

    // The view from the snapshot schedules: it leases what is queued, each
    // task once, and its leases and charges are those of the log.
    let mut leased = std::collections::HashSet::new();
    let node = from_snapshot.node().await;
    while let Some(a) = from_snapshot.claim(node).await {
        assert!(
            leased.insert((a.task_id, a.lease_epoch)),
            "leased twice: {a:?}"
        );
        finish(&from_snapshot.orch, node, &a).await;
    }
    assert!(!leased.is_empty(), "the queued renders were leased");
    caught_up(&rebuilt.orch, &db.store).await;
    caught_up(&from_snapshot.orch, &db.store).await;
    same_view(
        &from_snapshot.orch,
        &rebuilt.orch,
        "both follow the log the same way",
    )
    .await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_from_a_snapshot_equals_one_rebuilt_from_the_log_on_sqlite() {
    snapshot_equals_rebuild(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_from_a_snapshot_equals_one_rebuilt_from_the_log_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        snapshot_equals_rebuild(db).await;
    }
}

/// Starts an instance and checks it ignored the snapshot and still built
/// the view the log gives.
async fn ignored(db: &TestDb, expected: &Orchestrator, what: &str) {
    let farm = reopen(db).await;
    let report = farm.orch.start_report();
    assert_eq!(report.snapshot_position, None, "{what}: {report:?}");
    assert!(report.snapshot_ignored.is_some(), "{what}: {report:?}");
    same_view(&farm.orch, expected, what).await;
}

async fn bad_snapshots_are_ignored(db: TestDb) {
    let farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    busy_farm(&farm).await;
    caught_up(&farm.orch, &db.store).await;
    let expected = &farm.orch;
    farm.orch
        .write_snapshot()
        .await
        .unwrap()
        .expect("a snapshot");
    let SnapshotRead::Verified(good) = db.store.load_view_snapshot(SNAPSHOT_NAME).await.unwrap()
    else {
        panic!("the snapshot just written verifies");
    };

    // Bytes flipped at rest.
    db.corrupt_view_snapshot(SNAPSHOT_NAME).await;
    ignored(&db, expected, "corrupted at rest").await;
    // Bytes that verify but are not a view (a bug, or a hand-written row).
    let restore = |s: &ViewSnapshot| {
        let s = s.clone();
        let store = db.store.clone();
        async move {
            store.delete_view_snapshot(SNAPSHOT_NAME).await.unwrap();
            assert!(store.save_view_snapshot(SNAPSHOT_NAME, &s).await.unwrap());
        }
    };
    restore(&ViewSnapshot {
        body: b"{\"not\": \"a view\"}".to_vec(),
        ..good.clone()
    })
    .await;
    ignored(&db, expected, "undecodable").await;
    // A view that decodes but is filed under another position.
    let mut shifted: serde_json::Value = serde_json::from_slice(&good.body).unwrap();
    shifted["position"] = serde_json::json!(good.position - 1);
    restore(&ViewSnapshot {
        body: serde_json::to_vec(&shifted).unwrap(),
        ..good.clone()
    })
    .await;
    ignored(&db, expected, "filed under another position").await;
    // Another format.
    restore(&ViewSnapshot {
        format: 999,
        ..good.clone()
    })
    .await;
    ignored(&db, expected, "another format").await;
    // The event at its position is not the one it covers (another log).
    let mut foreign = good.clone();
    foreign.event_hash[31] ^= 1;
    restore(&foreign).await;
    ignored(&db, expected, "another log").await;

    // A stale snapshot (the log went on) is used, with more to replay.
    restore(&good).await;
    farm.clock.advance(Duration::milliseconds(5));
    let tenant = farm.tenant(1, 10, 1_000).await;
    farm.render(tenant, 3, 1).await;
    caught_up(&farm.orch, &db.store).await;
    let stale = reopen(&db).await;
    assert_eq!(
        stale.orch.start_report().snapshot_position,
        Some(good.position)
    );
    same_view(&stale.orch, &farm.orch, "stale snapshot").await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_foreign_and_unreadable_snapshots_are_ignored_on_sqlite() {
    bad_snapshots_are_ignored(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_foreign_and_unreadable_snapshots_are_ignored_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        bad_snapshots_are_ignored(db).await;
    }
}
