//! What a consumer bound to the exchange receives.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use eventstore::{AnyStore, RecordedEvent};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::consumer::{Consumer, Received};
use crate::farm::Farm;
use crate::{BROKER, amqp_url, backends, exchange, publish_all, relay, stored};

fn ids(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.to_string()).collect()
}

/// The first delivery of each message id, in arrival order.
fn deduplicated(got: &[Received]) -> Vec<Received> {
    let mut seen = HashSet::new();
    got.iter()
        .filter(|r| seen.insert(r.message_id()))
        .cloned()
        .collect()
}

/// Every stream's events arrived in stream order.
fn assert_stream_order(got: &[Received]) {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for r in got {
        let stream = r.text("stream_id").expect("stream_id header");
        let version = r.int("stream_version").expect("stream_version header");
        let before = last.insert(stream.clone(), version).unwrap_or(0);
        assert_eq!(version, before + 1, "stream {stream} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_complete_renders_arrives_with_its_key_headers_and_a_valid_payload() {
    let Some(url) = amqp_url() else { return };
    let _broker = BROKER.read().await;
    for db in backends().await {
        let exchange = exchange();
        let consumer = Consumer::bind(&url, &exchange, "#").await;
        let only_failures = Consumer::bind(&url, &exchange, "*.*.failed.v1").await;
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        for _ in 0..3 {
            farm.round().await;
        }
        let mut relay = relay(&db.store, &url, &exchange, 37);
        publish_all(&mut relay, &db.store).await;
        let events = stored(&db.store).await;
        assert!(
            events
                .iter()
                .any(|e| e.routing_key == "render.job.completed.v1"),
            "a render completed"
        );
        let got = consumer.wait_for_ids(&ids(&events)).await;
        assert_eq!(got.len(), events.len(), "a quiet run publishes each once");
        for (r, e) in got.iter().zip(&events) {
            // One relay, one channel: global order.
            assert_eq!(r.message_id(), e.event_id.to_string());
            assert_eq!(r.routing_key, e.routing_key);
            let p = &r.properties;
            assert_eq!(p.delivery_mode(), &Some(2), "persistent");
            assert_eq!(
                p.content_type().as_ref().map(|c| c.as_str()),
                Some("application/json")
            );
            assert_eq!(
                p.kind().as_ref().map(|c| c.as_str()),
                Some(e.event_type.as_str())
            );
            let payload: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(payload, e.payload);
            contracts::validate_payload(&r.routing_key, &payload)
                .unwrap_or_else(|err| panic!("{}: {err}", r.routing_key));
            assert_eq!(r.int("global_position"), Some(e.global_position));
            assert_eq!(r.text("event_id"), Some(e.event_id.to_string()));
            assert_eq!(r.text("stream_id"), Some(e.stream_id.to_string()));
            assert_eq!(
                r.text("stream_type").as_deref(),
                Some(e.stream_type.as_str())
            );
            assert_eq!(r.int("stream_version"), Some(e.stream_version as i64));
            assert_eq!(r.text("event_type").as_deref(), Some(e.event_type.as_str()));
            assert_eq!(r.int("schema_version"), Some(i64::from(e.schema_version)));
            assert_eq!(r.text("tenant_id"), e.tenant_id.map(|t| t.to_string()));
            assert_eq!(
                r.text("correlation_id").as_deref(),
                e.metadata["correlation_id"].as_str()
            );
            let actor: serde_json::Value = serde_json::from_str(&r.text("actor").unwrap()).unwrap();
            assert_eq!(actor, e.metadata["actor"]);
            assert_eq!(r.text("hash"), Some(hex::encode(e.hash)));
            assert_eq!(r.text("prev_hash"), Some(hex::encode(e.prev_hash)));
            let at = chrono::DateTime::parse_from_rfc3339(&r.text("recorded_at").unwrap()).unwrap();
            assert_eq!(at, e.recorded_at);
        }
        assert_stream_order(&got);
        // A narrower binding gets exactly its events.
        let failed: Vec<_> = events
            .iter()
            .filter(|e| e.routing_key.ends_with(".failed.v1"))
            .cloned()
            .collect();
        assert!(!failed.is_empty());
        let got_failed = only_failures.wait_for_ids(&ids(&failed)).await;
        assert_eq!(
            got_failed
                .iter()
                .map(Received::message_id)
                .collect::<Vec<_>>(),
            ids(&failed)
        );
        relay.release().await;
        only_failures.delete().await;
        consumer.delete().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_dies_before_its_checkpoint_publishes_again_and_loses_nothing() {
    let Some(url) = amqp_url() else { return };
    let _broker = BROKER.read().await;
    for db in backends().await {
        let exchange = exchange();
        let consumer = Consumer::bind(&url, &exchange, "#").await;
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        farm.round().await;
        let mut first = relay(&db.store, &url, &exchange, 10);
        crate::publish_some(&mut first).await;
        // Confirmed by the broker, then gone before the checkpoint.
        first.fail_next_checkpoint();
        let failed = crate::publish_some_result(&mut first).await;
        assert!(
            matches!(failed, Err(relay::RelayError::Injected)),
            "{failed:?}"
        );
        drop(first);
        // A relay killed at whatever await it was in, several times.
        farm.round().await;
        for wait in [3u64, 11, 29] {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let running = tokio::spawn(relay(&db.store, &url, &exchange, 10).run(stopped));
            tokio::time::sleep(Duration::from_millis(wait)).await;
            running.abort();
            let _ = running.await;
            drop(stop);
        }
        farm.round().await;
        // Each killed relay's session ends a moment after its connection.
        let mut last = relay(&db.store, &url, &exchange, 10);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(last.step().await, Err(relay::RelayError::LockHeld)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the lock was never free"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        publish_all(&mut last, &db.store).await;
        let events = stored(&db.store).await;
        let got = consumer.wait_for_ids(&ids(&events)).await;
        assert!(
            got.len() > events.len(),
            "the batch confirmed before the crash was published again"
        );
        let once = deduplicated(&got);
        assert_eq!(
            once.iter().map(Received::message_id).collect::<Vec<_>>(),
            ids(&events),
            "deduplicated by message_id: every event exactly once, in order"
        );
        assert_stream_order(&once);
        last.release().await;
        consumer.delete().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_stops_the_checkpoint_and_the_rest_is_published_again() {
    let Some(url) = amqp_url() else { return };
    let _broker = BROKER.read().await;
    for db in backends().await {
        let exchange = exchange();
        // A queue that takes 5 messages and refuses the rest: the broker
        // nacks what it cannot route to it.
        let mut arguments = FieldTable::default();
        arguments.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(5));
        arguments.insert(
            ShortString::from("x-overflow"),
            AMQPValue::LongString(LongString::from("reject-publish")),
        );
        let full = Consumer::bind_with(&url, &exchange, "#", arguments, false).await;
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        farm.round().await;
        let events = stored(&db.store).await;
        let mut relay = relay(&db.store, &url, &exchange, 20);
        let status = relay.status();
        assert_eq!(
            crate::publish_some(&mut relay).await,
            5,
            "the confirmed prefix"
        );
        assert_eq!(status.borrow().position, events[4].global_position);
        // Nothing more fits: the next batch's first message is refused and
        // the checkpoint stays.
        let refused = relay.step().await;
        assert!(
            matches!(refused, Err(relay::RelayError::Nacked)),
            "{refused:?}"
        );
        assert_eq!(status.borrow().position, events[4].global_position);
        full.purge().await;
        assert_eq!(crate::publish_some(&mut relay).await, 5);
        assert_eq!(status.borrow().position, events[9].global_position);
        relay.release().await;
        full.delete().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_does_not_confirm_is_an_error() {
    let Some(url) = amqp_url() else { return };
    let _broker = BROKER.read().await;
    let db = crate::TestDb::sqlite().await;
    let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    farm.round().await;
    let events = stored(&db.store).await;
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    // No confirm.select: every confirm is `NotRequested`.
    let channel = conn.create_channel().await.unwrap();
    let result = relay::publish(&channel, "amq.topic", &events[..3]).await;
    assert!(
        matches!(result, Err(relay::RelayError::NotConfirmed)),
        "{result:?}"
    );
    let _ = conn.close(200, "bye".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_database_one_publishes_and_the_other_takes_over() {
    let Some(url) = amqp_url() else { return };
    let _broker = BROKER.read().await;
    let Some(db) = crate::TestDb::postgres().await else {
        return;
    };
    let AnyStore::Postgres(pg) = db.store.clone() else {
        unreachable!()
    };
    let exchange = exchange();
    let consumer = Consumer::bind(&url, &exchange, "#").await;
    let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
    farm.round().await;
    let second = db.second_instance().await;
    let mut a = relay(&db.store, &url, &exchange, 10);
    let mut b = relay(&second, &url, &exchange, 10);
    assert!(crate::publish_some(&mut a).await > 0);
    for _ in 0..3 {
        let refused = b.step().await;
        assert!(
            matches!(refused, Err(relay::RelayError::LockHeld)),
            "{refused:?}"
        );
    }
    assert!(a.status().borrow().active && !b.status().borrow().active);
    // The database drops a's session (a restart, a lost connection).
    let holder: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = ($1::bigint & 4294967295)::oid",
    )
    .bind(relay::LOCK_KEY)
    .fetch_one(pg.pool())
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(pg.pool())
        .await
        .unwrap();
    // a's next checkpoint fails on its dead session; b takes the lock.
    farm.round().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _ = a.step().await;
        if b.step().await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(a.step().await, Err(relay::RelayError::LockHeld)));
    publish_all(&mut b, &second).await;
    let events = stored(&db.store).await;
    let got = consumer.wait_for_ids(&ids(&events)).await;
    assert_eq!(
        deduplicated(&got)
            .iter()
            .map(Received::message_id)
            .collect::<Vec<_>>(),
        ids(&events)
    );
    // Nothing published twice but what a's lost session had not recorded.
    assert!(
        got.len() <= events.len() + 10,
        "{} > {}",
        got.len(),
        events.len()
    );
    b.release().await;
    a.release().await;
    consumer.delete().await;
}

async fn rabbitmqctl(command: &str) {
    let status = tokio::process::Command::new("rabbitmqctl")
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {command}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_stopped_mid_render_loses_nothing() {
    let Some(url) = amqp_url() else { return };
    let _broker = BROKER.write().await;
    let mut running = Vec::new();
    let mut farms = Vec::new();
    for db in backends().await {
        let exchange = exchange();
        let consumer = Consumer::bind(&url, &exchange, "#").await;
        let mut farm = Farm::open(db.store.clone(), db.clock.clone()).await;
        farm.round().await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let r = relay(&db.store, &url, &exchange, 25);
        let status = r.status();
        let task = tokio::spawn(r.run(stopped));
        running.push((stop, task, status));
        farms.push((db, farm, consumer));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    rabbitmqctl("stop_app").await;
    // Renders go on while the broker is away.
    for (_, farm, _) in &mut farms {
        farm.round().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    rabbitmqctl("start_app").await;
    for (_, farm, _) in &mut farms {
        farm.round().await;
    }
    for (db, _, consumer) in farms {
        let events = stored(&db.store).await;
        let got = consumer.wait_for_ids(&ids(&events)).await;
        let once = deduplicated(&got);
        assert_eq!(
            once.iter()
                .map(Received::message_id)
                .collect::<HashSet<_>>(),
            ids(&events).into_iter().collect::<HashSet<_>>()
        );
        assert_stream_order(&once);
        consumer.delete().await;
    }
    for (stop, task, status) in running {
        assert!(
            status.borrow().retries > 0,
            "the relay saw the broker go away"
        );
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
