//! The notification aggregate: a tenant's webhook endpoint and the
//! notifications sent to it (stream id = endpoint id).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, ValidationError};
use crate::event::{Aggregate, EventPayload, domain_events, sample_time};
use crate::ids::{EndpointId, JobId, NotificationId, SecretKeyId, TenantId};
use crate::money::AmountMinor;
use crate::text::{Note, WebhookUrl};

/// After this many failed attempts a notification is abandoned.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 10;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A render completed.
    RenderCompleted,
    /// A render failed.
    RenderFailed,
    /// A render was cancelled.
    RenderCancelled,
    /// The tenant's credit runs low.
    CreditLow,
}

/// `notification.endpoint.registered.v1`: a tenant registered a webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRegistered {
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Where notifications are POSTed.
    pub url: WebhookUrl,
    /// What it is notified of.
    pub kinds: Vec<NotificationKind>,
    /// The id of the secret that signs its requests (never the secret).
    pub secret_key_id: SecretKeyId,
    /// When.
    pub registered_at: DateTime<Utc>,
}

/// `notification.endpoint.removed.v1`: the endpoint gets no more notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRemoved {
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When.
    pub removed_at: DateTime<Utc>,
}

/// `notification.requested.v1`: a notification is due to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequested {
    /// The notification.
    pub notification_id: NotificationId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// What it is about.
    pub kind: NotificationKind,
    /// The render it is about, for render notifications.
    pub job_id: Option<JobId>,
    /// The balance, for credit notifications.
    pub balance_minor: Option<AmountMinor>,
    /// When.
    pub requested_at: DateTime<Utc>,
}

/// `notification.delivered.v1`: the endpoint accepted the notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationDelivered {
    /// The notification.
    pub notification_id: NotificationId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Which attempt succeeded, from 1.
    pub attempt: u32,
    /// The endpoint's 2xx status.
    pub status_code: u16,
    /// When.
    pub delivered_at: DateTime<Utc>,
}

/// `notification.attempt_failed.v1`: one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryAttemptFailed {
    /// The notification.
    pub notification_id: NotificationId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Which attempt failed, from 1.
    pub attempt: u32,
    /// The endpoint's status, if it answered.
    pub status_code: Option<u16>,
    /// What went wrong.
    pub error: Note,
    /// When the next attempt is due; none if it is abandoned.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When.
    pub failed_at: DateTime<Utc>,
}

/// `notification.abandoned.v1`: no more attempts will be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationAbandoned {
    /// The notification.
    pub notification_id: NotificationId,
    /// The endpoint.
    pub endpoint_id: EndpointId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Attempts made.
    pub attempts: u32,
    /// When.
    pub abandoned_at: DateTime<Utc>,
}

domain_events! {
    /// Everything that happens to a webhook endpoint and its notifications.
    pub enum NotificationEvent : "notification", stream_id = endpoint_id {
        /// See [`EndpointRegistered`].
        EndpointRegistered(EndpointRegistered) => "notification.endpoint.registered.v1",
        /// See [`EndpointRemoved`].
        EndpointRemoved(EndpointRemoved) => "notification.endpoint.removed.v1",
        /// See [`NotificationRequested`].
        Requested(NotificationRequested) => "notification.requested.v1",
        /// See [`NotificationDelivered`].
        Delivered(NotificationDelivered) => "notification.delivered.v1",
        /// See [`DeliveryAttemptFailed`].
        AttemptFailed(DeliveryAttemptFailed) => "notification.attempt_failed.v1",
        /// See [`NotificationAbandoned`].
        Abandoned(NotificationAbandoned) => "notification.abandoned.v1",
    }
}

