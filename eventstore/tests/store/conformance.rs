//! The conformance suite: every backend must pass every test here.

use std::collections::HashSet;

use chrono::Duration;
use eventstore::{
    AsOf, ChainError, EventStore, ExpectedVersion, NewEvent, StoreError, Subscription,
    verify_stream,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::{TestDb, meta, t0, tenant_append, tenant_event};

/// Instantiates every conformance test for one backend.
macro_rules! conformance_suite {
    ($backend:ident: $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let Some(db) = $crate::conformance::open(stringify!($backend)).await else { return };
                $crate::conformance::$test(&db).await;
                db.cleanup().await;
            }
        )*
    };
}

macro_rules! all_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite { conformance_suite!(sqlite: $($test),*); }
        mod postgres { conformance_suite!(postgres: $($test),*); }
    };
}

all_backends!(
    append_then_read_back_the_whole_envelope,
    expected_version_is_enforced,
    concurrent_writers_to_one_stream_never_share_a_version,
    append_is_idempotent_by_event_id,
    same_event_id_with_other_content_is_refused,
    catalog_and_stream_ownership_are_enforced,
    hash_chain_verifies_and_detects_tampering,
    stored_events_cannot_be_rewritten,
    read_all_in_batches_sees_everything_once_in_order,
    read_all_of_keeps_the_keys_asked_for_and_says_how_far_it_read,
    read_tenant_sees_only_that_tenant,
    read_stream_as_of_version_position_and_time,
    subscription_catches_up_then_follows_live,
    aggregate_state_can_be_rebuilt_as_of_any_point,
    two_instances_sharing_a_database_never_fork_a_stream,
    two_instances_racing_on_one_stream_keep_one_chain,
    audit_verifies_the_whole_store_and_finds_tampering,
    history_exports_as_json_lines,
    node_keys_are_stored_beside_the_log_and_revocable,
    node_secrets_are_sealed_at_rest_and_resealed_on_rotation,
    user_passwords_are_stored_beside_the_log_unique_by_email,
    append_many_gives_each_request_its_own_result,
    a_large_append_many_reports_the_positions_it_stored,
    node_liveness_is_shared_and_only_moves_forward,
    idempotency_keys_reserve_answer_and_expire,
    a_nonce_is_spent_once_per_scope_until_it_expires,
    view_snapshots_are_kept_newest_and_verified_against_the_log,
);

pub async fn open(backend: &str) -> Option<TestDb> {
    match backend {
        "sqlite" => Some(TestDb::sqlite().await),
        _ => TestDb::postgres().await,
    }
}

/// Every event of the store once at least `at_least` are visible. On
/// PostgreSQL, `read_all` holds back events while any older transaction of
/// the cluster (another test's, say) is still running, so tests wait for it.
async fn all_events(db: &TestDb, at_least: usize) -> Vec<eventstore::RecordedEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let events = db.store.read_all(0, 100_000).await.unwrap();
        if events.len() >= at_least || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

pub async fn append_then_read_back_the_whole_envelope(db: &TestDb) {
    let stream = Uuid::new_v4();
    let events: Vec<NewEvent> = (1..=3).map(tenant_event).collect();
    let result = db
        .store
        .append(tenant_append(
            stream,
            ExpectedVersion::NoStream,
            events.clone(),
        ))
        .await
        .unwrap();
    assert_eq!((result.first_version, result.last_version), (1, 3));
    assert_eq!(result.last_position - result.first_position, 2);
    assert!(!result.already_stored);

    let read = db.store.read_stream(stream, 1, 100).await.unwrap();
    assert_eq!(read.len(), 3);
    for (i, (stored, sent)) in read.iter().zip(&events).enumerate() {
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.stream_id, stream);
        assert_eq!(stored.stream_type, "tenant");
        assert_eq!(stored.stream_version, i as u64 + 1);
        assert_eq!(stored.global_position, result.first_position + i as i64);
        assert_eq!(stored.event_type, "tenant.credit_added");
        assert_eq!(stored.routing_key, "tenant.credit_added.v1");
        assert_eq!(stored.schema_version, 1);
        assert_eq!(stored.tenant_id, Some(stream));
        assert_eq!(stored.payload, sent.payload);
        assert_eq!(stored.typed_metadata().unwrap(), sent.metadata);
        assert_eq!(stored.recorded_at, t0());
    }
    assert_eq!(read[0].prev_hash, [0; 32]);
    assert_eq!(read[1].prev_hash, read[0].hash);
    assert_eq!(db.store.stream_version(stream).await.unwrap(), 3);
    assert_eq!(db.store.stream_version(Uuid::new_v4()).await.unwrap(), 0);
    assert_eq!(db.store.read_stream(stream, 3, 100).await.unwrap().len(), 1);
}

pub async fn expected_version_is_enforced(db: &TestDb) {
    let stream = Uuid::new_v4();
    let append = |expected, n| tenant_append(stream, expected, (0..n).map(tenant_event).collect());
    assert!(matches!(
        db.store.append(append(ExpectedVersion::Exact(1), 1)).await,
        Err(StoreError::WrongExpectedVersion { actual: 0, .. })
    ));
    db.store
        .append(append(ExpectedVersion::NoStream, 2))
        .await
        .unwrap();
    assert!(matches!(
        db.store.append(append(ExpectedVersion::NoStream, 1)).await,
        Err(StoreError::WrongExpectedVersion { actual: 2, .. })
    ));
    assert!(matches!(
        db.store.append(append(ExpectedVersion::Exact(1), 1)).await,
        Err(StoreError::WrongExpectedVersion { actual: 2, .. })
    ));
    let r = db
        .store
        .append(append(ExpectedVersion::Exact(2), 1))
        .await
        .unwrap();
    assert_eq!(r.first_version, 3);
    let r = db
        .store
        .append(append(ExpectedVersion::Any, 2))
        .await
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (4, 5));
    // Nothing refused was written.
    assert_eq!(db.store.read_stream(stream, 1, 100).await.unwrap().len(), 5);
    assert!(matches!(
        db.store.append(append(ExpectedVersion::Any, 0)).await,
        Err(StoreError::EmptyAppend)
    ));
}

