//! The identity aggregate: a user (a person or a reseller's service account)
//! and the API keys issued to it (stream id = user id). Keys are stored as
//! SHA-256 hashes; the key itself never appears in an event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::error::{DomainError, ValidationError};
use crate::event::{Aggregate, EventPayload, domain_events, sample_time};
use crate::ids::{ApiKeyId, TenantId, UserId};
use crate::text::{Email, KeyPrefix, Label, Note};

/// A user's role within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the tenant, its users, keys and endpoints.
    Admin,
    /// Uploads and renders.
    Member,
    /// Reads history only.
    Auditor,
    /// Runs the farm: a member of its tenant who also sees and manages the
    /// render nodes (drain, enable, disable) of the whole farm.
    Operator,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// List and follow renders.
    #[serde(rename = "renders:read")]
    RendersRead,
    /// Submit, pause, resume, cancel and retry renders.
    #[serde(rename = "renders:write")]
    RendersWrite,
    /// Download files.
    #[serde(rename = "files:read")]
    FilesRead,
    /// Upload and delete files.
    #[serde(rename = "files:write")]
    FilesWrite,
    /// See cost and balance.
    #[serde(rename = "billing:read")]
    BillingRead,
    /// Read the audit history.
    #[serde(rename = "audit:read")]
    AuditRead,
}

/// `identity.user.registered.v1`: a user was registered in a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRegistered {
    /// The user.
    pub user_id: UserId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its e-mail address.
    pub email: Email,
    /// Its display name.
    pub display_name: Label,
    /// Its role.
    pub role: Role,
    /// When.
    pub registered_at: DateTime<Utc>,
}

/// `identity.api_key.issued.v1`: an API key was issued to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIssued {
    /// The owner.
    pub user_id: UserId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The key.
    pub api_key_id: ApiKeyId,
    /// The key's public prefix.
    pub prefix: KeyPrefix,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// SHA-256 of the key (never the key).
    pub key_hash: Sha256Digest,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When.
    pub issued_at: DateTime<Utc>,
}

/// `identity.user.removed.v1`: the user no longer signs in; its tokens
/// and keys stop working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRemoved {
    /// The user.
    pub user_id: UserId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When.
    pub removed_at: DateTime<Utc>,
}

/// `identity.api_key.revoked.v1`: an API key no longer authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRevoked {
    /// The owner.
    pub user_id: UserId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The key.
    pub api_key_id: ApiKeyId,
    /// Why, if given.
    pub reason: Option<Note>,
    /// When.
    pub revoked_at: DateTime<Utc>,
}

domain_events! {
    /// Everything that happens to a user and its API keys.
    pub enum IdentityEvent : "identity", stream_id = user_id {
        /// See [`UserRegistered`].
        UserRegistered(UserRegistered) => "identity.user.registered.v1",
        /// See [`ApiKeyIssued`].
        ApiKeyIssued(ApiKeyIssued) => "identity.api_key.issued.v1",
        /// See [`ApiKeyRevoked`].
        ApiKeyRevoked(ApiKeyRevoked) => "identity.api_key.revoked.v1",
        /// See [`UserRemoved`].
        UserRemoved(UserRemoved) => "identity.user.removed.v1",
    }
}

/// The commands of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityCommand {
    /// Register the user.
    RegisterUser {
        /// The new user's id.
        user_id: UserId,
        /// Its tenant.
        tenant_id: TenantId,
        /// Its e-mail address.
        email: Email,
        /// Its display name.
        display_name: Label,
        /// Its role.
        role: Role,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Issue an API key; the caller generated the key and passes its hash.
    IssueApiKey {
        /// The new key's id.
        api_key_id: ApiKeyId,
        /// Its public prefix.
        prefix: KeyPrefix,
        /// Its scopes: at least one, none twice.
        scopes: Vec<Scope>,
        /// SHA-256 of the key.
        key_hash: Sha256Digest,
        /// Expiry, after `at`, if any.
        expires_at: Option<DateTime<Utc>>,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Remove the user: it signs in no more.
    RemoveUser {
        /// Now.
        at: DateTime<Utc>,
    },
    /// Revoke an active API key.
    RevokeApiKey {
        /// The key.
        api_key_id: ApiKeyId,
        /// Why, if given.
        reason: Option<Note>,
        /// Now.
        at: DateTime<Utc>,
    },
}

/// An API key as evolved from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The issue event.
    pub issued: ApiKeyIssued,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key authenticates at `now`: not revoked, not expired.
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.issued.expires_at.is_none_or(|exp| now < exp)
    }
}

/// A user and its keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    user: Option<UserRegistered>,
    keys: BTreeMap<ApiKeyId, ApiKey>,
    removed_at: Option<DateTime<Utc>>,
}

impl Identity {
    /// The user, once registered.
    pub fn user(&self) -> Option<&UserRegistered> {
        self.user.as_ref()
    }

    /// Whether the user is registered and not removed.
    pub fn is_active(&self) -> bool {
        self.user.is_some() && self.removed_at.is_none()
    }

    /// One API key.
    pub fn api_key(&self, api_key_id: ApiKeyId) -> Option<&ApiKey> {
        self.keys.get(&api_key_id)
    }

    /// All API keys, revoked ones included.
    pub fn api_keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.keys.values()
    }
}

impl Aggregate for Identity {
    type Event = IdentityEvent;
    type Command = IdentityCommand;