/// The commands of a webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationCommand {
    /// Register the endpoint.
    RegisterEndpoint {
        /// The new endpoint's id.
        endpoint_id: EndpointId,
        /// Its tenant.
        tenant_id: TenantId,
        /// Where to POST.
        url: WebhookUrl,
        /// What to notify: at least one kind.
        kinds: Vec<NotificationKind>,
        /// The id of its signing secret.
        secret_key_id: SecretKeyId,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Remove the endpoint; pending notifications are abandoned.
    RemoveEndpoint {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Request a notification of a kind the endpoint subscribed to.
    Request {
        /// The new notification's id.
        notification_id: NotificationId,
        /// What it is about.
        kind: NotificationKind,
        /// The render, for render notifications.
        job_id: Option<JobId>,
        /// The balance, for credit notifications.
        balance_minor: Option<AmountMinor>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// The endpoint answered 2xx.
    RecordDelivery {
        /// The notification.
        notification_id: NotificationId,
        /// The 2xx status.
        status_code: u16,
        /// Now.
        at: DateTime<Utc>,
    },
    /// An attempt failed; with no `next_attempt_at`, or after
    /// [`MAX_DELIVERY_ATTEMPTS`], the notification is abandoned.
    RecordFailedAttempt {
        /// The notification.
        notification_id: NotificationId,
        /// The endpoint's status, if it answered.
        status_code: Option<u16>,
        /// What went wrong.
        error: Note,
        /// When to try again (after `at`), if at all.
        next_attempt_at: Option<DateTime<Utc>>,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Not yet delivered; more attempts will be made.
    Pending,
    /// Delivered.
    Delivered,
    /// Given up.
    Abandoned,
}

impl DeliveryStatus {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Abandoned => "abandoned",
        }
    }
}

/// One notification as evolved from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The request.
    pub requested: NotificationRequested,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made (failed ones, plus the successful one).
    pub attempts: u32,
    /// When the next attempt is due, while pending after a failure.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl NotificationCommand {
    /// The notification the command is about, if it is about one.
    pub fn notification_id(&self) -> Option<NotificationId> {
        match self {
            Self::Request {
                notification_id, ..
            }
            | Self::RecordDelivery {
                notification_id, ..
            }
            | Self::RecordFailedAttempt {
                notification_id, ..
            } => Some(*notification_id),
            Self::RegisterEndpoint { .. } | Self::RemoveEndpoint { .. } => None,
        }
    }
}

/// A webhook endpoint and its notifications.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationEndpoint {
    registered: Option<EndpointRegistered>,
    removed: bool,
    /// Notifications not yet delivered nor abandoned: what a dispatcher
    /// scans each round, so it stays as small as the work in flight.
    pending: BTreeMap<NotificationId, Notification>,
    /// Delivered and abandoned notifications (kept so that a notification
    /// is never requested twice).
    finished: BTreeMap<NotificationId, Notification>,
}

impl NotificationEndpoint {
    /// The registration, once registered.
    pub fn registration(&self) -> Option<&EndpointRegistered> {
        self.registered.as_ref()
    }

    /// Whether the endpoint was removed.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Whether new notifications of `kind` go to this endpoint.
    pub fn wants(&self, kind: NotificationKind) -> bool {
        !self.removed
            && self
                .registered
                .as_ref()
                .is_some_and(|r| r.kinds.contains(&kind))
    }

    /// One notification.
    pub fn notification(&self, id: NotificationId) -> Option<&Notification> {
        self.pending.get(&id).or_else(|| self.finished.get(&id))
    }

    /// The notifications not yet delivered nor abandoned.
    pub fn pending(&self) -> impl Iterator<Item = &Notification> {
        self.pending.values()
    }

    fn pending_one(
        &self,
        id: NotificationId,
        command: &'static str,
    ) -> Result<&Notification, DomainError> {
        if let Some(n) = self.pending.get(&id) {
            return Ok(n);
        }
        match self.finished.get(&id) {
            Some(n) => Err(DomainError::InvalidTransition {
                entity: "notification",
                from: n.status.as_str(),
                command,
            }),
            None => Err(DomainError::NotFound {
                entity: "notification",
                id: id.to_string(),
            }),
        }
    }
}

impl Aggregate for NotificationEndpoint {
    type Event = NotificationEvent;
    type Command = NotificationCommand;

