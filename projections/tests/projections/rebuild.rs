//! On both backends: the incremental run and a rebuild give the same rows;
//! failures, restarts and concurrent writers change nothing of that.

use crate::farm::Farm;
use crate::{acquired, backends, caught_up, rebuilt, runner, scalar, step_some};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_gives_exactly_the_rows_of_the_incremental_run() {
    for db in backends().await {
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        let mut live = runner(&db.store, 7);
        for _ in 0..4 {
            farm.round().await;
            // Follow the log round by round, as a running server does.
            live.catch_up(|_, _, _| {}).await.unwrap();
        }
        let incremental = caught_up(&mut live, &db.store).await;
        let once = rebuilt(&db.store, &mut live).await;
        assert_eq!(
            incremental, once,
            "rebuild differs from the incremental run"
        );
        let twice = rebuilt(&db.store, &mut live).await;
        assert_eq!(once, twice, "a second rebuild differs from the first");

        // The rows say what the scheduler says.
        for job in farm_jobs(&db.store).await {
            let progress = farm.orch.job_progress(job).await.unwrap();
            let frames_done = scalar(
                &db.store,
                &format!("SELECT frames_done FROM rm_renders WHERE render_id = '{job}'"),
            )
            .await;
            assert_eq!(
                frames_done as u64, progress.frames_done,
                "frames done of {job}"
            );
            let tasks = scalar(
                &db.store,
                &format!("SELECT COUNT(*) FROM rm_tasks WHERE render_id = '{job}'"),
            )
            .await;
            assert_eq!(tasks as usize, progress.tasks);
        }
        for tenant in &farm.tenants {
            let balance = scalar(
                &db.store,
                &format!("SELECT balance_minor FROM rm_tenants WHERE tenant_id = '{tenant}'"),
            )
            .await;
            assert_eq!(Some(balance), farm.orch.balance(*tenant).await);
        }
        let running: i64 = farm
            .orch
            .running_by_tenant()
            .await
            .values()
            .map(|n| i64::from(*n))
            .sum();
        assert_eq!(
            scalar(
                &db.store,
                "SELECT CAST(COALESCE(SUM(running_tasks), 0) AS BIGINT) FROM rm_tenants"
            )
            .await,
            running
        );
        let charged = scalar(
            &db.store,
            "SELECT CAST(COALESCE(SUM(cost_minor), 0) AS BIGINT) FROM rm_renders",
        )
        .await;
        assert!(charged > 0, "charges reached the renders");
        assert_eq!(
            charged,
            scalar(
                &db.store,
                "SELECT CAST(COALESCE(SUM(charged_minor), 0) AS BIGINT) FROM rm_tenant_usage"
            )
            .await
        );
        for status in ["completed", "cancelled"] {
            let n = scalar(
                &db.store,
                &format!("SELECT COUNT(*) FROM rm_renders WHERE status = '{status}'"),
            )
            .await;
            assert!(n > 0, "some render is {status}");
        }
        assert_eq!(
            scalar(
                &db.store,
                "SELECT CAST(SUM(renders_total) AS BIGINT) FROM rm_tenants"
            )
            .await,
            scalar(&db.store, "SELECT COUNT(*) FROM rm_renders").await,
            "each tenant's render count"
        );
        assert!(scalar(&db.store, "SELECT COUNT(*) FROM rm_frames").await > 0);
        assert!(
            scalar(
                &db.store,
                "SELECT COUNT(*) FROM rm_files WHERE kind = 'output'"
            )
            .await
                > 0
        );
        assert_eq!(
            scalar(
                &db.store,
                "SELECT COUNT(*) FROM rm_nodes WHERE status = 'online'"
            )
            .await,
            3
        );
    }
}

/// Every projection's checkpoint.
async fn positions(store: &eventstore::AnyStore) -> Vec<(String, i64)> {
    projections::lag(store)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.name, l.position))
        .collect()
}

async fn farm_jobs(store: &eventstore::AnyStore) -> Vec<domain::JobId> {
    let rows: Vec<String> = match store {
        eventstore::AnyStore::Postgres(s) => sqlx::query_scalar("SELECT render_id FROM rm_renders")
            .fetch_all(s.pool())
            .await
            .unwrap(),
        eventstore::AnyStore::Sqlite(s) => sqlx::query_scalar("SELECT render_id FROM rm_renders")
            .fetch_all(s.readers())
            .await
            .unwrap(),
    };
    assert!(!rows.is_empty());
    rows.iter().map(|r| r.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_rows_and_commit_applies_nothing_twice() {
    for db in backends().await {
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        let mut live = runner(&db.store, 5);
        farm.round().await;
        live.catch_up(|_, _, _| {}).await.unwrap();
        farm.round().await;
        // Part of the second round applied, then a batch that dies after
        // writing its rows, several times over.
        for _ in 0..3 {
            step_some(&mut live).await.unwrap();
            let before = positions(&db.store).await;
            live.fail_next_commit();
            let failed = step_some(&mut live).await;
            assert!(
                matches!(failed, Err(projections::ProjectionError::Injected)),
                "{failed:?}"
            );
            assert_eq!(positions(&db.store).await, before, "a checkpoint moved");
        }
        let incremental = caught_up(&mut live, &db.store).await;
        assert_eq!(incremental, rebuilt(&db.store, &mut live).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_runner_resumes_exactly_where_the_last_one_stopped() {
    for db in backends().await {
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        farm.round().await;
        let mut first = runner(&db.store, 3);
        for _ in 0..4 {
            first.step().await.unwrap();
        }
        // Gone without letting go, as a killed process is.
        drop(first);
        farm.round().await;
        let mut second = runner(&db.store, 4);
        acquired(&mut second).await;
        let resumed = caught_up(&mut second, &db.store).await;
        assert_eq!(resumed, rebuilt(&db.store, &mut second).await);
        // And once more from a checkpoint at the head: nothing to apply.
        let mut third = runner(&db.store, 4);
        assert_eq!(third.catch_up(|_, _, _| {}).await.unwrap(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_writers_append_ends_equal_to_a_quiet_one() {
    for db in backends().await {
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        farm.round().await;
        let mut live = runner(&db.store, 50);
        live.catch_up(|_, _, _| {}).await.unwrap();
        let writer = tokio::spawn(async move {
            for _ in 0..3 {
                farm.round().await;
            }
            farm
        });
        let mut rebuilds = 0;
        while !writer.is_finished() || rebuilds < 2 {
            live.rebuild(&["renders"], |_, _, _| {}).await.unwrap();
            rebuilds += 1;
        }
        let _farm = writer.await.unwrap();
        let during = caught_up(&mut live, &db.store).await;
        assert_eq!(during, rebuilt(&db.store, &mut live).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_by_another_process_rolls_back_the_runners_batch_and_replays() {
    for db in backends().await {
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        farm.round().await;
        let mut live = runner(&db.store, 10);
        live.catch_up(|_, _, _| {}).await.unwrap();
        farm.round().await;
        step_some(&mut live).await.unwrap();
        // An operator's `projections rebuild` elsewhere resets under it.
        let other = db.second_instance().await;
        projections::reset(&other, "renders").await.unwrap();
        let moved = step_some(&mut live).await;
        assert!(
            matches!(moved, Err(projections::ProjectionError::CheckpointMoved(_))),
            "{moved:?}"
        );
        let after = caught_up(&mut live, &db.store).await;
        assert_eq!(after, rebuilt(&db.store, &mut live).await);
        assert!(projections::reset(&db.store, "nonsense").await.is_err());
    }
}