pub async fn concurrent_writers_to_one_stream_never_share_a_version(db: &TestDb) {
    let stream = Uuid::new_v4();
    let writers = 8;
    let per_writer = 10;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            let mut done = 0;
            while done < per_writer {
                let version = store.stream_version(stream).await.unwrap();
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                match store
                    .append(tenant_append(stream, expected, vec![tenant_event(done)]))
                    .await
                {
                    Ok(_) => done += 1,
                    Err(StoreError::WrongExpectedVersion { .. }) => conflicts += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = db.store.read_stream(stream, 1, 1000).await.unwrap();
    assert_eq!(events.len(), writers * per_writer as usize);
    assert_eq!(verify_stream(&events), Ok(events.len() as u64));
}

pub async fn append_is_idempotent_by_event_id(db: &TestDb) {
    let stream = Uuid::new_v4();
    let events: Vec<NewEvent> = (0..3).map(tenant_event).collect();
    let first = db
        .store
        .append(tenant_append(
            stream,
            ExpectedVersion::NoStream,
            events.clone(),
        ))
        .await
        .unwrap();
    // The same append again, even with an expectation that no longer holds.
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(0),
    ] {
        let again = db
            .store
            .append(tenant_append(stream, expected, events.clone()))
            .await
            .unwrap();
        assert!(again.already_stored);
        assert_eq!(
            (
                again.first_version,
                again.last_version,
                again.first_position,
                again.last_position
            ),
            (
                first.first_version,
                first.last_version,
                first.first_position,
                first.last_position
            )
        );
    }
    // A later time does not make it new content.
    db.clock.advance(Duration::seconds(5));
    let again = db
        .store
        .append(tenant_append(stream, ExpectedVersion::Any, events.clone()))
        .await
        .unwrap();
    assert!(again.already_stored);
    assert_eq!(all_events(db, 3).await.len(), 3);
}

pub async fn same_event_id_with_other_content_is_refused(db: &TestDb) {
    let stream = Uuid::new_v4();
    let event = tenant_event(1);
    db.store
        .append(tenant_append(
            stream,
            ExpectedVersion::Any,
            vec![event.clone()],
        ))
        .await
        .unwrap();
    let mut changed = event.clone();
    changed.payload = json!({ "n": 2 });
    assert!(matches!(
        db.store.append(tenant_append(stream, ExpectedVersion::Any, vec![changed])).await,
        Err(StoreError::IdempotencyConflict { event_id }) if event_id == event.event_id
    ));
    // The same id in another stream is refused too.
    assert!(matches!(
        db.store
            .append(tenant_append(
                Uuid::new_v4(),
                ExpectedVersion::Any,
                vec![event.clone()]
            ))
            .await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
    // A batch mixing a stored id with a new one is not a retry.
    assert!(matches!(
        db.store
            .append(tenant_append(
                stream,
                ExpectedVersion::Any,
                vec![tenant_event(5), event.clone()]
            ))
            .await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
    assert_eq!(all_events(db, 1).await.len(), 1);
}

pub async fn catalog_and_stream_ownership_are_enforced(db: &TestDb) {
    let stream = Uuid::new_v4();
    let mut unknown = tenant_event(1);
    unknown.event_type = "tenant.teleported".into();
    assert!(matches!(
        db.store
            .append(tenant_append(stream, ExpectedVersion::Any, vec![unknown]))
            .await,
        Err(StoreError::NotInCatalog { .. })
    ));
    let mut wrong_stream_type = tenant_append(stream, ExpectedVersion::Any, vec![tenant_event(1)]);
    wrong_stream_type.stream_type = "node".into();
    assert!(matches!(
        db.store.append(wrong_stream_type).await,
        Err(StoreError::NotInCatalog { .. })
    ));
    db.store
        .append(tenant_append(
            stream,
            ExpectedVersion::Any,
            vec![tenant_event(1)],
        ))
        .await
        .unwrap();
    let mut other_tenant = tenant_append(stream, ExpectedVersion::Any, vec![tenant_event(2)]);
    other_tenant.tenant_id = Some(Uuid::new_v4());
    assert!(matches!(
        db.store.append(other_tenant).await,
        Err(StoreError::StreamMismatch { .. })
    ));
    assert_eq!(all_events(db, 1).await.len(), 1);
}

pub async fn hash_chain_verifies_and_detects_tampering(db: &TestDb) {
    let stream = Uuid::new_v4();
    for n in 0..5 {
        db.clock.advance(Duration::milliseconds(1));
        db.store
            .append(tenant_append(
                stream,
                ExpectedVersion::Any,
                vec![tenant_event(n)],
            ))
            .await
            .unwrap();
    }
    let events = db.store.read_stream(stream, 1, 100).await.unwrap();
    assert_eq!(verify_stream(&events), Ok(5));
    // A missing event is a gap.
    let mut gapped = events.clone();
    gapped.remove(2);
    assert!(matches!(
        verify_stream(&gapped),
        Err(ChainError::VersionGap { expected: 3, .. })
    ));

    db.tamper_payload(events[2].global_position, json!({ "n": 1000 }))
        .await;
    let tampered = db.store.read_stream(stream, 1, 100).await.unwrap();
    assert_eq!(tampered[2].payload, json!({ "n": 1000 }));
    assert_eq!(
        verify_stream(&tampered),
        Err(ChainError::Tampered {
            stream_id: stream,
            version: 3
        })
    );
}

pub async fn stored_events_cannot_be_rewritten(db: &TestDb) {
    let stream = Uuid::new_v4();
    let r = db
        .store
        .append(tenant_append(
            stream,
            ExpectedVersion::Any,
            vec![tenant_event(1)],
        ))
        .await
        .unwrap();
    assert_eq!(db.try_rewrite(r.first_position).await, (false, false));
    assert_eq!(all_events(db, 1).await[0].event_type, "tenant.credit_added");
}

pub async fn read_all_in_batches_sees_everything_once_in_order(db: &TestDb) {
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let mut written = HashSet::new();
    for round in 0..5 {
        for stream in &streams {
            let events: Vec<NewEvent> = (0..(round % 3 + 1)).map(tenant_event).collect();
            written.extend(events.iter().map(|e| e.event_id));
            db.store
                .append(tenant_append(*stream, ExpectedVersion::Any, events))
                .await
                .unwrap();
        }
    }
    all_events(db, written.len()).await;
    let mut seen = HashSet::new();
    let mut position = 0;
    loop {
        let batch = db.store.read_all(position, 7).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 7);
        for event in batch {
            assert!(
                event.global_position > position,
                "positions strictly increase"
            );
            position = event.global_position;
            assert!(seen.insert(event.event_id), "each event once");
        }
    }
    assert_eq!(seen, written);
}

pub async fn read_all_of_keeps_the_keys_asked_for_and_says_how_far_it_read(db: &TestDb) {
    // Three kinds of events, interleaved over a few streams.
    let kinds = [
        "tenant.credit_added",
        "tenant.credit_charged",
        "tenant.suspended",
    ];
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut total = 0;
    for n in 0..30 {
        let mut event = tenant_event(n);
        event.event_type = kinds[n as usize % 3].into();
        total += 1;
        db.store
            .append(tenant_append(
                streams[n as usize % streams.len()],
                ExpectedVersion::Any,
                vec![event],
            ))
            .await
            .unwrap();
    }
    let all = all_events(db, total).await;
    let last = all.last().unwrap().global_position;
    let keys = ["tenant.credit_charged.v1", "tenant.suspended.v1"];
    let expected: Vec<Uuid> = all
        .iter()
        .filter(|e| keys.contains(&e.routing_key.as_str()))
        .map(|e| e.event_id)
        .collect();
    assert_eq!(expected.len(), 20);
    // Windows of 7 positions: each read's events lie in its window, and
    // the windows together give each wanted event once, in order.
    let mut position = 0;
    let mut seen = Vec::new();
    let mut reads = 0;
    loop {
        let read = db.store.read_all_of(position, &keys, 7).await.unwrap();
        if read.through == position {
            break;
        }
        reads += 1;
        let window: Vec<i64> = all
            .iter()
            .map(|e| e.global_position)
            .filter(|p| *p > position)
            .take(7)
            .collect();
        assert_eq!(
            read.through,
            *window.last().unwrap(),
            "read through its window"
        );
        for event in &read.events {
            assert!(event.global_position > position && event.global_position <= read.through);
            assert!(
                keys.contains(&event.routing_key.as_str()),
                "only the keys asked for"
            );
            seen.push(event.event_id);
        }
        position = read.through;
    }
    assert_eq!(reads, 30usize.div_ceil(7));
    assert_eq!(position, last);
    assert_eq!(seen, expected, "each wanted event once, in position order");
    // The whole envelope, as `read_all` gives it.
    let one = db.store.read_all_of(0, &keys, 100).await.unwrap();
    let from_all: Vec<_> = all
        .iter()
        .filter(|e| keys.contains(&e.routing_key.as_str()))
        .cloned()
        .collect();
    assert_eq!(one.events, from_all);
    // Keys with no events (or unknown to the catalog) still move the reader on.
    let none = db
        .store
        .read_all_of(0, &["render.job.completed.v1", "no.such.key.v1"], 100)
        .await
        .unwrap();
    assert!(none.events.is_empty());
    assert_eq!(none.through, last);
    let after = db.store.read_all_of(last, &keys, 100).await.unwrap();
    assert!(after.events.is_empty());
    assert_eq!(
        after.through, last,
        "nothing new: through stays where it was"
    );
}

pub async fn read_tenant_sees_only_that_tenant(db: &TestDb) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for n in 0..3 {
        db.store
            .append(tenant_append(
                a,
                ExpectedVersion::Any,
                vec![tenant_event(n)],
            ))
            .await
            .unwrap();
        db.store
            .append(tenant_append(
                b,
                ExpectedVersion::Any,
                vec![tenant_event(n)],
            ))
            .await
            .unwrap();
    }
    all_events(db, 6).await;
    let only_a = db.store.read_tenant(a, 0, 100).await.unwrap();
    assert_eq!(only_a.len(), 3);
    assert!(only_a.iter().all(|e| e.tenant_id == Some(a)));
    let after_first = db
        .store
        .read_tenant(a, only_a[0].global_position, 100)
        .await
        .unwrap();
    assert_eq!(after_first.len(), 2);
}

pub async fn read_stream_as_of_version_position_and_time(db: &TestDb) {
    let stream = Uuid::new_v4();
    let mut results = Vec::new();
    for n in 0..4 {
        results.push(
            db.store
                .append(tenant_append(
                    stream,
                    ExpectedVersion::Any,
                    vec![tenant_event(n)],
                ))
                .await
                .unwrap(),
        );
        // Another stream's event between each, so positions and versions differ.
        db.store
            .append(tenant_append(
                Uuid::new_v4(),
                ExpectedVersion::Any,
                vec![tenant_event(n)],
            ))
            .await
            .unwrap();
        db.clock.advance(Duration::minutes(1));
    }
    let versions = |events: Vec<eventstore::RecordedEvent>| {
        events.iter().map(|e| e.stream_version).collect::<Vec<_>>()
    };
    let read = |as_of| db.store.read_stream_as_of(stream, as_of);
    assert_eq!(versions(read(AsOf::End).await.unwrap()), [1, 2, 3, 4]);
    assert_eq!(versions(read(AsOf::Version(2)).await.unwrap()), [1, 2]);
    assert_eq!(
        versions(
            read(AsOf::Position(results[2].first_position))
                .await
                .unwrap()
        ),
        [1, 2, 3]
    );
    assert_eq!(
        versions(
            read(AsOf::Position(results[2].first_position - 1))
                .await
                .unwrap()
        ),
        [1, 2]
    );
    assert_eq!(
        versions(
            read(AsOf::Time(t0() + Duration::seconds(90)))
                .await
                .unwrap()
        ),
        [1, 2]
    );
    assert!(
        read(AsOf::Time(t0() - Duration::seconds(1)))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn subscription_catches_up_then_follows_live(db: &TestDb) {
    let stream = Uuid::new_v4();
    let history: Vec<NewEvent> = (0..5).map(tenant_event).collect();
    db.store
        .append(tenant_append(stream, ExpectedVersion::Any, history))
        .await
        .unwrap();
    let mut subscription = Subscription::new(db.store.clone(), 0)
        .with_batch_size(2)
        .with_poll_interval(std::time::Duration::from_secs(30));
    let mut caught_up = Vec::new();
    while caught_up.len() < 5 {
        caught_up.extend(subscription.next_batch().await.unwrap());
    }
    assert_eq!(
        caught_up
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );

    // Live: the subscriber waits; an append wakes it well before its 30 s poll.
    let store = db.store.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let event = NewEvent {
            metadata: meta(),
            ..tenant_event(6)
        };
        store
            .append(tenant_append(
                stream,
                ExpectedVersion::Exact(5),
                vec![event],
            ))
            .await
            .unwrap();
    });
    let live = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        subscription.next_batch(),
    )
    .await
    .expect("a live event wakes the subscription")
    .unwrap();
    writer.await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].stream_version, 6);
    assert_eq!(subscription.position(), live[0].global_position);
}

