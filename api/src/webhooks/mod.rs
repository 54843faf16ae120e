//! Webhooks (issue 13): tenants' endpoints, and the dispatcher that turns
//! render completions, failures, cancellations and low credit into
//! notifications and delivers them as signed HTTP POSTs.
//!
//! Everything is an event of the endpoint's `notification` stream:
//! registered, removed, each notification requested, each failed attempt
//! (with the next attempt's time: exponential backoff with jitter), the
//! delivery, or its abandonment after the last attempt. The dispatcher
//! follows the log from its checkpoint (`follower_checkpoints`, name
//! `webhooks`); on PostgreSQL one instance's dispatcher is active (an
//! advisory lock), so one instance requests and delivers. A notification's
//! id is derived from the endpoint and the event it is about, so a
//! dispatcher restarted before its checkpoint requests nothing twice.
//! Deliveries run on their own tasks, at most a few at once, each cut off
//! by a timeout; scheduling never waits on them.

pub mod guard;
pub mod sign;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::notification::{MAX_DELIVERY_ATTEMPTS, NotificationCommand, NotificationKind};
use domain::{Aggregate, EndpointId, NotificationEndpoint, NotificationEvent, NotificationId};
use eventstore::{
    Actor, AnyStore, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent,
    RecordedEvent, Vault,
};
use relay::Checkpoints;
use tokio::sync::{Mutex, Semaphore, watch};
use uuid::Uuid;

/// The advisory lock of the one active dispatcher of a database.
pub const LOCK_KEY: i64 = 0x466c_6174_486f_6f6b; // "FlatHook"

/// How the dispatcher delivers.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Deliver to private, loopback and link-local addresses too.
    pub allow_private: bool,
    /// How long a receiver may take to answer.
    pub timeout: Duration,
    /// The wait before the second attempt (doubled for each next one,
    /// with jitter, at most an hour).
    pub first_retry: Duration,
    /// Attempts before a notification is abandoned.
    pub max_attempts: u32,
    /// A charge that takes a tenant's balance below this notifies
    /// `credit_low`.
    pub credit_low_minor: i64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            first_retry: Duration::from_secs(5),
            max_attempts: MAX_DELIVERY_ATTEMPTS,
            credit_low_minor: 1_000,
        }
    }
}

/// Why a webhook change was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL or the kinds are not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No such endpoint of this tenant.
    #[error("no such endpoint")]
    NotFound,
    /// The domain refused the command.
    #[error(transparent)]
    Domain(#[from] domain::DomainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
}

fn meta(actor: Actor) -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor,
        trace_id: orchestrator::trace::current(),
    }
}

fn dispatcher() -> Actor {
    Actor::System {
        component: "webhooks".into(),
    }
}

/// The endpoint's state and stream version, read from the log.
async fn load(
    store: &AnyStore,
    endpoint: EndpointId,
) -> Result<(NotificationEndpoint, u64), WebhookError> {
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let batch = store.read_stream(endpoint.as_uuid(), from, 1000).await?;
        let Some(last) = batch.last() else { break };
        from = last.stream_version + 1;
        events.extend(batch);
    }
    let version = events.last().map_or(0, |e| e.stream_version);
    let decoded: Vec<NotificationEvent> =
        events.iter().filter_map(|e| e.to_domain().ok()).collect();
    Ok((NotificationEndpoint::replay(&decoded), version))
}

/// The append of `events` to the endpoint's stream at `version`.
fn append_request(
    endpoint: EndpointId,
    tenant: domain::TenantId,
    version: u64,
    events: &[NotificationEvent],
    actor: Actor,
) -> AppendRequest {
    let m = meta(actor);
    AppendRequest {
        stream_id: endpoint.as_uuid(),
        stream_type: "notification".into(),
        tenant_id: Some(tenant.as_uuid()),
        expected: if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        },
        events: events
            .iter()
            .map(|e| NewEvent::from_domain(Uuid::new_v4(), e, m.clone()))
            .collect(),
    }
}

