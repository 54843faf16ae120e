//! Live messages for WebSocket clients (`contracts/websocket/render-progress.md`).
//!
//! One follower per server reads the store's live subscription (gap-safe,
//! in position order) and turns each event of a render's stream into its
//! message once, whatever the number of watchers; the node API adds what
//! is never stored (fine progress, log lines). Messages go out on bounded
//! broadcast channels, one per watched render and one per watched tenant:
//! sending never waits for a client, and a client that falls a whole
//! channel behind is told so ([`broadcast::error::RecvError::Lagged`]) and
//! disconnected by its session (`public/ws.rs`), never slowing the others.

pub mod messages;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstore::{AnyStore, Subscription};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

/// How many messages a watched render's (or tenant's) channel holds for
/// its slowest client before that client is disconnected.
pub const CHANNEL_CAPACITY: usize = 4096;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A stored event's message (it has a position).
    Event,
    /// Fine progress within a frame (never stored).
    Progress,
    /// New lines of a task attempt's log (sent to clients that follow it).
    Log,
}

/// One message, serialised once and shared by every client it goes to.
#[derive(Debug)]
pub struct Message {
    /// The stored event's global position (events only).
    pub position: Option<i64>,
    /// What it is.
    pub kind: Kind,
    /// The task it is about, for log filters.
    pub task_id: Option<Uuid>,
    /// The JSON text sent (shared, not copied, per client).
    pub text: axum::extract::ws::Utf8Bytes,
}

/// Which messages a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One render's.
    Render(Uuid),
    /// Every render of one tenant.
    Tenant(Uuid),
    /// Every render of every tenant (the farm's operators).
    Farm,
}

#[derive(Debug, Default)]
struct Channels {
    /// The position of the last event sent (every later one is still to come).
    position: i64,
    topics: HashMap<Topic, broadcast::Sender<Arc<Message>>>,
}

#[derive(Debug)]
struct Inner {
    channels: Mutex<Channels>,
    /// Open receivers over every topic (0: events are not even serialised).
    watchers: AtomicUsize,
    delivered: AtomicUsize,
    follower: Mutex<eventstore::task::AbortOnDrop>,
}

/// The live feed; cheap to clone.
#[derive(Debug, Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

/// A client's receiver on one topic, with the position from which the
/// channel carries every event (every event after it, none before).
#[derive(Debug)]
pub struct Watch {
    /// The messages.
    pub receiver: broadcast::Receiver<Arc<Message>>,
    /// The channel carries every event after this position.
    pub from_position: i64,
    topic: Topic,
    live: Live,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.live.inner.watchers.fetch_sub(1, Ordering::Relaxed);
        let mut channels = lock(&self.live.inner.channels);
        // Only this receiver is left: nobody watches the topic any more.
        if channels
            .topics
            .get(&self.topic)
            .is_some_and(|s| s.receiver_count() <= 1)
        {
            channels.topics.remove(&self.topic);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Live {
    /// Follows `store` from `after_position` (the scheduler's position at
    /// start: everything later is sent live).
    pub fn spawn(store: AnyStore, after_position: i64) -> Self {
        let inner = Arc::new(Inner {
            channels: Mutex::new(Channels {
                position: after_position,
                topics: HashMap::new(),
            }),
            watchers: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
            follower: Mutex::default(),
        });
        // The task holds the feed weakly: it ends when the last clone goes.
        let weak = Arc::downgrade(&inner);
        let follower = eventstore::task::spawn_named("live-feed", async move {
            let mut subscription = Subscription::new(store, after_position);
            loop {
                let batch = match subscription.next_batch().await {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::warn!(error = %e, "the live feed cannot read the store; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let Some(inner) = weak.upgrade() else { return };
                Live { inner }.deliver(&batch);
            }
        });
        lock(&inner.follower).push(follower);
        Self { inner }
    }

    /// Sends each event's message to the channels of its render and its
    /// tenant, if anyone watches them.
    fn deliver(&self, batch: &[eventstore::RecordedEvent]) {
        let Some(last) = batch.last().map(|e| e.global_position) else {
            return;
        };
        // Nobody watches: nothing to serialise (the position still moves).
        let watched = self.inner.watchers.load(Ordering::Relaxed) > 0;
        // (render, tenant, message): a node's event has no render and goes
        // to the farm's watchers only.
        let built: Vec<(Option<Uuid>, Option<Uuid>, Arc<Message>)> = if watched {
            batch
                .iter()
                .filter_map(|e| {
                    let (render, message) = match messages::event_message(e) {
                        Some(m) => (Some(e.stream_id), m),
                        None => (None, messages::node_message(e)?),
                    };
                    let task_id = task_of(&message);
                    Some((
                        render,
                        e.tenant_id,
                        Arc::new(Message {
                            position: Some(e.global_position),
                            kind: Kind::Event,
                            task_id,
                            text: message.to_string().into(),
                        }),
                    ))
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut channels = lock(&self.inner.channels);
        for (render, tenant, message) in built {
            if let Some(render) = render {
                channels.send(Topic::Render(render), &message);
                if let Some(tenant) = tenant {
                    channels.send(Topic::Tenant(tenant), &message);
                }
            }
            channels.send(Topic::Farm, &message);
        }
        channels.position = last;
        drop(channels);
        self.inner
            .delivered
            .fetch_add(batch.len(), Ordering::Relaxed);
    }

    /// Sends a message that is not stored (progress, log lines) to the
    /// watchers of its render and tenant.
    pub fn publish(&self, tenant: Uuid, render: Uuid, kind: Kind, task_id: Uuid, message: &Value) {
        if self.inner.watchers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut channels = lock(&self.inner.channels);
        let topics = [Topic::Render(render), Topic::Tenant(tenant), Topic::Farm];
        if !topics.iter().any(|t| channels.topics.contains_key(t)) {
            return;
        }
        let message = Arc::new(Message {
            position: None,
            kind,
            task_id: Some(task_id),
            text: message.to_string().into(),
        });
        for topic in topics {
            channels.send(topic, &message);
        }
    }

    /// Starts watching a topic.
    pub fn watch(&self, topic: Topic) -> Watch {
        let mut channels = lock(&self.inner.channels);
        let receiver = channels
            .topics
            .entry(topic)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        self.inner.watchers.fetch_add(1, Ordering::Relaxed);
        Watch {
            receiver,
            from_position: channels.position,
            topic,
            live: self.clone(),
        }
    }

    /// The position of the last event the feed has sent on.
    pub fn position(&self) -> i64 {
        lock(&self.inner.channels).position
    }

    /// Open watches (for metrics and tests).
    pub fn watchers(&self) -> usize {
        self.inner.watchers.load(Ordering::Relaxed)
    }
}

impl Channels {
    fn send(&mut self, topic: Topic, message: &Arc<Message>) {
        if let Some(sender) = self.topics.get(&topic) {
            // Only fails when no receiver is left (the watch is ending).
            let _ = sender.send(message.clone());
        }
    }
}

fn task_of(message: &Value) -> Option<Uuid> {
    message
        .get("task_id")
        .and_then(Value::as_str)
        .and_then(|t| Uuid::parse_str(t).ok())
}
