//! Relay throughput to the real RabbitMQ against a raw lapin publisher
//! with the same batch size, measured in the same run (see
//! `benches/README.md`).
//!
//! A store is filled with tenant events (a credit top-up each). Then, in
//! alternating rounds on a fresh exchange with one durable queue bound to
//! `#` (capped, so the broker keeps storing without filling up):
//! - raw: the same messages, bodies and properties built beforehand,
//!   published by lapin on a confirming channel `batch` at a time, each
//!   batch's confirms awaited together: what the broker can confirm at
//!   best with this batch size;
//! - relay: `relay::Relay` from checkpoint 0 to the head: reads the log,
//!   builds each message, publishes, awaits the confirms, writes the
//!   checkpoint, batch after batch.
//!
//! `cargo bench -p benches --bench relay`; `FLATRENDER_BENCH_EVENTS`
//! (default 200,000), `FLATRENDER_BENCH_BATCH` (default 1,000),
//! `FLATRENDER_BENCH_ROUNDS` (default 2, best kept),
//! `FLATRENDER_BENCH_BACKEND=postgres|sqlite`. The broker is
//! `FLATRENDER_TEST_AMQP_URL` (else the local default). `cargo test
//! --all-targets` runs it on 2,000 events.

use std::time::Instant;

use chrono::Utc;
use domain::tenant::{CreditAdded, TenantCreated};
use domain::{AmountMinor, DomainEvent, Label, ShareWeight, TenantEvent, TenantId};
use eventstore::{
    Actor, AnyStore, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent,
};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Confirmation, Connection, ConnectionProperties, ExchangeKind};
use uuid::Uuid;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn amqp_url() -> String {
    std::env::var("FLATRENDER_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn ev<E: DomainEvent>(e: &E) -> NewEvent {
    let meta = EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::System {
            component: "bench".into(),
        },
        trace_id: None,
    };
    NewEvent::from_domain(Uuid::new_v4(), e, meta)
}

async fn fill(store: &AnyStore, events: u64) {
    let per_stream = 100;
    let mut written = 0;
    while written < events {
        let tenant = TenantId::new(Uuid::new_v4()).expect("id");
        let mut batch = vec![ev(&TenantEvent::Created(TenantCreated {
            tenant_id: tenant,
            name: Label::parse("bench").expect("label"),
            weight: ShareWeight::new(1).expect("weight"),
            max_running_tasks: 10,
            created_at: Utc::now(),
        }))];
        for i in 1..per_stream.min(events - written) {
            batch.push(ev(&TenantEvent::CreditAdded(CreditAdded {
                tenant_id: tenant,
                amount_minor: AmountMinor::new(100).expect("amount"),
                balance_after_minor: AmountMinor::new(100 * i as i64).expect("amount"),
                reference: Label::parse(format!("top-up {i}")).expect("label"),
                added_at: Utc::now(),
            })));
        }
        written += batch.len() as u64;
        store
            .append(AppendRequest {
                stream_id: tenant.as_uuid(),
                stream_type: "tenant".into(),
                tenant_id: Some(tenant.as_uuid()),
                expected: ExpectedVersion::NoStream,
                events: batch,
            })
            .await
            .expect("append");
    }
}

