//! The relay (SPEC §1, issue 13): every event of the store, in global
//! order, published to a durable topic exchange under its catalog routing
//! key, persistent, with publisher confirms.
//!
//! The checkpoint advances only past events the broker confirmed (the
//! longest confirmed prefix of a batch: a `Nack` stops it there and the
//! rest is published again; a publish answered without a confirm is an
//! error, never a success). So delivery is at least once: after a crash, a
//! broker restart or a lost connection the relay reconnects with backoff
//! and publishes again from its checkpoint, and consumers deduplicate by
//! `message_id` (the event id). One relay per database is active
//! (PostgreSQL: an advisory lock, see [`checkpoint`]).

pub mod checkpoint;
mod error;
pub mod message;

use std::time::Duration;

use eventstore::{AnyStore, EventStore, RecordedEvent};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{
    Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
};
use tokio::sync::watch;

pub use checkpoint::{Checkpoints, LOCK_KEY};
pub use error::RelayError;

/// The exchange the relay publishes to unless configured.
pub const DEFAULT_EXCHANGE: &str = "flatrender.events";

/// Where and how the relay publishes.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `amqp://user:password@host:port/vhost` (a secret: never logged).
    pub amqp_url: String,
    /// The durable topic exchange, declared at each connection.
    pub exchange: String,
    /// Events per batch: published together, their confirms awaited
    /// together, one checkpoint write.
    pub batch: usize,
    /// The checkpoint's name (one per exchange by default).
    pub checkpoint: String,
}

impl RelayConfig {
    /// Publishes to `exchange` through the broker at `amqp_url`.
    pub fn new(amqp_url: impl Into<String>, exchange: impl Into<String>) -> Self {
        let exchange = exchange.into();
        Self {
            amqp_url: amqp_url.into(),
            checkpoint: format!("amqp:{exchange}"),
            exchange,
            batch: 1000,
        }
    }
}

/// What the relay is doing, for `/metrics` and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// This relay holds the database's lock (the active one).
    pub active: bool,
    /// Connected to the broker with confirms on.
    pub connected: bool,
    /// Published and confirmed up to this global position.
    pub position: i64,
    /// The highest position known to be appended (lag = head - position).
    pub head: i64,
    /// Messages confirmed since this relay started.
    pub confirmed: u64,
    /// Batches published again after a `Nack`, a lost connection or an
    /// error since this relay started.
    pub retries: u64,
}

struct Broker {
    connection: Connection,
    channel: Channel,
}

/// The relay of one database to one exchange.
pub struct Relay {
    store: AnyStore,
    config: RelayConfig,
    checkpoints: Checkpoints,
    broker: Option<Broker>,
    /// The checkpoint as last read or written by this relay.
    position: Option<i64>,
    status: watch::Sender<RelayStatus>,
    fail_next: bool,
    /// The next batch, being read while this one is confirmed: (the
    /// position it reads after, the read).
    ahead: Option<(i64, ReadAhead)>,
}

