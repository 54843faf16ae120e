//! The relay to RabbitMQ in a running server (`AMQP_URL`): every event of
//! the store published to the topic exchange (see the `relay` crate); on
//! PostgreSQL one instance publishes, the others wait to take over.

use std::time::Duration;

use eventstore::AnyStore;
use relay::{Relay, RelayConfig, RelayStatus};
use tokio::sync::watch;

/// The relay of a server, stopped when dropped.
pub struct Broker {
    url: String,
    status: watch::Receiver<RelayStatus>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL carries the broker's password: never printed.
        f.debug_struct("Broker")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Starts publishing the store's events to `exchange` at `url`.
    pub fn spawn(store: &AnyStore, url: &str, exchange: &str) -> Self {
        let (stop, stopped) = watch::channel(false);
        let relay = Relay::new(store.clone(), RelayConfig::new(url, exchange));
        let status = relay.status();
        let task = tokio::spawn(relay.run(stopped));
        Self {
            url: url.to_string(),
            status,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// What the relay is doing.
    pub fn status(&self) -> RelayStatus {
        self.status.borrow().clone()
    }

    /// Ready when the relay is connected, or (a standby instance, or one
    /// between reconnects) when the broker accepts a connection now.
    pub async fn ready(&self) -> Result<(), String> {
        if self.status.borrow().connected {
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_secs(5), relay::check_broker(&self.url)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the broker refused: {e}")),
            Err(_) => Err("the broker did not answer in time".into()),
        }
    }

    /// Stops after the batch in flight and lets go of the lock.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