/// A fresh exchange with a capped durable queue bound to `#`.
async fn exchange(ch: &lapin::Channel) -> String {
    let name = format!("flatrender.bench.{}", Uuid::new_v4().simple());
    ch.exchange_declare(
        ShortString::from(name.as_str()),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-max-length"),
        AMQPValue::LongInt(20_000),
    );
    ch.queue_declare(
        ShortString::from(name.as_str()),
        QueueDeclareOptions::durable(),
        args,
    )
    .await
    .expect("queue");
    ch.queue_bind(
        ShortString::from(name.as_str()),
        ShortString::from(name.as_str()),
        ShortString::from("#"),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    name
}

async fn drop_exchange(ch: &lapin::Channel, name: &str) {
    let _ = ch
        .queue_delete(ShortString::from(name), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(ShortString::from(name), ExchangeDeleteOptions::default())
        .await;
}

async fn raw(url: &str, log: &[eventstore::RecordedEvent], batch: usize) -> f64 {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("broker");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let name = exchange(&ch).await;
    let messages: Vec<_> = log
        .iter()
        .map(|e| {
            (
                ShortString::from(e.routing_key.as_str()),
                relay::message::body(e),
                relay::message::properties(e),
            )
        })
        .collect();
    let exchange = ShortString::from(name.as_str());
    let started = Instant::now();
    for chunk in messages.chunks(batch) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for (key, body, props) in chunk {
            confirms.push(
                ch.basic_publish(
                    exchange.clone(),
                    key.clone(),
                    BasicPublishOptions::default(),
                    body,
                    props.clone(),
                )
                .await
                .expect("publish"),
            );
        }
        for c in confirms {
            assert!(matches!(c.await.expect("confirm"), Confirmation::Ack(_)));
        }
    }
    let rate = log.len() as f64 / started.elapsed().as_secs_f64();
    drop_exchange(&ch, &name).await;
    let _ = conn.close(200, "bye".into()).await;
    rate
}

async fn relayed(url: &str, store: &AnyStore, events: usize, batch: usize, round: u64) -> f64 {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("broker");
    let ch = conn.create_channel().await.expect("channel");
    let name = exchange(&ch).await;
    let mut config = relay::RelayConfig::new(url, name.as_str());
    config.batch = batch;
    config.checkpoint = format!("bench-{round}");
    let mut relay = relay::Relay::new(store.clone(), config);
    let started = Instant::now();
    let mut done = 0;
    while done < events {
        done += relay.step().await.expect("relay");
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    relay.release().await;
    drop_exchange(&ch, &name).await;
    let _ = conn.close(200, "bye".into()).await;
    rate
}

async fn measure(backend: &str, store: &AnyStore, events: u64, batch: usize, rounds: u64) {
    let url = amqp_url();
    let filled = Instant::now();
    fill(store, events).await;
    let fill_s = filled.elapsed().as_secs_f64();
    let mut log = Vec::new();
    loop {
        let after = log
            .last()
            .map_or(0, |e: &eventstore::RecordedEvent| e.global_position);
        let next = store.read_all(after, 10_000).await.expect("read");
        if next.is_empty() {
            break;
        }
        log.extend(next);
    }
    let (mut best_raw, mut best_relay) = (0f64, 0f64);
    for round in 0..rounds {
        best_raw = best_raw.max(raw(&url, &log, batch).await);
        best_relay = best_relay.max(relayed(&url, store, log.len(), batch, round).await);
    }
    println!(
        "| {backend:<8} | {:>9} | {batch:>5} | {fill_s:>6.1} | {best_raw:>12.0} | {best_relay:>12.0} | {:>5.2} |",
        log.len(),
        best_relay / best_raw
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let events = if full {
        env_or("FLATRENDER_BENCH_EVENTS", 200_000)
    } else {
        2_000
    };
    let rounds = if full {
        env_or("FLATRENDER_BENCH_ROUNDS", 2)
    } else {
        1
    };
    let batch = env_or("FLATRENDER_BENCH_BATCH", 1000) as usize;
    let only = std::env::var("FLATRENDER_BENCH_BACKEND").unwrap_or_default();
    println!("Relay to RabbitMQ against a raw lapin publisher, confirms batched ({events} events)");
    println!("| backend  | events    | batch | fill s | raw msg/s    | relay ev/s   | ratio |");
    println!("|----------|-----------|-------|--------|--------------|--------------|-------|");
    if only.is_empty() || only == "postgres" {
        let pg = benches::FreshPg::create(8).await;
        measure(
            "postgres",
            &AnyStore::Postgres(pg.store.clone()),
            events,
            batch,
            rounds,
        )
        .await;
        pg.drop_now().await;
    }
    if only.is_empty() || only == "sqlite" {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = eventstore::SqliteStore::open(&dir.path().join("events.sqlite"))
            .await
            .expect("sqlite");
        measure("sqlite", &AnyStore::Sqlite(store), events, batch, rounds).await;
    }
}
