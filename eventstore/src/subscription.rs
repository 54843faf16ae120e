//! Catch-up then live subscriptions to the whole store.

use std::time::Duration;

use tokio::sync::watch;

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::store::{EventStore, READ_BATCH};

/// Follows the store from a position: first everything already stored
/// (catch-up), then new events as they are appended (live). Wake-ups come
/// from the store's [`EventStore::appended`] signal; the data always comes
/// from gap-safe reads, and a slow poll covers a lost wake-up.
#[derive(Debug)]
pub struct Subscription<S> {
    store: S,
    position: i64,
    wake: watch::Receiver<i64>,
    poll: Duration,
    batch: usize,
}

impl<S: EventStore> Subscription<S> {
    /// Starts after `after_position` (0 for the beginning).
    pub fn new(store: S, after_position: i64) -> Self {
        let wake = store.appended();
        Self {
            store,
            position: after_position,
            wake,
            poll: Duration::from_millis(100),
            batch: READ_BATCH,
        }
    }

    /// Sets how often to look for events when no wake-up arrives.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Sets the largest batch returned at once.
    pub fn with_batch_size(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The position of the last event returned.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// The next events after the last ones returned, in position order;
    /// waits until there is at least one.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut backoff = Duration::from_millis(2);
        loop {
            // Mark the current signal as seen before reading, so that an
            // append after the read wakes the wait below.
            let known = *self.wake.borrow_and_update();
            let batch = self.store.read_all(self.position, self.batch).await?;
            if let Some(last) = batch.last() {
                self.position = last.global_position;
                return Ok(batch);
            }
            if known > self.position {
                // Appended but not yet safe to read (an older transaction is
                // still open): look again soon rather than at the next wake-up.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.poll);
                continue;
            }
            backoff = Duration::from_millis(2);
            match tokio::time::timeout(self.poll, self.wake.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_)) => tokio::time::sleep(self.poll).await,
            }
        }
    }
}