    fn decide(&self, command: IdentityCommand) -> Result<Vec<IdentityEvent>, DomainError> {
        use IdentityCommand as C;
        let Some(user) = &self.user else {
            return match command {
                C::RegisterUser {
                    user_id,
                    tenant_id,
                    email,
                    display_name,
                    role,
                    at,
                } => Ok(vec![
                    UserRegistered {
                        user_id,
                        tenant_id,
                        email,
                        display_name,
                        role,
                        registered_at: at,
                    }
                    .into(),
                ]),
                _ => Err(DomainError::NotFound {
                    entity: "user",
                    id: "-".into(),
                }),
            };
        };
        let (user_id, tenant_id) = (user.user_id, user.tenant_id);
        if self.removed_at.is_some() {
            return Err(DomainError::InvalidTransition {
                entity: "user",
                from: "removed",
                command: match command {
                    C::RegisterUser { .. } => "register_user",
                    C::IssueApiKey { .. } => "issue_api_key",
                    C::RevokeApiKey { .. } => "revoke_api_key",
                    C::RemoveUser { .. } => "remove_user",
                },
            });
        }
        match command {
            C::RegisterUser { .. } => Err(DomainError::AlreadyExists {
                entity: "user",
                id: user_id.to_string(),
            }),
            C::RemoveUser { at } => Ok(vec![
                UserRemoved {
                    user_id,
                    tenant_id,
                    removed_at: at,
                }
                .into(),
            ]),
            C::IssueApiKey {
                api_key_id,
                prefix,
                scopes,
                key_hash,
                expires_at,
                at,
            } => {
                if self.keys.contains_key(&api_key_id) {
                    return Err(DomainError::AlreadyExists {
                        entity: "api_key",
                        id: api_key_id.to_string(),
                    });
                }
                if scopes.is_empty() {
                    return Err(
                        ValidationError::new("scopes", "at least one scope is required").into(),
                    );
                }
                let mut sorted = scopes.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != scopes.len() {
                    return Err(ValidationError::new("scopes", "a scope is listed twice").into());
                }
                if expires_at.is_some_and(|exp| exp <= at) {
                    return Err(ValidationError::new("expires_at", "must be in the future").into());
                }
                Ok(vec![
                    ApiKeyIssued {
                        user_id,
                        tenant_id,
                        api_key_id,
                        prefix,
                        scopes,
                        key_hash,
                        expires_at,
                        issued_at: at,
                    }
                    .into(),
                ])
            }
            C::RevokeApiKey {
                api_key_id,
                reason,
                at,
            } => {
                let key = self
                    .keys
                    .get(&api_key_id)
                    .ok_or_else(|| DomainError::NotFound {
                        entity: "api_key",
                        id: api_key_id.to_string(),
                    })?;
                if key.revoked_at.is_some() {
                    return Err(DomainError::InvalidTransition {
                        entity: "api_key",
                        from: "revoked",
                        command: "revoke",
                    });
                }
                Ok(vec![
                    ApiKeyRevoked {
                        user_id,
                        tenant_id,
                        api_key_id,
                        reason,
                        revoked_at: at,
                    }
                    .into(),
                ])
            }
        }
    }

    fn evolve(mut self, event: &IdentityEvent) -> Self {
        match event {
            IdentityEvent::UserRegistered(e) => self.user = Some(e.clone()),
            IdentityEvent::ApiKeyIssued(e) => {
                self.keys.insert(
                    e.api_key_id,
                    ApiKey {
                        issued: e.clone(),
                        revoked_at: None,
                    },
                );
            }
            IdentityEvent::ApiKeyRevoked(e) => {
                if let Some(key) = self.keys.get_mut(&e.api_key_id) {
                    key.revoked_at = Some(e.revoked_at);
                }
            }
            IdentityEvent::UserRemoved(e) => self.removed_at = Some(e.removed_at),
        }
        self
    }
}

fn sample_user() -> (UserId, TenantId) {
    (
        UserId::fixed(0x6a7b_8c9d_0e1f_4a2b_9c3d_4e5f_6a7b_8c9d),
        TenantId::fixed(0x7d44_4840_9dc0_41d2_a55e_02f7_2e3f_0ca1),
    )
}

fn sample_key() -> ApiKeyId {
    ApiKeyId::fixed(0x0f1e_2d3c_4b5a_4968_8776_6554_4332_2110)
}

impl EventPayload for UserRegistered {
    fn sample() -> Self {
        let (user_id, tenant_id) = sample_user();
        Self {
            user_id,
            tenant_id,
            email: Email::parse("ada@northlight.example").expect("valid"),
            display_name: Label::parse("Ada Lovelace").expect("valid"),
            role: Role::Admin,
            registered_at: sample_time(),
        }
    }
}

impl EventPayload for ApiKeyIssued {
    fn sample() -> Self {
        let (user_id, tenant_id) = sample_user();
        Self {
            user_id,
            tenant_id,
            api_key_id: sample_key(),
            prefix: KeyPrefix::parse("fr_live_ab12").expect("valid"),
            scopes: vec![Scope::RendersRead, Scope::RendersWrite, Scope::FilesWrite],
            key_hash: Sha256Digest::parse(
                "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            )
            .expect("valid"),
            expires_at: None,
            issued_at: sample_time(),
        }
    }
}

impl EventPayload for UserRemoved {
    fn sample() -> Self {
        let (user_id, tenant_id) = sample_user();
        Self {
            user_id,
            tenant_id,
            removed_at: sample_time(),
        }
    }
}

impl EventPayload for ApiKeyRevoked {
    fn sample() -> Self {
        let (user_id, tenant_id) = sample_user();
        Self {
            user_id,
            tenant_id,
            api_key_id: sample_key(),
            reason: Some(Note::parse("leaked in a CI log").expect("valid")),
            revoked_at: sample_time(),
        }
    }
}
