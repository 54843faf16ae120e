//! Users of the public API: registered by an operator (`flatrender user
//! create`, `user remove`), each an `identity` stream. A token is honoured
//! only for a registered user of the token's tenant who was not removed
//! (checked on each request, cached for [`CHECK_TTL`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::identity::Role;
use domain::identity::Scope;
use domain::{
    Aggregate, ApiKeyId, Email, Identity, IdentityCommand, IdentityEvent, KeyPrefix, Label,
    Sha256Digest, TenantId, UserId,
};
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
    let operator = Actor::System {
        component: "operator".into(),
    };
    command_as(store, user, tenant, command, operator).await
}

async fn command_as(
    store: &AnyStore,
    user: UserId,
    tenant: TenantId,
    command: IdentityCommand,
    actor: Actor,
) -> Result<(), UserError> {
    let (identity, version) = load(store, user.as_uuid()).await?;
    let events = identity.decide(command)?;
    let meta = EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor,
        trace_id: orchestrator::trace::current(),
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

/// A new API key: its id and its secret, to show once.
#[derive(Debug)]
pub struct IssuedKey {
    /// The key's id (`X-API-Key`).
    pub api_key_id: ApiKeyId,
    /// The secret (never logged: its `Debug` is redacted).
    pub secret: contracts::reseller_signing::ApiKeySecret,
}

/// Issues an API key to an active user, for the user's own tenant: the
/// secret is sealed beside the log first, then `identity.api_key.issued.v1`
/// (id, prefix, scopes, hash) is appended; a key without that event does
/// not authenticate, so a crash between the two leaves nothing usable.
pub async fn issue_api_key(
    store: &AnyStore,
    vault: &eventstore::Vault,
    user: UserId,
    scopes: Vec<Scope>,
    expires_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Result<IssuedKey, UserError> {
    let (identity, _) = load(store, user.as_uuid()).await?;
    let tenant = identity
        .user()
        .filter(|_| identity.is_active())
        .map(|u| u.tenant_id)
        .ok_or(domain::DomainError::NotFound {
            entity: "user",
            id: user.to_string(),
        })?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| eventstore::StoreError::Corrupt(format!("no randomness: {e}")))?;
    let secret = contracts::reseller_signing::ApiKeySecret::from_random(random);
    let api_key_id = ApiKeyId::new(Uuid::new_v4())?;
    store
        .add_api_key_secret(
            &eventstore::ApiKeySecretRow {
                api_key_id: api_key_id.as_uuid(),
                tenant_id: tenant.as_uuid(),
                user_id: user.as_uuid(),
                secret: secret.expose().as_bytes().to_vec(),
            },
            vault,
        )
        .await?;
    let key_hash = Sha256Digest::parse(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        secret.expose().as_bytes(),
    )))?;
    command_as(
        store,
        user,
        tenant,
        IdentityCommand::IssueApiKey {
            api_key_id,
            prefix: KeyPrefix::parse(secret.prefix())?,
            scopes,
            key_hash,
            expires_at,
            at,
        },
        Actor::User { id: user.as_uuid() },
    )
    .await?;
    Ok(IssuedKey { api_key_id, secret })
}

/// Revokes an API key of `tenant` on behalf of `by`: from the next request
/// of every instance it no longer authenticates (each request reads its
/// owner's stream). `None`: no such key in that tenant.
pub async fn revoke_api_key(
    store: &AnyStore,
    vault: &eventstore::Vault,
    tenant: TenantId,
    api_key_id: ApiKeyId,
    reason: Option<domain::Note>,
    by: Actor,
    at: DateTime<Utc>,
) -> Result<Option<()>, UserError> {
    let Some(row) = store.api_key_secret(api_key_id.as_uuid(), vault).await? else {
        return Ok(None);
    };
    if row.tenant_id != tenant.as_uuid() {
        return Ok(None);
    }
    let user = UserId::new(row.user_id)?;
    command_as(
        store,
        user,
        tenant,
        IdentityCommand::RevokeApiKey {
            api_key_id,
            reason,
            at,
        },
        by,
    )
    .await?;
    Ok(Some(()))
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

/// The shortest password `set_password` takes.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Why a password cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password has {MIN_PASSWORD_CHARS} to 1024 characters")]
    Length,
    /// No such active user.
    #[error("no active user {0}")]
    NoUser(Uuid),
    /// Another user with a password has the same e-mail address.
    #[error("another user with a password has the e-mail address {0}")]
    EmailTaken(String),
    /// Hashing failed.
    #[error("hashing the password: {0}")]
    Hash(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
}

fn argon2() -> argon2::Argon2<'static> {
    // Argon2id with the crate's defaults (19 MiB, 2 passes): OWASP's minimum.
    argon2::Argon2::default()
}

/// An argon2id verifier of `password` (a PHC string with a random salt).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    use argon2::PasswordHasher;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?
        .to_string())
}

/// Whether `password` matches `verifier` (the comparison inside is
/// constant-time; a malformed verifier matches nothing).
pub fn verify_password(verifier: &str, password: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::PasswordHash::new(verifier)
        .is_ok_and(|hash| argon2().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A verifier no password matches, checked for unknown addresses so that
/// an unknown address takes as long as a wrong password.
pub fn decoy_verifier() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 32];
        let _ = getrandom::fill(&mut random);
        hash_password(&hex::encode(random)).unwrap_or_default()
    })
}

/// Sets an active user's password (stored as a verifier beside the log,
/// never in it): the user can then sign in at `POST /v1/auth/token`.
pub async fn set_password(
    store: &AnyStore,
    user: Uuid,
    password: &str,
    at: DateTime<Utc>,
) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=1024).contains(&chars) {
        return Err(PasswordError::Length);
    }
    let (identity, _) = load(store, user).await?;
    let registered = identity
        .user()
        .filter(|_| identity.is_active())
        .ok_or(PasswordError::NoUser(user))?;
    let email = registered.email.as_str().to_lowercase();
    if let Some(other) = store.user_password(&email).await?
        && other.user_id != user
    {
        return Err(PasswordError::EmailTaken(email));
    }
    let verifier = hash_password(password)?;
    store
        .set_user_password(
            &eventstore::UserPassword {
                user_id: user,
                tenant_id: registered.tenant_id.as_uuid(),
                email,
                verifier,
            },
            at,
        )
        .await?;
    Ok(())
}

/// The user a password signs in, with the tenant and role its identity
/// has now: `None` for an unknown address, a wrong password or a removed
/// user (the caller cannot tell which).
pub async fn sign_in(
    store: &AnyStore,
    email: &str,
    password: &str,
) -> Result<Option<(Uuid, TenantId, Role)>, eventstore::StoreError> {
    let email = email.trim().to_lowercase();
    let found = store.user_password(&email).await?;
    let verifier = found
        .as_ref()
        .map_or_else(|| decoy_verifier().to_string(), |f| f.verifier.clone());
    // At most two verifications at once (each costs ~20 ms of a core and
    // 19 MiB): a flood of sign-ins queues here instead of taking the machine.
    static VERIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = VERIFYING.acquire().await.ok();
    let password = password.to_string();
    let matches = tokio::task::spawn_blocking(move || verify_password(&verifier, &password))
        .await
        .unwrap_or(false);
    let Some(found) = found.filter(|_| matches) else {
        return Ok(None);
    };
    let (identity, _) = load(store, found.user_id).await?;
    Ok(identity
        .user()
        .filter(|_| identity.is_active())
        .map(|u| (found.user_id, u.tenant_id, u.role)))
}