pub async fn aggregate_state_can_be_rebuilt_as_of_any_point(db: &TestDb) {
    use domain::{
        Aggregate, AmountMinor, JobId, Label, ShareWeight, TaskId, Tenant, TenantCommand,
        TenantEvent, TenantId,
    };

    let tenant = TenantId::new(Uuid::new_v4()).unwrap();
    let at = t0();
    let money = |minor| AmountMinor::new(minor).unwrap();
    let commands = vec![
        TenantCommand::Create {
            tenant_id: tenant,
            name: Label::parse("Studio Nord").unwrap(),
            weight: ShareWeight::new(2).unwrap(),
            max_running_tasks: 8,
            at,
        },
        TenantCommand::AddCredit {
            amount: money(100),
            reference: Label::parse("inv-1").unwrap(),
            at,
        },
        TenantCommand::ChargeCredit {
            job_id: JobId::new(Uuid::new_v4()).unwrap(),
            task_id: TaskId::new(Uuid::new_v4()).unwrap(),
            render_seconds: 30,
            amount: money(30),
            cap_at_balance: false,
            at,
        },
        TenantCommand::AddCredit {
            amount: money(50),
            reference: Label::parse("inv-2").unwrap(),
            at,
        },
    ];
    let mut state = Tenant::default();
    let mut positions = Vec::new();
    for command in commands {
        let events = state.decide(command).unwrap();
        let version = db.store.stream_version(tenant.as_uuid()).await.unwrap();
        let request = eventstore::AppendRequest {
            stream_id: tenant.as_uuid(),
            stream_type: "tenant".into(),
            tenant_id: Some(tenant.as_uuid()),
            expected: if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            },
            events: events
                .iter()
                .map(|e| NewEvent::from_domain(Uuid::new_v4(), e, meta()))
                .collect(),
        };
        positions.push(db.store.append(request).await.unwrap().last_position);
        state = events.iter().fold(state, |s, e| s.evolve(e));
        db.clock.advance(Duration::minutes(1));
    }
    let balance_as_of = |as_of| async move {
        let stored = db
            .store
            .read_stream_as_of(tenant.as_uuid(), as_of)
            .await
            .unwrap();
        let events: Vec<TenantEvent> = stored.iter().map(|e| e.to_domain().unwrap()).collect();
        Tenant::replay(&events).balance().get()
    };
    assert_eq!(balance_as_of(AsOf::End).await, state.balance().get());
    assert_eq!(balance_as_of(AsOf::End).await, 120);
    assert_eq!(balance_as_of(AsOf::Version(1)).await, 0);
    assert_eq!(balance_as_of(AsOf::Version(2)).await, 100);
    assert_eq!(balance_as_of(AsOf::Position(positions[2])).await, 70);
    assert_eq!(
        balance_as_of(AsOf::Time(t0() + Duration::seconds(90))).await,
        100
    );
}