type ReadAhead = tokio::task::JoinHandle<Result<Vec<RecordedEvent>, eventstore::StoreError>>;

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL holds the broker's password: never printed.
        f.debug_struct("Relay")
            .field("exchange", &self.config.exchange)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay of `store` as `config` says; nothing happens until
    /// [`Relay::run`] or [`Relay::step`].
    pub fn new(store: AnyStore, config: RelayConfig) -> Self {
        let checkpoints = Checkpoints::new(store.clone(), config.checkpoint.clone());
        Self {
            store,
            config,
            checkpoints,
            broker: None,
            position: None,
            status: watch::Sender::new(RelayStatus::default()),
            fail_next: false,
            ahead: None,
        }
    }

    /// What the relay is doing, kept current.
    pub fn status(&self) -> watch::Receiver<RelayStatus> {
        self.status.subscribe()
    }

    /// Makes the next batch fail after its confirms and before its
    /// checkpoint, as a crash there would (tests).
    pub fn fail_next_checkpoint(&mut self) {
        self.fail_next = true;
    }

    /// Publishes one batch and moves the checkpoint past its confirmed
    /// prefix; returns how many events were confirmed (0: nothing to
    /// publish now).
    pub async fn step(&mut self) -> Result<usize, RelayError> {
        let result = self.try_step().await;
        if let Err(e) = &result {
            self.position = None;
            if let Some((_, read)) = self.ahead.take() {
                read.abort();
            }
            if matches!(e, RelayError::Broker(_) | RelayError::NotConfirmed) {
                self.disconnect().await;
            }
            if !matches!(e, RelayError::LockHeld) {
                self.status.send_modify(|s| s.retries += 1);
            }
        }
        result
    }

    async fn try_step(&mut self) -> Result<usize, RelayError> {
        let active = self.checkpoints.acquire().await?;
        self.status.send_if_modified(|s| {
            let changed = s.active != active;
            s.active = active;
            changed
        });
        if !active {
            return Err(RelayError::LockHeld);
        }
        let from = match self.position {
            Some(at) => at,
            None => self.checkpoints.load().await?,
        };
        self.position = Some(from);
        let head = *self.store.appended().borrow();
        self.status.send_modify(|s| {
            s.position = from;
            s.head = head.max(from);
        });
        let batch = match self.ahead.take() {
            Some((after, read)) if after == from => read
                .await
                .map_err(|e| eventstore::StoreError::Corrupt(e.to_string()))??,
            Some((_, read)) => {
                read.abort();
                self.store.read_all(from, self.config.batch).await?
            }
            None => self.store.read_all(from, self.config.batch).await?,
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let channel = self.channel().await?;
        let confirms = send(&channel, &self.config.exchange, &batch).await?;
        // A full batch: read the next one while the broker confirms this
        // one (if this one is not confirmed whole, the read is dropped).
        if batch.len() == self.config.batch {
            let (store, after, limit) = (
                self.store.clone(),
                batch[batch.len() - 1].global_position,
                self.config.batch,
            );
            self.ahead = Some((
                after,
                tokio::spawn(async move { store.read_all(after, limit).await }),
            ));
        }
        let confirmed = confirmed(confirms).await?;
        if confirmed == 0 {
            return Err(RelayError::Nacked);
        }
        if std::mem::take(&mut self.fail_next) {
            return Err(RelayError::Injected);
        }
        let to = batch[confirmed - 1].global_position;
        self.checkpoints.advance(from, to).await?;
        self.position = Some(to);
        self.status.send_modify(|s| {
            s.position = to;
            s.head = s.head.max(to);
            s.confirmed += confirmed as u64;
            if confirmed < batch.len() {
                s.retries += 1;
            }
        });
        Ok(confirmed)
    }

    async fn channel(&mut self) -> Result<Channel, RelayError> {
        if let Some(broker) = &self.broker
            && broker.channel.status().connected()
        {
            return Ok(broker.channel.clone());
        }
        self.disconnect().await;
        let connection =
            Connection::connect(&self.config.amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .exchange_declare(
                ShortString::from(self.config.exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        self.status.send_modify(|s| s.connected = true);
        tracing::info!(exchange = %self.config.exchange, "relay: connected to the broker");
        self.broker = Some(Broker {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    async fn disconnect(&mut self) {
        if let Some(broker) = self.broker.take() {
            let _ = broker.connection.close(200, "bye".into()).await;
        }
        self.status.send_modify(|s| s.connected = false);
    }

    /// Lets go of the lock and the broker.
    pub async fn release(&mut self) {
        if let Some((_, read)) = self.ahead.take() {
            read.abort();
        }
        self.disconnect().await;
        self.checkpoints.release().await;
        self.position = None;
        self.status.send_modify(|s| s.active = false);
    }

    /// Follows the log until `stop` turns true: batches as events arrive,
    /// the lock taken again after a lost connection, errors retried with
    /// exponential backoff (0.1 s to 10 s, with jitter).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut appended = self.store.appended();
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            let wait = match self.step().await {
                Ok(0) => {
                    backoff = Duration::from_millis(100);
                    if !self.checkpoints.still_locked().await {
                        continue;
                    }
                    Duration::from_secs(1)
                }
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Err(RelayError::LockHeld) => Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, "relay: batch not published; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    jitter(backoff)
                }
            };
            tokio::select! {
                _ = appended.changed() => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.release().await;
    }
}

/// Between half and all of `wait`, so that relays restarted together do not
/// retry in step.
fn jitter(wait: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    wait / 2 + wait.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// Publishes every event of `batch`, then awaits their confirms; returns
/// the length of the confirmed prefix (a `Nack` ends it).
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    batch: &[RecordedEvent],
) -> Result<usize, RelayError> {
    confirmed(send(channel, exchange, batch).await?).await
}

/// Publishes every event of `batch`; the confirms are still to come.
async fn send(
    channel: &Channel,
    exchange: &str,
    batch: &[RecordedEvent],
) -> Result<Vec<PublisherConfirm>, RelayError> {
    let exchange = ShortString::from(exchange);
    let mut confirms = Vec::with_capacity(batch.len());
    for event in batch {
        let confirm = channel
            .basic_publish(
                exchange.clone(),
                ShortString::from(event.routing_key.as_str()),
                BasicPublishOptions::default(),
                &message::body(event),
                message::properties(event),
            )
            .await?;
        confirms.push(confirm);
    }
    Ok(confirms)
}

/// Awaits the confirms of one batch; the length of its confirmed prefix.
async fn confirmed(confirms: Vec<PublisherConfirm>) -> Result<usize, RelayError> {
    let mut confirmed = 0;
    for confirm in confirms {
        match confirm.await? {
            Confirmation::Ack(_) => confirmed += 1,
            Confirmation::Nack(_) => {
                tracing::warn!(confirmed, "relay: the broker refused a message (nack)");
                break;
            }
            Confirmation::NotRequested => return Err(RelayError::NotConfirmed),
        }
    }
    Ok(confirmed)
}

/// Whether the broker at `amqp_url` accepts a connection (for readiness).
pub async fn check_broker(amqp_url: &str) -> Result<(), RelayError> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let _ = connection.close(200, "bye".into()).await;
    Ok(())
}
