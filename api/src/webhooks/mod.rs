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

mod dispatcher;
pub mod guard;
mod registry;
pub mod sign;

pub use dispatcher::{Dispatcher, WebhookCounts};

use std::time::Duration;

use chrono::Utc;
use domain::notification::{MAX_DELIVERY_ATTEMPTS, NotificationCommand, NotificationKind};
use domain::{Aggregate, EndpointId, NotificationEndpoint, NotificationEvent};
use eventstore::{
    Actor, AnyStore, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, Vault,
};
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
    /// The shortest time between two of the dispatcher's rounds: a busy
    /// log wakes it for every append, and a round per append would cost
    /// the store more than the notifications are worth; a notification
    /// waits at most about this long to be requested.
    pub min_round: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            first_retry: Duration::from_secs(5),
            max_attempts: MAX_DELIVERY_ATTEMPTS,
            credit_low_minor: 1_000,
            min_round: Duration::from_millis(100),
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