pub async fn two_instances_sharing_a_database_never_fork_a_stream(db: &TestDb) {
    let a = &db.store;
    let b = db.second_instance().await;
    let stream = Uuid::new_v4();
    let one = |expected| tenant_append(stream, expected, vec![tenant_event(1)]);
    a.append(one(ExpectedVersion::NoStream)).await.unwrap();
    assert_eq!(
        b.append(one(ExpectedVersion::Any))
            .await
            .unwrap()
            .first_version,
        2
    );
    // A's idea of the head is out of date; any-version appends still land on top.
    assert_eq!(
        a.append(one(ExpectedVersion::Any))
            .await
            .unwrap()
            .first_version,
        3
    );
    assert!(matches!(
        b.append(one(ExpectedVersion::Exact(2))).await,
        Err(StoreError::WrongExpectedVersion { actual: 3, .. })
    ));
    assert_eq!(
        b.append(one(ExpectedVersion::Exact(3)))
            .await
            .unwrap()
            .first_version,
        4
    );
    assert!(matches!(
        a.append(one(ExpectedVersion::Exact(3))).await,
        Err(StoreError::WrongExpectedVersion { actual: 4, .. })
    ));
    assert!(matches!(
        a.append(one(ExpectedVersion::NoStream)).await,
        Err(StoreError::WrongExpectedVersion { actual: 4, .. })
    ));
    assert_eq!(
        a.append(one(ExpectedVersion::Exact(4)))
            .await
            .unwrap()
            .first_version,
        5
    );
    let events = a.read_stream(stream, 1, 100).await.unwrap();
    assert_eq!(verify_stream(&events), Ok(5));
}

