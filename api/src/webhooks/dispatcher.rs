//! The dispatcher: follows the log's notification-relevant events, records
//! a notification for each endpoint that wants one, and delivers the due
//! ones on their own tasks.
//!
//! Its writes are batched, because on a busy farm they compete with the
//! scheduler for the store: a round's requests for every endpoint, and the
//! outcomes of the attempts that finished since the last round, are one
//! `append_many`. Rounds are at least
//! `WebhookConfig::min_round` apart, read only the events the dispatcher follows
//! ([`EventStore::read_all_of`]), and the checkpoint moves at most once a
//! second (a dispatcher restarted before it asks for nothing twice: the
//! endpoints' streams already hold those requests).

mod deliver;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::notification::NotificationCommand;
use domain::{Aggregate, EndpointId, NotificationId};
use eventstore::{AnyStore, EventStore, Vault};
use relay::Checkpoints;
use tokio::sync::{Mutex, Notify, Semaphore, watch};
use uuid::Uuid;

use super::registry::{self, Registry};
use super::{LOCK_KEY, WebhookConfig, WebhookError, append_request, dispatcher, load};

/// How many positions of the log one read covers.
const SCAN: usize = 5000;

/// How often the checkpoint moves while the dispatcher keeps up.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Deliveries at once.
const SLOTS: usize = 16;

/// What the dispatcher counts (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    /// Notifications delivered by this instance.
    pub delivered: u64,
    /// Attempts that failed on this instance.
    pub failed_attempts: u64,
    /// Notifications abandoned by this instance.
    pub abandoned: u64,
}

/// Commands for endpoints' streams, by endpoint.
type Work = HashMap<EndpointId, (domain::TenantId, Vec<NotificationCommand>)>;

/// The dispatcher of a server.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: AnyStore,
    vault: Arc<Vault>,
    config: WebhookConfig,
    registry: Arc<Mutex<Registry>>,
    in_flight: Arc<std::sync::Mutex<HashSet<NotificationId>>>,
    slots: Arc<Semaphore>,
    counts: Arc<std::sync::Mutex<WebhookCounts>>,
    /// One writer of the endpoints' streams at a time.
    writer: Arc<Mutex<()>>,
    /// Attempts' outcomes waiting for the next round to record them.
    outcomes: Arc<std::sync::Mutex<Vec<Outcome>>>,
    /// Wakes the round when an attempt finished.
    finished: Arc<Notify>,
    /// One HTTP client (and its kept-alive connections) per host and
    /// pinned address.
    clients: Arc<std::sync::Mutex<HashMap<(String, std::net::SocketAddr), reqwest::Client>>>,
    /// Endpoints' signing secrets once opened.
    secrets: Arc<std::sync::Mutex<Secrets>>,
}

/// Signing secrets by endpoint and secret key id.
type Secrets = HashMap<(EndpointId, Uuid), Arc<Vec<u8>>>;

/// An attempt's outcome: the command that records it.
type Outcome = (EndpointId, domain::TenantId, NotificationCommand);

/// Where the dispatcher is in the log.
#[derive(Debug, Default)]
struct Cursor {
    /// The registry is current through here.
    known: i64,
    /// The active dispatcher has requested notifications through here
    /// (`None` until loaded from the checkpoint).
    requested: Option<i64>,
    /// The stored checkpoint, and when it was moved.
    saved: Option<(i64, Instant)>,
}

impl Dispatcher {
    /// A dispatcher of `store`'s notifications.
    pub fn new(store: AnyStore, vault: Arc<Vault>, config: WebhookConfig) -> Self {
        Self {
            store,
            vault,
            config,
            registry: Arc::default(),
            in_flight: Arc::default(),
            slots: Arc::new(Semaphore::new(SLOTS)),
            counts: Arc::default(),
            writer: Arc::default(),
            outcomes: Arc::default(),
            finished: Arc::default(),
            clients: Arc::default(),
            secrets: Arc::default(),
        }
    }

    /// What this instance delivered, failed and abandoned.
    pub fn counts(&self) -> WebhookCounts {
        *self.counts.lock().expect("counts")
    }