/// Decides `command` on the endpoint as the log has it and appends the
/// events at its exact version (read again and retried if another writer
/// got there first). For the API's rare changes; the dispatcher decides on
/// its own view instead ([`Dispatcher::record_many`]).
async fn command(
    store: &AnyStore,
    endpoint: EndpointId,
    tenant: domain::TenantId,
    actor: Actor,
    command: NotificationCommand,
) -> Result<Vec<NotificationEvent>, WebhookError> {
    for _ in 0..8 {
        let (state, version) = load(store, endpoint).await?;
        let events = state.decide(command.clone())?;
        match store
            .append(append_request(
                endpoint,
                tenant,
                version,
                &events,
                actor.clone(),
            ))
            .await
        {
            Ok(_) => return Ok(events),
            Err(eventstore::StoreError::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(WebhookError::Store(eventstore::StoreError::Corrupt(
        "the endpoint's stream kept changing".into(),
    )))
}

/// A registered endpoint and its secret, shown this once.
#[derive(Debug)]
pub struct Registered {
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// `whsec_…` (Standard Webhooks): kept by the server sealed, never
    /// shown again.
    pub secret: String,
}

/// Registers an endpoint of `tenant` for `kinds` at `url`.
pub async fn register(
    store: &AnyStore,
    vault: &Vault,
    config: &WebhookConfig,
    tenant: domain::TenantId,
    url: &str,
    kinds: Vec<NotificationKind>,
    actor: Actor,
) -> Result<Registered, WebhookError> {
    if kinds.is_empty() {
        return Err(WebhookError::Invalid("name at least one event".into()));
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| WebhookError::Invalid("not a URL".into()))?;
    guard::resolve(&parsed, config.allow_private)
        .await
        .map_err(|e| WebhookError::Invalid(e.to_string()))?;
    let url =
        domain::text::WebhookUrl::parse(url).map_err(|e| WebhookError::Invalid(e.to_string()))?;
    let endpoint_id = EndpointId::new(Uuid::new_v4()).map_err(domain::DomainError::from)?;
    let secret_key_id =
        domain::SecretKeyId::new(Uuid::new_v4()).map_err(domain::DomainError::from)?;
    let mut secret = vec![0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| WebhookError::Invalid(e.to_string()))?;
    // The secret first: an endpoint in the log always has one to sign with.
    store
        .add_webhook_secret(
            endpoint_id.as_uuid(),
            secret_key_id.as_uuid(),
            &secret,
            vault,
        )
        .await?;
    command(
        store,
        endpoint_id,
        tenant,
        actor,
        NotificationCommand::RegisterEndpoint {
            endpoint_id,
            tenant_id: tenant,
            url,
            kinds,
            secret_key_id,
            at: Utc::now(),
        },
    )
    .await?;
    Ok(Registered {
        endpoint_id,
        secret: sign::secret_text(&secret),
    })
}

/// Removes an endpoint of `tenant`.
pub async fn remove(
    store: &AnyStore,
    tenant: domain::TenantId,
    endpoint: EndpointId,
    actor: Actor,
) -> Result<(), WebhookError> {
    let (state, _) = load(store, endpoint).await?;
    match state.registration() {
        Some(r) if r.tenant_id == tenant && !state.is_removed() => {}
        _ => return Err(WebhookError::NotFound),
    }
    command(
        store,
        endpoint,
        tenant,
        actor,
        NotificationCommand::RemoveEndpoint { at: Utc::now() },
    )
    .await?;
    Ok(())
}

/// The notification an event asks for, if any: (kind, tenant, job,
/// balance).
fn wanted(
    event: &RecordedEvent,
    credit_low_minor: i64,
) -> Option<(NotificationKind, Uuid, Option<Uuid>, Option<i64>)> {
    let p = &event.payload;
    let uuid = |key: &str| p.get(key)?.as_str()?.parse::<Uuid>().ok();
    let kind = match event.routing_key.as_str() {
        "render.job.completed.v1" => NotificationKind::RenderCompleted,
        "render.job.failed.v1" => NotificationKind::RenderFailed,
        "render.job.cancelled.v1" => NotificationKind::RenderCancelled,
        "tenant.credit_charged.v1" => {
            let after = p.get("balance_after_minor")?.as_i64()?;
            let amount = p.get("amount_minor")?.as_i64()?;
            // Only the charge that crosses the threshold.
            if !(after < credit_low_minor && after + amount >= credit_low_minor) {
                return None;
            }
            return Some((
                NotificationKind::CreditLow,
                uuid("tenant_id")?,
                None,
                Some(after),
            ));
        }
        _ => return None,
    };
    Some((kind, uuid("tenant_id")?, uuid("job_id"), None))
}

/// The notification's id: the same for the same endpoint and event.
fn notification_id(endpoint: EndpointId, event_id: Uuid) -> NotificationId {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(endpoint.as_uuid().as_bytes());
    h.update(event_id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    NotificationId::new(uuid::Builder::from_random_bytes(bytes).into_uuid())
        .expect("a v4 id is not nil")
}

/// What is delivered: the Standard Webhooks payload shape.
fn body(n: &domain::notification::NotificationRequested) -> Vec<u8> {
    let kind = match n.kind {
        NotificationKind::RenderCompleted => "render.completed",
        NotificationKind::RenderFailed => "render.failed",
        NotificationKind::RenderCancelled => "render.cancelled",
        NotificationKind::CreditLow => "tenant.credit_low",
    };
    serde_json::to_vec(&serde_json::json!({
        "type": kind,
        "timestamp": n.requested_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "notification_id": n.notification_id,
            "tenant_id": n.tenant_id,
            "render_id": n.job_id,
            "balance_minor": n.balance_minor,
        },
    }))
    .unwrap_or_default()
}

/// What the dispatcher knows of the endpoints, from the log.
#[derive(Debug, Default)]
struct Registry {
    endpoints: HashMap<EndpointId, NotificationEndpoint>,
    /// The stream version each endpoint's state is at.
    versions: HashMap<EndpointId, u64>,
    by_tenant: BTreeMap<Uuid, Vec<EndpointId>>,
}

impl Registry {
    fn apply(&mut self, event: &RecordedEvent) {
        if event.stream_type != "notification" {
            return;
        }
        let (Ok(e), Ok(id)) = (
            event.to_domain::<NotificationEvent>(),
            EndpointId::new(event.stream_id),
        ) else {
            return;
        };
        // Already applied (this dispatcher's own append).
        if event.stream_version <= self.versions.get(&id).copied().unwrap_or(0) {
            return;
        }
        self.versions.insert(id, event.stream_version);
        let state = self.endpoints.remove(&id).unwrap_or_default();
        let state = state.evolve(&e);
        if let Some(r) = state.registration() {
            let list = self.by_tenant.entry(r.tenant_id.as_uuid()).or_default();
            if !list.contains(&id) {
                list.push(id);
            }
        }
        self.endpoints.insert(id, state);
    }

    /// Events this dispatcher appended at `version`.
    fn apply_own(&mut self, id: EndpointId, version: u64, events: &[NotificationEvent]) {
        if self.versions.get(&id).copied().unwrap_or(0) != version {
            return;
        }
        let state = self.endpoints.remove(&id).unwrap_or_default();
        let state = events.iter().fold(state, |s, e| s.evolve(e));
        self.endpoints.insert(id, state);
        self.versions.insert(id, version + events.len() as u64);
    }
}

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
    /// One writer per endpoint stream at a time.
    writing: Arc<std::sync::Mutex<HashMap<EndpointId, Arc<Mutex<()>>>>>,
    /// Attempts' outcomes waiting to be recorded, per endpoint, and
    /// whether a task is recording them (it takes all that wait, so many
    /// outcomes become one append).
    outcomes: Arc<std::sync::Mutex<HashMap<EndpointId, Outcomes>>>,
    /// One HTTP client (and its kept-alive connections) per host and
    /// pinned address.
    clients: Arc<std::sync::Mutex<HashMap<(String, std::net::SocketAddr), reqwest::Client>>>,
    /// Endpoints' signing secrets once opened.
    secrets: Arc<std::sync::Mutex<Secrets>>,
}

/// Signing secrets by endpoint and secret key id.
type Secrets = HashMap<(EndpointId, Uuid), Arc<Vec<u8>>>;

/// Outcomes of one endpoint waiting to be recorded.
#[derive(Debug, Default)]
struct Outcomes {
    writing: bool,
    waiting: Vec<(NotificationId, domain::TenantId, NotificationCommand)>,
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
            slots: Arc::new(Semaphore::new(16)),
            counts: Arc::default(),
            writing: Arc::default(),
            outcomes: Arc::default(),
            clients: Arc::default(),
            secrets: Arc::default(),
        }
    }

    /// Decides each of `cmds` in turn on this dispatcher's view of the
    /// endpoint (one the endpoint's state refuses is left out: requested
    /// before a restart, or the endpoint removed) and appends them all at
    /// once at that version; a stream changed by someone else is read
    /// again.
    async fn record_many(
        &self,
        endpoint: EndpointId,
        tenant: domain::TenantId,
        cmds: Vec<NotificationCommand>,
    ) -> Result<(), WebhookError> {
        let lock = self
            .writing
            .lock()
            .expect("writers")
            .entry(endpoint)
            .or_default()
            .clone();
        let _one = lock.lock().await;
        for _ in 0..8 {
            let (events, version) = {
                let reg = self.registry.lock().await;
                let version = reg.versions.get(&endpoint).copied().unwrap_or(0);
                let mut state = reg.endpoints.get(&endpoint).cloned().unwrap_or_default();
                let mut events = Vec::new();
                let mut refused = None;
                for cmd in &cmds {
                    match state.decide(cmd.clone()) {
                        Ok(new) => {
                            state = new.iter().fold(state, |s, e| s.evolve(e));
                            events.extend(new);
                        }
                        Err(e) => refused = Some(e),
                    }
                }
                if events.is_empty() {
                    return match refused {
                        Some(e) => Err(e.into()),
                        None => Ok(()),
                    };
                }
                (events, version)
            };
            let request = append_request(endpoint, tenant, version, &events, dispatcher());
            match self.store.append(request).await {
                Ok(_) => {
                    self.registry
                        .lock()
                        .await
                        .apply_own(endpoint, version, &events);
                    return Ok(());
                }
                Err(eventstore::StoreError::WrongExpectedVersion { .. }) => {
                    let (state, version) = load(&self.store, endpoint).await?;
                    let mut reg = self.registry.lock().await;
                    reg.endpoints.insert(endpoint, state);
                    reg.versions.insert(endpoint, version);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(WebhookError::Store(eventstore::StoreError::Corrupt(
            "the endpoint's stream kept changing".into(),
        )))
    }

    /// What this instance delivered, failed and abandoned.
    pub fn counts(&self) -> WebhookCounts {
        *self.counts.lock().expect("counts")
    }

    /// Follows the log until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut checkpoints =
            Checkpoints::with_lock(self.store.clone(), "webhooks".into(), LOCK_KEY);
        let mut appended = self.store.appended();
        // The endpoints as the whole log has them (a scan of the log at
        // start: its cost grows with the history, see the note).
        let mut known = 0;
        loop {
            match self.store.read_all(known, 5000).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => {
                    known = batch.last().map_or(known, |e| e.global_position);
                    let mut reg = self.registry.lock().await;
                    for e in &batch {
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
        let mut position: Option<i64> = None;
        while !*stop.borrow() {
            let wait = match self.step(&mut checkpoints, &mut position, &mut known).await {
                Ok(true) => continue,
                Ok(false) => Duration::from_millis(200),
                Err(e) => {
                    if !matches!(e, WebhookError::Store(eventstore::StoreError::Corrupt(_))) {
                        tracing::warn!(error = %e, "webhooks: batch failed; retrying");
                    }
                    position = None;
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = appended.changed() => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        checkpoints.release().await;
    }

    /// One round: new events applied and turned into requests, due
    /// deliveries started. True when more events may be waiting.
    async fn step(
        &self,
        checkpoints: &mut Checkpoints,
        position: &mut Option<i64>,
        known: &mut i64,
    ) -> Result<bool, WebhookError> {
        let active = checkpoints
            .acquire()
            .await
            .map_err(|e| WebhookError::Store(eventstore::StoreError::Corrupt(e.to_string())))?;
        // Everyone keeps the registry current (for listings).
        let batch = self.store.read_all(*known, 1000).await?;
        if let Some(last) = batch.last() {
            *known = last.global_position;
            let mut reg = self.registry.lock().await;
            for e in &batch {
                reg.apply(e);
            }
        }
        if !active {
            return Ok(batch.len() == 1000);
        }
        let from = match *position {
            Some(p) => p,
            None => checkpoints
                .load()
                .await
                .map_err(|e| WebhookError::Store(eventstore::StoreError::Corrupt(e.to_string())))?,
        };
        let todo = self.store.read_all(from, 500).await?;
        let mut requests: HashMap<EndpointId, (domain::TenantId, Vec<NotificationCommand>)> =
            HashMap::new();
        for event in &todo {
            let Some((kind, tenant, job, balance)) = wanted(event, self.config.credit_low_minor)
            else {
                continue;
            };
            let endpoints: Vec<(EndpointId, domain::TenantId)> = {
                let reg = self.registry.lock().await;
                reg.by_tenant
                    .get(&tenant)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| {
                        let e = reg.endpoints.get(id)?;
                        let r = e.registration()?;
                        // Only endpoints registered before the event.
                        (e.wants(kind) && r.registered_at <= event.recorded_at)
                            .then_some((*id, r.tenant_id))
                    })
                    .collect()
            };
            for (endpoint, tenant_id) in endpoints {
                let notification_id = notification_id(endpoint, event.event_id);
                let job_id = job.and_then(|j| domain::JobId::new(j).ok());
                requests
                    .entry(endpoint)
                    .or_insert_with(|| (tenant_id, Vec::new()))
                    .1
                    .push(NotificationCommand::Request {
                        notification_id,
                        kind,
                        job_id,
                        balance_minor: balance
                            .and_then(|b| domain::AmountMinor::new(b.max(0)).ok()),
                        at: Utc::now(),
                    });
            }
        }
        // One append per endpoint for all of this round's requests.
        for (endpoint, (tenant_id, cmds)) in requests {
            match self.record_many(endpoint, tenant_id, cmds).await {
                // Requested before a restart, or removed meanwhile.
                Ok(_) | Err(WebhookError::Domain(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(last) = todo.last() {
            checkpoints
                .advance(from, last.global_position)
                .await
                .map_err(|e| WebhookError::Store(eventstore::StoreError::Corrupt(e.to_string())))?;
            *position = Some(last.global_position);
        }
        self.start_due_deliveries().await;
        Ok(todo.len() == 500 || batch.len() == 1000)
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
                this.submit_outcome(endpoint, id, n.requested.tenant_id, cmd)
                    .await;
            });
        }
    }

    /// Records an attempt's outcome: with those of the endpoint's other
    /// attempts that finished meanwhile, in one append, by whichever task
    /// finds no other recording. A notification is in flight until its
    /// outcome is recorded (so that the next round does not start it
    /// again); one whose outcome could not be recorded is tried again.
    async fn submit_outcome(
        &self,
        endpoint: EndpointId,
        id: NotificationId,
        tenant: domain::TenantId,
        cmd: NotificationCommand,
    ) {
        {
            let mut outcomes = self.outcomes.lock().expect("outcomes");
            let entry = outcomes.entry(endpoint).or_default();
            entry.waiting.push((id, tenant, cmd));
            if entry.writing {
                return;
            }
            entry.writing = true;
        }
        loop {
            let batch = {
                let mut outcomes = self.outcomes.lock().expect("outcomes");
                let entry = outcomes.entry(endpoint).or_default();
                if entry.waiting.is_empty() {
                    entry.writing = false;
                    return;
                }
                std::mem::take(&mut entry.waiting)
            };
            let tenant = batch[0].1;
            let ids: Vec<NotificationId> = batch.iter().map(|(id, _, _)| *id).collect();
            let cmds = batch.into_iter().map(|(_, _, c)| c).collect();
            if let Err(e) = self.record_many(endpoint, tenant, cmds).await {
                tracing::warn!(error = %e, endpoint = %endpoint, "webhooks: recording attempts failed");
            }
            let mut in_flight = self.in_flight.lock().expect("in flight");
            for id in ids {
                in_flight.remove(&id);
            }
        }
    }

    /// One attempt, and the command that records it.
    async fn attempt(
        &self,
        endpoint: EndpointId,
        n: &domain::notification::Notification,
        url: &str,
    ) -> NotificationCommand {
        let attempt = n.attempts + 1;
        let outcome = self.post(endpoint, n, url).await;
        let at = Utc::now();
        match outcome {
            Ok(status) => {
                self.counts.lock().expect("counts").delivered += 1;
                NotificationCommand::RecordDelivery {
                    notification_id: n.requested.notification_id,
                    status_code: status,
                    at,
                }
            }
            Err((status, error)) => {
                let last = attempt >= self.config.max_attempts;
                {
                    let mut c = self.counts.lock().expect("counts");
                    c.failed_attempts += 1;
                    if last {
                        c.abandoned += 1;
                    }
                }
                NotificationCommand::RecordFailedAttempt {
                    notification_id: n.requested.notification_id,
                    status_code: status,
                    error: domain::Note::parse(error.chars().take(200).collect::<String>())
                        .unwrap_or_else(|_| domain::Note::parse("failed").expect("note")),
                    next_attempt_at: (!last).then(|| at + self.backoff(attempt)),
                    at,
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> chrono::Duration {
        let base = self.config.first_retry.as_millis() as u64;
        let exp = base
            .saturating_mul(1u64 << (attempt - 1).min(20))
            .min(3_600_000);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        // Between 75 % and 125 %.
        let jittered = exp * 3 / 4 + exp / 2 * (nanos % 1000) / 1000;
        chrono::Duration::milliseconds(jittered as i64)
    }

    /// The signed POST: `Ok(status)` for a 2xx, else the status (if any)
    /// and why.
    async fn post(
        &self,
        endpoint: EndpointId,
        n: &domain::notification::Notification,
        url: &str,
    ) -> Result<u16, (Option<u16>, String)> {
        let parsed = reqwest::Url::parse(url).map_err(|e| (None, e.to_string()))?;
        let (host, addr) = guard::resolve(&parsed, self.config.allow_private)
            .await
            .map_err(|e| (None, e.to_string()))?;
        let reg = self.registry.lock().await;
        let key_id = reg
            .endpoints
            .get(&endpoint)
            .and_then(|e| e.registration())
            .map(|r| r.secret_key_id.as_uuid());
        drop(reg);
        let Some(key_id) = key_id else {
            return Err((None, "the endpoint is gone".into()));
        };
        let cached = self
            .secrets
            .lock()
            .expect("secrets")
            .get(&(endpoint, key_id))
            .cloned();
        let secret = match cached {
            Some(s) => s,
            None => match self
                .store
                .webhook_secret(endpoint.as_uuid(), key_id, &self.vault)
                .await
            {
                Ok(Some(s)) => {
                    let s = Arc::new(s);
                    self.secrets
                        .lock()
                        .expect("secrets")
                        .insert((endpoint, key_id), s.clone());
                    s
                }
                Ok(None) => return Err((None, "the endpoint has no secret".into())),
                Err(e) => return Err((None, format!("its secret does not open: {e}"))),
            },
        };
        let client = self.client(&host, addr).map_err(|e| (None, e))?;
        let body = body(&n.requested);
        let id = n.requested.notification_id.to_string();
        let timestamp = Utc::now().timestamp();
        let response = client
            .post(parsed)
            .header("content-type", "application/json")
            .header("user-agent", "FlatRender-Webhooks/1")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                sign::signature(&secret, &id, timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => Err((
                Some(r.status().as_u16()),
                format!("answered {}", r.status()),
            )),
            Err(e) if e.is_timeout() => Err((None, "timed out".into())),
            Err(e) => Err((None, format!("could not send: {e}"))),
        }
    }

    /// The client for `host` pinned to `addr` (checked by the guard), kept
    /// for its connections.
    fn client(&self, host: &str, addr: std::net::SocketAddr) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().expect("clients");
        if let Some(c) = clients.get(&(host.to_string(), addr)) {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.config.timeout)
            .resolve(host, addr)
            .build()
            .map_err(|e| e.to_string())?;
        if clients.len() > 10_000 {
            clients.clear();
        }
        clients.insert((host.to_string(), addr), client.clone());
        Ok(client)
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