    fn decide(&self, command: NotificationCommand) -> Result<Vec<NotificationEvent>, DomainError> {
        use NotificationCommand as C;
        let Some(endpoint) = &self.registered else {
            return match command {
                C::RegisterEndpoint {
                    endpoint_id,
                    tenant_id,
                    url,
                    kinds,
                    secret_key_id,
                    at,
                } => {
                    if kinds.is_empty() {
                        return Err(
                            ValidationError::new("kinds", "at least one kind is required").into(),
                        );
                    }
                    Ok(vec![
                        EndpointRegistered {
                            endpoint_id,
                            tenant_id,
                            url,
                            kinds,
                            secret_key_id,
                            registered_at: at,
                        }
                        .into(),
                    ])
                }
                _ => Err(DomainError::NotFound {
                    entity: "endpoint",
                    id: "-".into(),
                }),
            };
        };
        let (endpoint_id, tenant_id) = (endpoint.endpoint_id, endpoint.tenant_id);
        let removed = |command| DomainError::InvalidTransition {
            entity: "endpoint",
            from: "removed",
            command,
        };
        match command {
            C::RegisterEndpoint { .. } => Err(DomainError::AlreadyExists {
                entity: "endpoint",
                id: endpoint_id.to_string(),
            }),
            C::RemoveEndpoint { at } => {
                if self.removed {
                    return Err(removed("remove"));
                }
                let mut events: Vec<NotificationEvent> = vec![
                    EndpointRemoved {
                        endpoint_id,
                        tenant_id,
                        removed_at: at,
                    }
                    .into(),
                ];
                events.extend(self.pending().map(|n| {
                    NotificationEvent::from(NotificationAbandoned {
                        notification_id: n.requested.notification_id,
                        endpoint_id,
                        tenant_id,
                        attempts: n.attempts,
                        abandoned_at: at,
                    })
                }));
                Ok(events)
            }
            C::Request {
                notification_id,
                kind,
                job_id,
                balance_minor,
                at,
            } => {
                if self.removed {
                    return Err(removed("request"));
                }
                if !endpoint.kinds.contains(&kind) {
                    return Err(ValidationError::new(
                        "kind",
                        "the endpoint is not subscribed to this kind",
                    )
                    .into());
                }
                if self.notification(notification_id).is_some() {
                    return Err(DomainError::AlreadyExists {
                        entity: "notification",
                        id: notification_id.to_string(),
                    });
                }
                Ok(vec![
                    NotificationRequested {
                        notification_id,
                        endpoint_id,
                        tenant_id,
                        kind,
                        job_id,
                        balance_minor,
                        requested_at: at,
                    }
                    .into(),
                ])
            }
            C::RecordDelivery {
                notification_id,
                status_code,
                at,
            } => {
                if !(200..=299).contains(&status_code) {
                    return Err(
                        ValidationError::new("status_code", "a delivery is a 2xx answer").into(),
                    );
                }
                let n = self.pending_one(notification_id, "record_delivery")?;
                Ok(vec![
                    NotificationDelivered {
                        notification_id,
                        endpoint_id,
                        tenant_id,
                        attempt: n.attempts + 1,
                        status_code,
                        delivered_at: at,
                    }
                    .into(),
                ])
            }
            C::RecordFailedAttempt {
                notification_id,
                status_code,
                error,
                next_attempt_at,
                at,
            } => {
                if next_attempt_at.is_some_and(|next| next <= at) {
                    return Err(ValidationError::new(
                        "next_attempt_at",
                        "must be after the failed attempt",
                    )
                    .into());
                }
                let n = self.pending_one(notification_id, "record_failed_attempt")?;
                let attempt = n.attempts + 1;
                let give_up = next_attempt_at.is_none() || attempt >= MAX_DELIVERY_ATTEMPTS;
                let mut events: Vec<NotificationEvent> = vec![
                    DeliveryAttemptFailed {
                        notification_id,
                        endpoint_id,
                        tenant_id,
                        attempt,
                        status_code,
                        error,
                        next_attempt_at: if give_up { None } else { next_attempt_at },
                        failed_at: at,
                    }
                    .into(),
                ];
                if give_up {
                    events.push(
                        NotificationAbandoned {
                            notification_id,
                            endpoint_id,
                            tenant_id,
                            attempts: attempt,
                            abandoned_at: at,
                        }
                        .into(),
                    );
                }
                Ok(events)
            }
        }
    }

