//! The relay against the real RabbitMQ and both backends, written to by a
//! real orchestrator: every event arrives with its key, headers and a valid
//! payload, in per-stream order; nothing is lost across a broker restart,
//! a crash between confirms and checkpoint, or a relay racing another.

#[allow(dead_code)]
#[path = "../../../eventstore/tests/store/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../../../projections/tests/projections/farm.rs"]
mod farm;

mod consumer;
mod publish;

use eventstore::{AnyStore, EventStore, RecordedEvent};
use relay::{Relay, RelayConfig};

pub use support::{TestDb, amqp_url};

/// Tests that restart the broker take this for writing; the others read.
pub static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Both backends, as a list of fresh stores (PostgreSQL when configured).
pub async fn backends() -> Vec<TestDb> {
    let mut out = vec![TestDb::sqlite().await];
    if let Some(pg) = TestDb::postgres().await {
        out.push(pg);
    }
    out
}

/// An exchange of the test's own.
pub fn exchange() -> String {
    format!("flatrender.test.{}", uuid::Uuid::new_v4().simple())
}

/// A relay to `exchange` with small batches, so that tests cross many.
pub fn relay(store: &AnyStore, url: &str, exchange: &str, batch: usize) -> Relay {
    let mut config = RelayConfig::new(url, exchange);
    config.batch = batch;
    Relay::new(store.clone(), config)
}

/// Every stored event (waits out PostgreSQL's hold-back of events while an
/// older transaction of the cluster is open).
pub async fn stored(store: &AnyStore) -> Vec<RecordedEvent> {
    let head = *store.appended().borrow();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut out: Vec<RecordedEvent> = Vec::new();
        loop {
            let after = out.last().map_or(0, |e| e.global_position);
            let batch = store.read_all(after, 1000).await.unwrap();
            if batch.is_empty() {
                break;
            }
            out.extend(batch);
        }
        if out.last().map_or(0, |e| e.global_position) >= head {
            return out;
        }
        assert!(std::time::Instant::now() < deadline, "events held back");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Steps the relay until it has published up to the store's head.
pub async fn publish_all(relay: &mut Relay, store: &AnyStore) {
    let head = stored(store).await.last().map_or(0, |e| e.global_position);
    let status = relay.status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while status.borrow().position < head {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay did not reach {head}"
        );
        match relay.step().await {
            Ok(0) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Ok(_) => {}
            Err(e) => panic!("relay: {e}"),
        }
    }
}

/// One step that publishes something (PostgreSQL may hold events back
/// for a moment); returns how many were confirmed.
pub async fn publish_some(relay: &mut Relay) -> usize {
    publish_some_result(relay).await.unwrap()
}

/// Like [`publish_some`], with the step's error.
pub async fn publish_some_result(relay: &mut Relay) -> Result<usize, relay::RelayError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match relay.step().await {
            Ok(0) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(0) => panic!("nothing to publish in 30 s"),
            other => return other,
        }
    }
}
