//! A consumer written from the contract only (`contracts/events/README.md`,
//! "On RabbitMQ"): a durable queue bound to the exchange, consumed with
//! acks, reconnecting when the broker goes away.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Received {
    pub fn message_id(&self) -> String {
        self.properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default()
    }

    pub fn header(&self, key: &str) -> Option<AMQPValue> {
        self.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(key).cloned())
    }

    pub fn text(&self, key: &str) -> Option<String> {
        match self.header(key)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.header(key)? {
            AMQPValue::LongLongInt(n) => Some(n),
            _ => None,
        }
    }
}

/// A queue bound to `exchange` with `binding`, consumed in the background.
#[derive(Debug)]
pub struct Consumer {
    url: String,
    exchange: String,
    queue: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    pub async fn bind(url: &str, exchange: &str, binding: &str) -> Self {
        Self::bind_with(url, exchange, binding, FieldTable::default(), true).await
    }

    /// `consume: false` only declares and binds (the test reads the queue
    /// itself, or lets it fill).
    pub async fn bind_with(
        url: &str,
        exchange: &str,
        binding: &str,
        arguments: FieldTable,
        consume: bool,
    ) -> Self {
        let queue = format!("{exchange}.q{}", uuid::Uuid::new_v4().simple());
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            ShortString::from(exchange),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await
        .unwrap();
        ch.queue_bind(
            ShortString::from(queue.as_str()),
            ShortString::from(exchange),
            ShortString::from(binding),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
        let got = Arc::new(Mutex::new(Vec::new()));
        let task = if consume {
            tokio::spawn(consume_forever(url.to_string(), queue.clone(), got.clone()))
        } else {
            tokio::spawn(async {})
        };
        Self {
            url: url.to_string(),
            exchange: exchange.to_string(),
            queue,
            got,
            task,
        }
    }

    /// What arrived so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until every one of `ids` arrived at least once.
    pub async fn wait_for_ids(&self, ids: &[String]) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            let seen: std::collections::HashSet<String> =
                got.iter().map(Received::message_id).collect();
            let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
            if missing == 0 {
                // Anything still on its way (a duplicate) lands too.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return self.received();
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} events never arrived",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Empties the queue.
    pub async fn purge(&self) {
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_purge(
            ShortString::from(self.queue.as_str()),
            QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "bye".into()).await;
    }

    /// Removes the queue and the exchange.
    pub async fn delete(self) {
        self.task.abort();
        let conn = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let _ = ch
            .queue_delete(
                ShortString::from(self.queue.as_str()),
                QueueDeleteOptions::default(),
            )
            .await;
        let _ = ch
            .exchange_delete(
                ShortString::from(self.exchange.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = conn.close(200, "bye".into()).await;
    }
}

async fn consume_forever(url: String, queue: String, got: Arc<Mutex<Vec<Received>>>) {
    loop {
        if let Err(e) = consume_once(&url, &queue, &got).await {
            eprintln!("consumer: {e}; reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn consume_once(
    url: &str,
    queue: &str,
    got: &Arc<Mutex<Vec<Received>>>,
) -> Result<(), lapin::Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let mut deliveries = ch
        .basic_consume(
            ShortString::from(queue),
            ShortString::from("relay-test"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        got.lock().unwrap().push(Received {
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties.clone(),
            body: delivery.data.clone(),
        });
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