    fn evolve(mut self, event: &NotificationEvent) -> Self {
        use NotificationEvent as E;
        match event {
            E::EndpointRegistered(e) => self.registered = Some(e.clone()),
            E::EndpointRemoved(_) => self.removed = true,
            E::Requested(e) => {
                self.pending.insert(
                    e.notification_id,
                    Notification {
                        requested: e.clone(),
                        status: DeliveryStatus::Pending,
                        attempts: 0,
                        next_attempt_at: None,
                    },
                );
            }
            E::Delivered(e) => {
                if let Some(mut n) = self.pending.remove(&e.notification_id) {
                    n.status = DeliveryStatus::Delivered;
                    n.attempts = e.attempt;
                    n.next_attempt_at = None;
                    self.finished.insert(e.notification_id, n);
                }
            }
            E::AttemptFailed(e) => {
                if let Some(n) = self.pending.get_mut(&e.notification_id) {
                    n.attempts = e.attempt;
                    n.next_attempt_at = e.next_attempt_at;
                }
            }
            E::Abandoned(e) => {
                if let Some(mut n) = self.pending.remove(&e.notification_id) {
                    n.status = DeliveryStatus::Abandoned;
                    n.next_attempt_at = None;
                    self.finished.insert(e.notification_id, n);
                }
            }
        }
        self
    }
}

fn sample_ids() -> (NotificationId, EndpointId, TenantId) {
    (
        NotificationId::fixed(0x4e5f_6a7b_8c9d_4e0f_a1b2_c3d4_e5f6_a7b8),
        EndpointId::fixed(0x8c9d_0e1f_2a3b_4c4d_9e5f_6a7b_8c9d_0e1f),
        TenantId::fixed(0x7d44_4840_9dc0_41d2_a55e_02f7_2e3f_0ca1),
    )
}

impl EventPayload for EndpointRegistered {
    fn sample() -> Self {
        let (_, endpoint_id, tenant_id) = sample_ids();
        Self {
            endpoint_id,
            tenant_id,
            url: WebhookUrl::parse("https://hooks.northlight.example/flatrender").expect("valid"),
            kinds: vec![
                NotificationKind::RenderCompleted,
                NotificationKind::RenderFailed,
                NotificationKind::CreditLow,
            ],
            secret_key_id: SecretKeyId::fixed(0x1a2b_3c4d_5e6f_4708_9192_a3b4_c5d6_e7f8),
            registered_at: sample_time(),
        }
    }
}

impl EventPayload for EndpointRemoved {
    fn sample() -> Self {
        let (_, endpoint_id, tenant_id) = sample_ids();
        Self {
            endpoint_id,
            tenant_id,
            removed_at: sample_time(),
        }
    }
}

impl EventPayload for NotificationRequested {
    fn sample() -> Self {
        let (notification_id, endpoint_id, tenant_id) = sample_ids();
        Self {
            notification_id,
            endpoint_id,
            tenant_id,
            kind: NotificationKind::RenderCompleted,
            job_id: Some(JobId::fixed(0x1b4e_28ba_2fa1_41d2_883f_0016_d3cc_a427)),
            balance_minor: None,
            requested_at: sample_time(),
        }
    }
}

impl EventPayload for NotificationDelivered {
    fn sample() -> Self {
        let (notification_id, endpoint_id, tenant_id) = sample_ids();
        Self {
            notification_id,
            endpoint_id,
            tenant_id,
            attempt: 2,
            status_code: 204,
            delivered_at: sample_time(),
        }
    }
}

impl EventPayload for DeliveryAttemptFailed {
    fn sample() -> Self {
        let (notification_id, endpoint_id, tenant_id) = sample_ids();
        Self {
            notification_id,
            endpoint_id,
            tenant_id,
            attempt: 1,
            status_code: Some(503),
            error: Note::parse("service unavailable").expect("valid"),
            next_attempt_at: Some(sample_time() + chrono::Duration::seconds(30)),
            failed_at: sample_time(),
        }
    }
}

impl EventPayload for NotificationAbandoned {
    fn sample() -> Self {
        let (notification_id, endpoint_id, tenant_id) = sample_ids();
        Self {
            notification_id,
            endpoint_id,
            tenant_id,
            attempts: 10,
            abandoned_at: sample_time(),
        }
    }
}