    /// Decides each endpoint's commands on this dispatcher's view of it
    /// and appends every endpoint's events in one `append_many`; an
    /// endpoint whose stream another writer changed is read again and its
    /// commands decided again. A command the endpoint's state refuses is
    /// left out (requested before a restart, or the endpoint removed), and
    /// so is a second command about a notification already decided in the
    /// same batch: each command is decided on the state before the batch,
    /// which is what deciding them in turn gives for commands about
    /// different notifications (a round requests each notification once;
    /// one attempt of a notification is in flight at a time).
    async fn record(&self, mut work: Work) -> Result<(), WebhookError> {
        let _one = self.writer.lock().await;
        let mut failure = None;
        for _ in 0..8 {
            if work.is_empty() {
                break;
            }
            let mut plans = Vec::new();
            {
                let reg = self.registry.lock().await;
                for (endpoint, (tenant, cmds)) in work.drain() {
                    let Some(state) = reg.endpoints.get(&endpoint) else {
                        continue;
                    };
                    let version = reg.versions.get(&endpoint).copied().unwrap_or(0);
                    let mut seen = HashSet::new();
                    let events: Vec<_> = cmds
                        .iter()
                        .filter(|c| c.notification_id().is_none_or(|id| seen.insert(id)))
                        .filter_map(|c| state.decide(c.clone()).ok())
                        .flatten()
                        .collect();
                    if !events.is_empty() {
                        plans.push((endpoint, tenant, version, events, cmds));
                    }
                }
            }
            let requests = plans
                .iter()
                .map(|(endpoint, tenant, version, events, _)| {
                    append_request(*endpoint, *tenant, *version, events, dispatcher())
                })
                .collect();
            let results = self.store.append_many(requests).await;
            let mut changed = Vec::new();
            {
                let mut reg = self.registry.lock().await;
                for ((endpoint, tenant, version, events, cmds), result) in
                    plans.into_iter().zip(results)
                {
                    match result {
                        Ok(_) => reg.apply_own(endpoint, version, &events),
                        Err(eventstore::StoreError::WrongExpectedVersion { .. }) => {
                            changed.push((endpoint, tenant, cmds));
                        }
                        Err(e) => failure = Some(e),
                    }
                }
            }
            for (endpoint, tenant, cmds) in changed {
                let (state, version) = load(&self.store, endpoint).await?;
                let mut reg = self.registry.lock().await;
                reg.endpoints.insert(endpoint, state);
                reg.versions.insert(endpoint, version);
                work.insert(endpoint, (tenant, cmds));
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None if work.is_empty() => Ok(()),
            None => Err(WebhookError::Store(eventstore::StoreError::Corrupt(
                "the endpoints' streams kept changing".into(),
            ))),
        }
    }

    /// Follows the log until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut checkpoints =
            Checkpoints::with_lock(self.store.clone(), "webhooks".into(), LOCK_KEY);
        let mut appended = self.store.appended();
        // The endpoints as the log has them: its `notification` events,
        // read by position (only those decoded).
        let keys = registry::registry_keys();
        let mut cursor = Cursor::default();
        loop {
            match self.store.read_all_of(cursor.known, &keys, SCAN).await {
                Ok(read) if read.through == cursor.known => break,
                Ok(read) => {
                    cursor.known = read.through;
                    let mut reg = self.registry.lock().await;
                    for e in &read.events {
                        reg.apply(e);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: reading the log; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        let mut round = Instant::now();
        while !*stop.borrow() {
            tokio::time::sleep_until((round + self.config.min_round).into()).await;
            round = Instant::now();
            let wait = match self.step(&mut checkpoints, &mut cursor).await {
                Ok(true) => continue,
                Ok(false) => Duration::from_millis(200),
                Err(e) => {
                    if !matches!(e, WebhookError::Store(eventstore::StoreError::Corrupt(_))) {
                        tracing::warn!(error = %e, "webhooks: batch failed; retrying");
                    }
                    cursor.requested = None;
                    cursor.saved = None;
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = appended.changed() => {}
                () = self.finished.notified() => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        // Outcomes of attempts that finished meanwhile (those still running
        // stay pending: the next dispatcher makes them again).
        self.record_outcomes(Work::new()).await.ok();
        self.save(&mut checkpoints, &mut cursor, true).await.ok();
        checkpoints.release().await;
    }

    /// Moves the checkpoint to what has been requested, if a second has
    /// passed since it last moved (or `now`).
    async fn save(
        &self,
        checkpoints: &mut Checkpoints,
        cursor: &mut Cursor,
        now: bool,
    ) -> Result<(), WebhookError> {
        let (Some(requested), Some((saved, at))) = (cursor.requested, cursor.saved) else {
            return Ok(());
        };
        if requested == saved || (!now && at.elapsed() < CHECKPOINT_EVERY) {
            return Ok(());
        }
        checkpoints
            .advance(saved, requested)
            .await
            .map_err(|e| WebhookError::Store(eventstore::StoreError::Corrupt(e.to_string())))?;
        cursor.saved = Some((requested, Instant::now()));
        Ok(())
    }

    /// One round: new events applied and turned into requests, due
    /// deliveries started. True when more events may be waiting.
    async fn step(
        &self,
        checkpoints: &mut Checkpoints,
        cursor: &mut Cursor,
    ) -> Result<bool, WebhookError> {
        let active = checkpoints
            .acquire()
            .await
            .map_err(|e| WebhookError::Store(eventstore::StoreError::Corrupt(e.to_string())))?;
        if !active {
            // Everyone keeps the registry current (for listings).
            cursor.requested = None;
            cursor.saved = None;
            let read = self
                .store
                .read_all_of(cursor.known, &registry::registry_keys(), SCAN)
                .await?;
            let more = read.through > cursor.known;
            cursor.known = read.through;
            {
                let mut reg = self.registry.lock().await;
                for e in &read.events {
                    reg.apply(e);
                }
            }
            // Attempts made while this instance was the active one.
            self.record_outcomes(Work::new()).await?;
            return Ok(more);
        }
        let from = match cursor.requested {
            Some(p) => p,
            None => {
                let at = checkpoints.load().await.map_err(|e| {
                    WebhookError::Store(eventstore::StoreError::Corrupt(e.to_string()))
                })?;
                cursor.saved = Some((at, Instant::now()));
                at
            }
        };
        let lo = from.min(cursor.known);
        let read = self
            .store
            .read_all_of(lo, &registry::followed_keys(), SCAN)
            .await?;
        let mut work = Work::new();
        {
            let mut reg = self.registry.lock().await;
            for event in &read.events {
                reg.apply(event);
                if event.global_position <= from {
                    continue;
                }
                let Some((kind, tenant, job, balance)) =
                    registry::wanted(event, self.config.credit_low_minor)
                else {
                    continue;
                };
                for (endpoint, tenant_id) in reg.subscribers(tenant, kind, event.recorded_at) {
                    work.entry(endpoint)
                        .or_insert_with(|| (tenant_id, Vec::new()))
                        .1
                        .push(NotificationCommand::Request {
                            notification_id: registry::notification_id(endpoint, event.event_id),
                            kind,
                            job_id: job.and_then(|j| domain::JobId::new(j).ok()),
                            balance_minor: balance
                                .and_then(|b| domain::AmountMinor::new(b.max(0)).ok()),
                            at: Utc::now(),
                        });
                }
            }
        }
        self.record_outcomes(work).await?;
        let more = read.through > lo;
        cursor.known = cursor.known.max(read.through);
        cursor.requested = Some(from.max(read.through));
        self.save(checkpoints, cursor, false).await?;
        self.start_due_deliveries().await;
        Ok(more)
    }

    async fn start_due_deliveries(&self) {
        let now = Utc::now();
        let due: Vec<(EndpointId, domain::notification::Notification, String)> = {
            let reg = self.registry.lock().await;
            let mut out = Vec::new();
            for (id, e) in &reg.endpoints {
                let (Some(r), false) = (e.registration(), e.is_removed()) else {
                    continue;
                };
                for n in e.pending() {
                    if n.next_attempt_at.is_none_or(|t| t <= now) {
                        out.push((*id, n.clone(), r.url.as_str().to_string()));
                    }
                }
            }
            out
        };
        for (endpoint, n, url) in due {
            let id = n.requested.notification_id;
            if !self.in_flight.lock().expect("in flight").insert(id) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let cmd = {
                    let _slot = this.slots.clone().acquire_owned().await;
                    this.attempt(endpoint, &n, &url).await
                };
                this.outcomes.lock().expect("outcomes").push((
                    endpoint,
                    n.requested.tenant_id,
                    cmd,
                ));
                this.finished.notify_one();
            });
        }
    }

    /// Records `work` and the outcomes of the attempts that finished since
    /// the last round, in one batch. A notification is in flight until its
    /// outcome is recorded (so that the next round does not start it
    /// again); one whose outcome could not be recorded is tried again.
    async fn record_outcomes(&self, mut work: Work) -> Result<(), WebhookError> {
        let outcomes = std::mem::take(&mut *self.outcomes.lock().expect("outcomes"));
        let ids: Vec<NotificationId> = outcomes
            .iter()
            .filter_map(|(_, _, c)| c.notification_id())
            .collect();
        for (endpoint, tenant, cmd) in outcomes {
            work.entry(endpoint)
                .or_insert_with(|| (tenant, Vec::new()))
                .1
                .push(cmd);
        }
        let recorded = self.record(work).await;
        let mut in_flight = self.in_flight.lock().expect("in flight");
        for id in ids {
            in_flight.remove(&id);
        }
        recorded
    }

    /// The endpoints of a tenant, as this instance last read the log.
    pub async fn endpoints_of(
        &self,
        tenant: domain::TenantId,
    ) -> Vec<domain::notification::EndpointRegistered> {
        let reg = self.registry.lock().await;
        reg.by_tenant
            .get(&tenant.as_uuid())
            .into_iter()
            .flatten()
            .filter_map(|id| reg.endpoints.get(id))
            .filter(|e| !e.is_removed())
            .filter_map(|e| e.registration().cloned())
            .collect()
    }
}
