//! Users of the public API: registered by an operator (`flatrender user
//! create`, `user remove`), each an `identity` stream. A token is honoured
//! only for a registered user of the token's tenant who was not removed
//! (checked on each request, cached for [`CHECK_TTL`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::identity::Role;
use domain::{Aggregate, Email, Identity, IdentityCommand, IdentityEvent, Label, TenantId, UserId};
use eventstore::{
    Actor, AnyStore, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent,
};
use uuid::Uuid;

/// How long a user check is remembered: a removed user's tokens stop
/// working within this time.
pub const CHECK_TTL: Duration = Duration::from_secs(2);

/// Why a user command failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A value is not acceptable.
    #[error(transparent)]
    Invalid(#[from] domain::ValidationError),
    /// The domain refused the command.
    #[error(transparent)]
    Domain(#[from] domain::DomainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
}

/// A user's identity as its stream has it.
pub async fn load(store: &AnyStore, user: Uuid) -> Result<(Identity, u64), eventstore::StoreError> {
    let events = store.read_stream(user, 1, 10_000).await?;
    let version = events.last().map_or(0, |e| e.stream_version);
    let decoded: Vec<IdentityEvent> = events.iter().filter_map(|e| e.to_domain().ok()).collect();
    Ok((Identity::replay(&decoded), version))
}

async fn command(
    store: &AnyStore,
    user: UserId,
    tenant: TenantId,
    command: IdentityCommand,
) -> Result<(), UserError> {
    let (identity, version) = load(store, user.as_uuid()).await?;
    let events = identity.decide(command)?;
    let meta = EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::System {
            component: "operator".into(),
        },
        trace_id: None,
    };
    store
        .append(AppendRequest {
            stream_id: user.as_uuid(),
            stream_type: "identity".into(),
            tenant_id: Some(tenant.as_uuid()),
            expected: if version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(version)
            },
            events: events
                .iter()
                .map(|e| NewEvent::from_domain(Uuid::new_v4(), e, meta.clone()))
                .collect(),
        })
        .await?;
    Ok(())
}

/// Registers a user of a tenant; returns its id.
pub async fn create(
    store: &AnyStore,
    tenant: TenantId,
    email: &str,
    display_name: &str,
    role: Role,
    at: DateTime<Utc>,
) -> Result<UserId, UserError> {
    let user_id = UserId::new(Uuid::new_v4())?;
    command(
        store,
        user_id,
        tenant,
        IdentityCommand::RegisterUser {
            user_id,
            tenant_id: tenant,
            email: Email::parse(email)?,
            display_name: Label::parse(display_name)?,
            role,
            at,
        },
    )
    .await?;
    Ok(user_id)
}

/// Removes a user: its tokens stop working.
pub async fn remove(store: &AnyStore, user: UserId, at: DateTime<Utc>) -> Result<(), UserError> {
    let (identity, _) = load(store, user.as_uuid()).await?;
    let tenant = identity
        .user()
        .map(|u| u.tenant_id)
        .ok_or(domain::DomainError::NotFound {
            entity: "user",
            id: user.to_string(),
        })?;
    command(store, user, tenant, IdentityCommand::RemoveUser { at }).await
}

/// An active user's tenant and role (`None`: no such active user).
type Who = Option<(TenantId, Role)>;

/// Remembers recent user checks.
#[derive(Debug, Default)]
pub struct UserCheck {
    seen: Mutex<HashMap<Uuid, (Who, Instant)>>,
}

impl UserCheck {
    /// Whether `user` is an active user of `tenant` with `role`.
    pub async fn allows(
        &self,
        store: &AnyStore,
        user: Uuid,
        tenant: TenantId,
        role: Role,
    ) -> Result<bool, eventstore::StoreError> {
        let cached = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.get(&user)
                .filter(|(_, at)| at.elapsed() < CHECK_TTL)
                .map(|(who, _)| *who)
        };
        let who = match cached {
            Some(who) => who,
            None => {
                let (identity, _) = load(store, user).await?;
                let who = identity
                    .user()
                    .filter(|_| identity.is_active())
                    .map(|u| (u.tenant_id, u.role));
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if seen.len() > 100_000 {
                    seen.clear();
                }
                seen.insert(user, (who, Instant::now()));
                who
            }
        };
        Ok(who == Some((tenant, role)))
    }
}