pub async fn two_instances_racing_on_one_stream_keep_one_chain(db: &TestDb) {
    let instances = [db.store.clone(), db.second_instance().await];
    let stream = Uuid::new_v4();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = instances[w % 2].clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                // Half the writers take any version, half read and expect one.
                let expected = if w % 4 < 2 {
                    ExpectedVersion::Any
                } else {
                    match store.stream_version(stream).await.unwrap() {
                        0 => ExpectedVersion::NoStream,
                        v => ExpectedVersion::Exact(v),
                    }
                };
                let result = store
                    .append(tenant_append(
                        stream,
                        expected,
                        vec![tenant_event(n), tenant_event(n)],
                    ))
                    .await;
                match (expected, result) {
                    (_, Ok(_)) => {}
                    (ExpectedVersion::Any, Err(e)) => panic!("an any-version append failed: {e}"),
                    (_, Err(StoreError::WrongExpectedVersion { .. })) => {}
                    (_, Err(e)) => panic!("unexpected error: {e}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = db.store.read_stream(stream, 1, 1000).await.unwrap();
    assert!(events.len() >= 2 * 30, "every any-version append landed");
    assert_eq!(verify_stream(&events), Ok(events.len() as u64));
}

pub async fn audit_verifies_the_whole_store_and_finds_tampering(db: &TestDb) {
    let streams: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for round in 0..4 {
        for stream in &streams {
            let events = vec![tenant_event(round), tenant_event(round + 10)];
            db.store
                .append(tenant_append(*stream, ExpectedVersion::Any, events))
                .await
                .unwrap();
        }
    }
    all_events(db, 24).await;
    let accept = |_: &str, _: &serde_json::Value| Ok(());
    let mut seen = 0;
    let report = eventstore::verify_all(&db.store, accept, |n| seen = n)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!((report.events, report.streams, seen), (24, 3, 24));

    // The validator is consulted for every payload.
    let picky = |_: &str, p: &serde_json::Value| {
        if p["n"] == 12 {
            Err("n must not be 12".into())
        } else {
            Ok(())
        }
    };
    let report = eventstore::verify_all(&db.store, picky, |_| {})
        .await
        .unwrap();
    assert_eq!(report.problems.len(), 3);
    assert!(matches!(
        report.problems[0],
        eventstore::AuditProblem::Schema { .. }
    ));

    let victim = db
        .store
        .read_stream(streams[1], 3, 1)
        .await
        .unwrap()
        .remove(0);
    db.tamper_payload(victim.global_position, json!({ "n": 99 }))
        .await;
    let report = eventstore::verify_all(&db.store, accept, |_| {})
        .await
        .unwrap();
    assert_eq!(
        report.problems,
        vec![eventstore::AuditProblem::Chain(ChainError::Tampered {
            stream_id: streams[1],
            version: 3
        })]
    );
}

pub async fn history_exports_as_json_lines(db: &TestDb) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for n in 0..3 {
        db.store
            .append(tenant_append(
                a,
                ExpectedVersion::Any,
                vec![tenant_event(n)],
            ))
            .await
            .unwrap();
        db.store
            .append(tenant_append(
                b,
                ExpectedVersion::Any,
                vec![tenant_event(n)],
            ))
            .await
            .unwrap();
    }
    all_events(db, 6).await;
    let export = |scope| async move {
        let mut out = Vec::new();
        let n = eventstore::export_jsonl(&db.store, scope, &mut out)
            .await
            .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(n as usize, lines.len());
        lines
    };
    let all = export(eventstore::ExportScope::All).await;
    assert_eq!(all.len(), 6);
    assert!(
        all.windows(2)
            .all(|w| w[0]["global_position"].as_i64() < w[1]["global_position"].as_i64())
    );
    let tenant = export(eventstore::ExportScope::Tenant(a)).await;
    assert_eq!(tenant.len(), 3);
    assert!(tenant.iter().all(|e| e["tenant_id"] == json!(a)));
    let stream = export(eventstore::ExportScope::Stream(b)).await;
    assert_eq!(
        stream
            .iter()
            .map(|e| e["stream_version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for key in [
        "event_id",
        "routing_key",
        "recorded_at",
        "prev_hash",
        "hash",
        "metadata",
        "payload",
    ] {
        assert!(!all[0][key].is_null(), "{key} is exported");
    }
}

pub async fn node_keys_are_stored_beside_the_log_and_revocable(db: &TestDb) {
    let node = Uuid::new_v4();
    let key = |key_id, byte| eventstore::NodeKey {
        node_id: node,
        key_id,
        secret: vec![byte; 32],
        name: "render-01".into(),
    };
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let vault = eventstore::Vault::new(eventstore::MasterKey::ephemeral().unwrap());
    db.store
        .add_node_key(&key(first, 1), &vault, t0())
        .await
        .unwrap();
    assert_eq!(
        db.store.node_key(node, first, &vault).await.unwrap(),
        Some(key(first, 1))
    );
    assert_eq!(db.store.node_key(node, second, &vault).await.unwrap(), None);
    assert_eq!(
        db.store
            .node_key(Uuid::new_v4(), first, &vault)
            .await
            .unwrap(),
        None
    );
    // Too short a secret is refused.
    let mut short = key(Uuid::new_v4(), 3);
    short.secret.truncate(16);
    assert!(db.store.add_node_key(&short, &vault, t0()).await.is_err());
    // Rotation: the new key works, the old one no longer does.
    db.store
        .add_node_key(&key(second, 2), &vault, t0())
        .await
        .unwrap();
    assert_eq!(
        db.store
            .revoke_node_keys(node, Some(second), t0())
            .await
            .unwrap(),
        1
    );
    assert_eq!(db.store.node_key(node, first, &vault).await.unwrap(), None);
    assert!(
        db.store
            .node_key(node, second, &vault)
            .await
            .unwrap()
            .is_some()
    );
    // Secrets never print, and never reach the event log.
    assert!(!format!("{:?}", key(first, 7)).contains("7, 7"));
    assert!(all_events(db, 0).await.is_empty());
}

pub async fn node_secrets_are_sealed_at_rest_and_resealed_on_rotation(db: &TestDb) {
    use eventstore::{MasterKey, Vault};
    let old = MasterKey::ephemeral().unwrap();
    let vault = Vault::new(old.clone());
    let secret = |byte| vec![byte; 32];
    let key = |key_id, byte| eventstore::NodeKey {
        node_id: Uuid::new_v4(),
        key_id,
        secret: secret(byte),
        name: "render-01".into(),
    };
    let sealed_key = key(Uuid::new_v4(), 0x41);
    db.store
        .add_node_key(&sealed_key, &vault, t0())
        .await
        .unwrap();
    // What the database holds is not the secret.
    let raw = |node_id: Uuid| {
        let store = db.store.clone();
        async move {
            let sql = "SELECT secret FROM node_credentials WHERE node_id = $1";
            let bytes: Vec<u8> = match &store {
                eventstore::AnyStore::Postgres(s) => sqlx::query_scalar(sql)
                    .bind(node_id)
                    .fetch_one(s.pool())
                    .await
                    .unwrap(),
                eventstore::AnyStore::Sqlite(s) => sqlx::query_scalar(sql)
                    .bind(node_id)
                    .fetch_one(s.readers())
                    .await
                    .unwrap(),
            };
            bytes
        }
    };
    let stored = raw(sealed_key.node_id).await;
    assert!(Vault::is_sealed(&stored));
    assert!(
        !stored.windows(8).any(|w| w == [0x41; 8]),
        "plaintext at rest"
    );
    // Another master key cannot open it: an error, never other bytes.
    let stranger = Vault::new(MasterKey::ephemeral().unwrap());
    assert!(
        db.store
            .node_key(sealed_key.node_id, sealed_key.key_id, &stranger)
            .await
            .is_err()
    );
    // A plaintext row of an older store, as it was written before sealing.
    let legacy = key(Uuid::new_v4(), 0x42);
    let insert = "INSERT INTO node_credentials (node_id, key_id, secret, name, created_at) VALUES ($1, $2, $3, $4, $5)";
    match &db.store {
        eventstore::AnyStore::Postgres(s) => {
            sqlx::query(insert)
                .bind(legacy.node_id)
                .bind(legacy.key_id)
                .bind(&legacy.secret)
                .bind(&legacy.name)
                .bind(t0())
                .execute(s.pool())
                .await
                .unwrap();
        }
        eventstore::AnyStore::Sqlite(s) => {
            s.with_writer(async |conn| {
                sqlx::query(insert)
                    .bind(legacy.node_id)
                    .bind(legacy.key_id)
                    .bind(&legacy.secret)
                    .bind(&legacy.name)
                    .bind("2026-11-24T10:00:00.123456Z")
                    .execute(&mut *conn)
                    .await
            })
            .await
            .unwrap();
        }
    }
    // A webhook endpoint's secret, sealed the same way.
    let (endpoint, hook_key) = (Uuid::new_v4(), Uuid::new_v4());
    db.store
        .add_webhook_secret(endpoint, hook_key, &[0x44; 32], &vault)
        .await
        .unwrap();
    assert_eq!(
        db.store
            .webhook_secret(endpoint, hook_key, &vault)
            .await
            .unwrap(),
        Some(vec![0x44; 32])
    );
    assert!(
        db.store
            .webhook_secret(endpoint, hook_key, &stranger)
            .await
            .is_err()
    );
    assert_eq!(
        db.store
            .webhook_secret(Uuid::new_v4(), hook_key, &vault)
            .await
            .unwrap(),
        None
    );
    // An API key's secret, sealed the same way and bound to its tenant.
    let api_row = eventstore::ApiKeySecretRow {
        api_key_id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        secret: vec![0x45; 68],
    };
    db.store.add_api_key_secret(&api_row, &vault).await.unwrap();
    assert_eq!(
        db.store
            .api_key_secret(api_row.api_key_id, &vault)
            .await
            .unwrap()
            .as_ref(),
        Some(&api_row)
    );
    assert!(format!("{api_row:?}").contains("redacted"));
    assert!(
        db.store
            .api_key_secret(api_row.api_key_id, &stranger)
            .await
            .is_err()
    );
    assert_eq!(
        db.store
            .api_key_secret(Uuid::new_v4(), &vault)
            .await
            .unwrap(),
        None
    );
    // Rotation: the new key current, the old one previous; reseal.
    let rotated = Vault::new(MasterKey::ephemeral().unwrap()).with_previous(old);
    assert_eq!(db.store.reseal_secrets(&rotated).await.unwrap(), 4);
    assert_eq!(
        db.store
            .webhook_secret(endpoint, hook_key, &rotated)
            .await
            .unwrap(),
        Some(vec![0x44; 32])
    );
    assert_eq!(
        db.store
            .api_key_secret(api_row.api_key_id, &rotated)
            .await
            .unwrap()
            .map(|r| r.secret),
        Some(api_row.secret.clone())
    );
    assert_eq!(db.store.reseal_secrets(&rotated).await.unwrap(), 0, "once");
    for k in [&sealed_key, &legacy] {
        let stored = raw(k.node_id).await;
        assert!(rotated.is_current(&stored), "sealed under the new key");
        assert_eq!(
            db.store
                .node_key(k.node_id, k.key_id, &rotated)
                .await
                .unwrap()
                .unwrap()
                .secret,
            k.secret
        );
        // The old key alone no longer opens anything.
        assert!(
            db.store
                .node_key(k.node_id, k.key_id, &vault)
                .await
                .is_err()
        );
    }
    // A sealed value moved to another row does not open there.
    let moved = key(Uuid::new_v4(), 0x43);
    db.store.add_node_key(&moved, &rotated, t0()).await.unwrap();
    let other = raw(legacy.node_id).await;
    let update = "UPDATE node_credentials SET secret = $1 WHERE node_id = $2";
    match &db.store {
        eventstore::AnyStore::Postgres(s) => {
            sqlx::query(update)
                .bind(&other)
                .bind(moved.node_id)
                .execute(s.pool())
                .await
                .unwrap();
        }
        eventstore::AnyStore::Sqlite(s) => {
            s.with_writer(async |conn| {
                sqlx::query(update)
                    .bind(&other)
                    .bind(moved.node_id)
                    .execute(&mut *conn)
                    .await
            })
            .await
            .unwrap();
        }
    }
    assert!(
        db.store
            .node_key(moved.node_id, moved.key_id, &rotated)
            .await
            .is_err()
    );
}

pub async fn user_passwords_are_stored_beside_the_log_unique_by_email(db: &TestDb) {
    let row = |user_id, email: &str, verifier: &str| eventstore::UserPassword {
        user_id,
        tenant_id: Uuid::from_u128(7),
        email: email.into(),
        verifier: verifier.into(),
    };
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        db.store.user_password("ann@example.com").await.unwrap(),
        None
    );
    db.store
        .set_user_password(&row(ann, "ann@example.com", "$argon2id$one"), t0())
        .await
        .unwrap();
    assert_eq!(
        db.store.user_password("ann@example.com").await.unwrap(),
        Some(row(ann, "ann@example.com", "$argon2id$one"))
    );
    // Set again: replaced, not duplicated.
    db.store
        .set_user_password(&row(ann, "ann@example.com", "$argon2id$two"), t0())
        .await
        .unwrap();
    assert_eq!(
        db.store
            .user_password("ann@example.com")
            .await
            .unwrap()
            .unwrap()
            .verifier,
        "$argon2id$two"
    );
    // Another user with the same address is refused.
    assert!(
        db.store
            .set_user_password(&row(bob, "ann@example.com", "$argon2id$x"), t0())
            .await
            .is_err()
    );
    // Verifiers never print, and never reach the event log.
    assert!(!format!("{:?}", row(ann, "a@b.c", "$argon2id$secret")).contains("secret"));
    assert!(all_events(db, 0).await.is_empty());
}

pub async fn append_many_gives_each_request_its_own_result(db: &TestDb) {
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let two = || vec![tenant_event(1), tenant_event(2)];
    db.store
        .append(tenant_append(b, ExpectedVersion::NoStream, two()))
        .await
        .unwrap();
    // Another instance moves c on, so this instance's idea of c's head is stale.
    db.store
        .append(tenant_append(c, ExpectedVersion::NoStream, two()))
        .await
        .unwrap();
    db.second_instance()
        .await
        .append(tenant_append(c, ExpectedVersion::Any, two()))
        .await
        .unwrap();
    let mut unknown = tenant_event(3);
    unknown.event_type = "tenant.teleported".into();
    for round in 0..2 {
        let requests = vec![
            tenant_append(
                if round == 0 { a } else { Uuid::new_v4() },
                ExpectedVersion::NoStream,
                two(),
            ),
            tenant_append(b, ExpectedVersion::Exact(2 + 4 * round), two()),
            tenant_append(b, ExpectedVersion::Any, two()),
            tenant_append(b, ExpectedVersion::Exact(1), two()),
            tenant_append(Uuid::new_v4(), ExpectedVersion::Any, vec![unknown.clone()]),
            tenant_append(c, ExpectedVersion::Any, two()),
        ];
        let results = db.store.append_many(requests).await;
        assert_eq!(results.len(), 6);
        let ok: Vec<_> = results
            .iter()
            .map(|r| r.as_ref().ok().map(|r| (r.first_version, r.last_version)))
            .collect();
        assert_eq!(ok[0], Some((1, 2)));
        assert_eq!(ok[1], Some((3 + 4 * round, 4 + 4 * round)));
        assert_eq!(ok[2], Some((5 + 4 * round, 6 + 4 * round)));
        assert!(matches!(
            results[3],
            Err(StoreError::WrongExpectedVersion { .. })
        ));
        assert!(matches!(results[4], Err(StoreError::NotInCatalog { .. })));
        assert_eq!(ok[5], Some((5 + 2 * round, 6 + 2 * round)));
        let positions: Vec<i64> = results.iter().flatten().map(|r| r.first_position).collect();
        assert!(positions.iter().all(|p| *p > 0));
    }
    for stream in [a, b, c] {
        let events = db.store.read_stream(stream, 1, 100).await.unwrap();
        assert_eq!(verify_stream(&events), Ok(events.len() as u64));
    }
    assert_eq!(db.store.stream_version(b).await.unwrap(), 10);
    assert_eq!(db.store.stream_version(c).await.unwrap(), 8);
}

pub async fn a_large_append_many_reports_the_positions_it_stored(db: &TestDb) {
    // 7 streams × 77 events: more rows than one insert statement carries,
    // and not a round number of them.
    let streams: Vec<Uuid> = (0..7).map(|_| Uuid::new_v4()).collect();
    let events = |s: i64| {
        (0..77)
            .map(|i| tenant_event(s * 100 + i))
            .collect::<Vec<_>>()
    };
    for (s, stream) in (0..).zip(&streams).take(3) {
        // Known heads for some streams, unknown for the others.
        db.store
            .append(tenant_append(*stream, ExpectedVersion::NoStream, events(s)))
            .await
            .unwrap();
    }
    let requests = (0..)
        .zip(&streams)
        .map(|(s, stream)| {
            let expected = if s < 3 {
                ExpectedVersion::Exact(77)
            } else {
                ExpectedVersion::Any
            };
            tenant_append(*stream, expected, events(10 + s))
        })
        .collect();
    let results = db.store.append_many(requests).await;
    let stored = all_events(db, 7 * 77 + 3 * 77).await;
    for (s, (stream, result)) in (0..).zip(streams.iter().zip(results)) {
        let result = result.unwrap();
        let base = if s < 3 { 77 } else { 0 };
        assert_eq!(
            (result.first_version, result.last_version),
            (base + 1, base + 77)
        );
        let mine: Vec<_> = stored
            .iter()
            .filter(|e| e.stream_id == *stream && e.stream_version > base)
            .collect();
        assert_eq!(mine.len(), 77);
        assert_eq!(mine[0].global_position, result.first_position);
        assert_eq!(mine[76].global_position, result.last_position);
        for e in &mine {
            let n = (10 + s) * 100 + (e.stream_version - base - 1) as i64;
            assert_eq!(
                e.payload["n"], n,
                "event {} of stream {s}",
                e.stream_version
            );
        }
        let chain = db.store.read_stream(*stream, 1, 1000).await.unwrap();
        assert_eq!(verify_stream(&chain), Ok(base + 77));
    }
}

pub async fn node_liveness_is_shared_and_only_moves_forward(db: &TestDb) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (one, two, three) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let t = t0();
    db.store
        .record_liveness(one, &[(a, t + Duration::seconds(10)), (b, t)])
        .await
        .unwrap();
    // An older contact (from a slower instance) does not move a node back.
    db.store
        .record_liveness(one, &[(a, t), (b, t)])
        .await
        .unwrap();
    let other = db.second_instance().await;
    other
        .record_liveness(two, &[(b, t + Duration::seconds(5)), (b, t)])
        .await
        .unwrap();
    other.record_liveness(two, &[]).await.unwrap();
    // Each instance reads the others' rows only.
    let sorted = |mut v: Vec<(Uuid, chrono::DateTime<chrono::Utc>)>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(db.store.liveness(one).await.unwrap()),
        vec![(b, t + Duration::seconds(5))]
    );
    assert_eq!(
        sorted(other.liveness(two).await.unwrap()),
        sorted(vec![(a, t + Duration::seconds(10)), (b, t)])
    );
    // A third sees the latest of both for each node.
    assert_eq!(
        sorted(db.store.liveness(three).await.unwrap()),
        sorted(vec![
            (a, t + Duration::seconds(10)),
            (b, t + Duration::seconds(5)),
        ])
    );
    // Liveness is beside the log, never in it.
    assert!(all_events(db, 0).await.is_empty());
}

