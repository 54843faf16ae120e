//! What the dispatcher knows of the endpoints (from the log's
//! `notification.*` events), and which events ask for a notification.

use std::collections::{BTreeMap, HashMap};

use domain::notification::NotificationKind;
use domain::{Aggregate, EndpointId, NotificationEndpoint, NotificationEvent, NotificationId};
use eventstore::RecordedEvent;
use uuid::Uuid;

/// The events that ask for a notification (see [`wanted`]).
pub(super) const WANTED_KEYS: [&str; 4] = [
    "render.job.completed.v1",
    "render.job.failed.v1",
    "render.job.cancelled.v1",
    "tenant.credit_charged.v1",
];

/// The catalog's `notification` events: what the registry is made of.
pub(super) fn registry_keys() -> Vec<&'static str> {
    contracts::catalog()
        .entries()
        .filter(|e| e.stream_type == "notification")
        .map(|e| e.routing_key.as_str())
        .collect()
}

/// The keys the active dispatcher follows: the registry's and the wanted.
pub(super) fn followed_keys() -> Vec<&'static str> {
    let mut keys = registry_keys();
    keys.extend(WANTED_KEYS);
    keys
}

/// The notification an event asks for, if any: (kind, tenant, job,
/// balance).
pub(super) fn wanted(
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
pub(super) fn notification_id(endpoint: EndpointId, event_id: Uuid) -> NotificationId {
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

/// The endpoints as the dispatcher last read the log.
#[derive(Debug, Default)]
pub(super) struct Registry {
    pub(super) endpoints: HashMap<EndpointId, NotificationEndpoint>,
    /// The stream version each endpoint's state is at.
    pub(super) versions: HashMap<EndpointId, u64>,
    pub(super) by_tenant: BTreeMap<Uuid, Vec<EndpointId>>,
}

impl Registry {
    pub(super) fn apply(&mut self, event: &RecordedEvent) {
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
    pub(super) fn apply_own(&mut self, id: EndpointId, version: u64, events: &[NotificationEvent]) {
        if self.versions.get(&id).copied().unwrap_or(0) != version {
            return;
        }
        let state = self.endpoints.remove(&id).unwrap_or_default();
        let state = events.iter().fold(state, |s, e| s.evolve(e));
        self.endpoints.insert(id, state);
        self.versions.insert(id, version + events.len() as u64);
    }

    /// The endpoints of `tenant` that take `kind` and were registered by
    /// `at` (an endpoint gets no notifications of what happened before it).
    pub(super) fn subscribers(
        &self,
        tenant: Uuid,
        kind: NotificationKind,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Vec<(EndpointId, domain::TenantId)> {
        self.by_tenant
            .get(&tenant)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let e = self.endpoints.get(id)?;
                let r = e.registration()?;
                (e.wants(kind) && r.registered_at <= at).then_some((*id, r.tenant_id))
            })
            .collect()
    }
}