/// An idempotency key is reserved by one request; a retry of the same
/// request waits (in progress) then gets the kept answer; another request
/// with the key is refused; a failed request frees it; a reservation that
/// never answered is taken over after a minute; keys are per tenant and
/// forgotten after a day; two racing reservations, one wins.
pub async fn idempotency_keys_reserve_answer_and_expire(db: &TestDb) {
    use eventstore::{IdempotencyBegin as B, StoredAnswer};
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    let s = &db.store;
    let now = t0();
    assert_eq!(
        s.idempotency_begin(tenant, "k1", "h1", now).await.unwrap(),
        B::Run
    );
    assert_eq!(
        s.idempotency_begin(tenant, "k1", "h1", now).await.unwrap(),
        B::InProgress
    );
    assert_eq!(
        s.idempotency_begin(tenant, "k1", "h2", now).await.unwrap(),
        B::Reused
    );
    // Another tenant's key of the same name is its own.
    assert_eq!(
        s.idempotency_begin(other, "k1", "h2", now).await.unwrap(),
        B::Run
    );
    let answer = StoredAnswer {
        status: 201,
        content_type: Some("application/json".into()),
        body: br#"{"id":1}"#.to_vec(),
    };
    s.idempotency_finish(tenant, "k1", &answer).await.unwrap();
    let later = now + Duration::minutes(5);
    assert_eq!(
        s.idempotency_begin(tenant, "k1", "h1", later)
            .await
            .unwrap(),
        B::Answered(answer.clone())
    );
    assert_eq!(
        s.idempotency_begin(tenant, "k1", "h2", later)
            .await
            .unwrap(),
        B::Reused
    );
    // A failure frees the key; an answered key is not freed.
    assert_eq!(
        s.idempotency_begin(tenant, "k2", "h", now).await.unwrap(),
        B::Run
    );
    s.idempotency_abandon(tenant, "k2").await.unwrap();
    assert_eq!(
        s.idempotency_begin(tenant, "k2", "h", now).await.unwrap(),
        B::Run
    );
    s.idempotency_abandon(tenant, "k1").await.unwrap();
    assert_eq!(
        s.idempotency_begin(tenant, "k1", "h1", later)
            .await
            .unwrap(),
        B::Answered(answer)
    );
    // A reservation that never answered: taken over after a minute only.
    assert_eq!(
        s.idempotency_begin(tenant, "k2", "h", now + Duration::seconds(30))
            .await
            .unwrap(),
        B::InProgress
    );
    assert_eq!(
        s.idempotency_begin(tenant, "k2", "h", now + Duration::seconds(61))
            .await
            .unwrap(),
        B::Run
    );
    // After a day the key is free for anything.
    assert_eq!(
        s.idempotency_begin(tenant, "k1", "h9", now + Duration::hours(25))
            .await
            .unwrap(),
        B::Run
    );
    // Racing reservations of one key: exactly one runs.
    let racers = (0..8).map(|_| {
        let s = s.clone();
        tokio::spawn(async move { s.idempotency_begin(tenant, "race", "h", now).await.unwrap() })
    });
    let results = futures_util::future::join_all(racers).await;
    let runs = results
        .into_iter()
        .filter(|r| r.as_ref().unwrap() == &B::Run)
        .count();
    assert_eq!(runs, 1);
}

/// A nonce is spent once per scope, by whichever instance (two stores on
/// one database) sees it first, until it expires.
pub async fn a_nonce_is_spent_once_per_scope_until_it_expires(db: &TestDb) {
    let other = db.second_instance().await;
    let now = t0();
    let until = now + Duration::minutes(10);
    assert!(
        db.store
            .spend_nonce("key-a", "n1", now, until)
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .spend_nonce("key-a", "n1", now, until)
            .await
            .unwrap()
    );
    assert!(
        !other.spend_nonce("key-a", "n1", now, until).await.unwrap(),
        "replayed to another instance"
    );
    assert!(other.spend_nonce("key-b", "n1", now, until).await.unwrap());
    assert!(
        db.store
            .spend_nonce("key-a", "n2", now, until)
            .await
            .unwrap()
    );
    // Once its request's time has left the window, it is forgotten.
    let later = until + Duration::seconds(1);
    assert!(
        db.store
            .spend_nonce("key-a", "n1", later, later + Duration::minutes(10))
            .await
            .unwrap()
    );
}

/// A view snapshot is kept beside the log (not an event), an older one
/// never replaces a newer one, and reading it back checks it: bytes changed
/// at rest, an event at its position that is not the one it covers, and a
/// position past the log's end are each rejected, never handed out.
pub async fn view_snapshots_are_kept_newest_and_verified_against_the_log(db: &TestDb) {
    use eventstore::{SnapshotRead, ViewSnapshot};
    let tenant = Uuid::new_v4();
    db.store
        .append(tenant_append(
            tenant,
            ExpectedVersion::NoStream,
            (0..3).map(tenant_event).collect(),
        ))
        .await
        .unwrap();
    let events = all_events(db, 3).await;
    let at = |e: &eventstore::RecordedEvent, body: &[u8]| ViewSnapshot {
        format: 1,
        position: e.global_position,
        event_id: e.event_id,
        event_hash: e.hash,
        body: body.to_vec(),
    };
    assert_eq!(
        db.store.load_view_snapshot("scheduler").await.unwrap(),
        SnapshotRead::Missing
    );
    let second = at(&events[1], b"view at two");
    assert!(
        db.store
            .save_view_snapshot("scheduler", &second)
            .await
            .unwrap()
    );
    assert_eq!(
        db.store.load_view_snapshot("scheduler").await.unwrap(),
        SnapshotRead::Verified(second.clone())
    );
    // An older view (a slower instance) does not replace it; a newer does.
    let first = at(&events[0], b"view at one");
    assert!(
        !db.store
            .save_view_snapshot("scheduler", &first)
            .await
            .unwrap()
    );
    let third = at(&events[2], b"view at three");
    assert!(
        db.store
            .save_view_snapshot("scheduler", &third)
            .await
            .unwrap()
    );
    assert_eq!(
        db.store.load_view_snapshot("scheduler").await.unwrap(),
        SnapshotRead::Verified(third.clone())
    );
    // Names are separate; nothing of this is in the log.
    assert_eq!(
        db.store.load_view_snapshot("other").await.unwrap(),
        SnapshotRead::Missing
    );
    assert_eq!(all_events(db, 0).await.len(), 3);

    // Bytes changed at rest.
    db.corrupt_view_snapshot("scheduler").await;
    assert!(matches!(
        db.store.load_view_snapshot("scheduler").await.unwrap(),
        SnapshotRead::Rejected(_)
    ));
    // The log's event at that position is another one (a snapshot of
    // another database, or of a log restored from an older backup).
    let mut foreign = at(&events[2], b"view of another log");
    foreign.event_hash[0] ^= 1;
    assert!(
        db.store
            .save_view_snapshot("scheduler", &foreign)
            .await
            .unwrap()
    );
    assert!(matches!(
        db.store.load_view_snapshot("scheduler").await.unwrap(),
        SnapshotRead::Rejected(_)
    ));
    let mut other_event = at(&events[2], b"view of another log");
    other_event.event_id = events[1].event_id;
    assert!(
        db.store
            .save_view_snapshot("scheduler", &other_event)
            .await
            .unwrap()
    );
    assert!(matches!(
        db.store.load_view_snapshot("scheduler").await.unwrap(),
        SnapshotRead::Rejected(_)
    ));
    // Past the log's end.
    let mut ahead = at(&events[2], b"view of a longer log");
    ahead.position += 1_000;
    assert!(
        db.store
            .save_view_snapshot("scheduler", &ahead)
            .await
            .unwrap()
    );
    assert!(matches!(
        db.store.load_view_snapshot("scheduler").await.unwrap(),
        SnapshotRead::Rejected(_)
    ));
    assert!(db.store.delete_view_snapshot("scheduler").await.unwrap());
    assert_eq!(
        db.store.load_view_snapshot("scheduler").await.unwrap(),
        SnapshotRead::Missing
    );
}
