//! Node credentials beside the event log (never in it): the HMAC secrets
//! that render nodes sign with, looked up by node and key id.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::any::AnyStore;
use crate::error::StoreError;
use crate::hashing::format_time;

/// A node's secret key. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeKey {
    /// The node.
    pub node_id: Uuid,
    /// The key's id.
    pub key_id: Uuid,
    /// The secret bytes (at least 32).
    pub secret: Vec<u8>,
    /// The operator's name for the node.
    pub name: String,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("node_id", &self.node_id)
            .field("key_id", &self.key_id)
            .field("secret", &"**redacted**")
            .field("name", &self.name)
            .finish()
    }
}

impl AnyStore {
    /// Stores a new key for a node.
    pub async fn add_node_key(&self, key: &NodeKey, at: DateTime<Utc>) -> Result<(), StoreError> {
        match self {
            AnyStore::Postgres(s) => {
                sqlx::query(
                    "INSERT INTO node_credentials (node_id, key_id, secret, name, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(key.node_id)
                .bind(key.key_id)
                .bind(&key.secret)
                .bind(&key.name)
                .bind(at)
                .execute(s.pool())
                .await?;
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    sqlx::query(
                        "INSERT INTO node_credentials (node_id, key_id, secret, name, created_at) VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(key.node_id)
                    .bind(key.key_id)
                    .bind(&key.secret)
                    .bind(&key.name)
                    .bind(format_time(at))
                    .execute(&mut *conn)
                    .await
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The node's key with this id, unless revoked.
    pub async fn node_key(
        &self,
        node_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<NodeKey>, StoreError> {
        let row: Option<(Vec<u8>, String)> = match self {
            AnyStore::Postgres(s) => {
                sqlx::query_as(
                    "SELECT secret, name FROM node_credentials WHERE node_id = $1 AND key_id = $2 AND revoked_at IS NULL",
                )
                .bind(node_id)
                .bind(key_id)
                .fetch_optional(s.pool())
                .await?
            }
            AnyStore::Sqlite(s) => {
                sqlx::query_as(
                    "SELECT secret, name FROM node_credentials WHERE node_id = ? AND key_id = ? AND revoked_at IS NULL",
                )
                .bind(node_id)
                .bind(key_id)
                .fetch_optional(s.readers())
                .await?
            }
        };
        Ok(row.map(|(secret, name)| NodeKey {
            node_id,
            key_id,
            secret,
            name,
        }))
    }

    /// Revokes every key of the node except `keep` (a rotation); returns how many.
    pub async fn revoke_node_keys(
        &self,
        node_id: Uuid,
        keep: Option<Uuid>,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let keep = keep.unwrap_or(Uuid::nil());
        let done = match self {
            AnyStore::Postgres(s) => {
                sqlx::query(
                    "UPDATE node_credentials SET revoked_at = $3 WHERE node_id = $1 AND key_id <> $2 AND revoked_at IS NULL",
                )
                .bind(node_id)
                .bind(keep)
                .bind(at)
                .execute(s.pool())
                .await?
                .rows_affected()
            }
            AnyStore::Sqlite(s) => s
                .with_writer(async |conn| {
                    sqlx::query(
                        "UPDATE node_credentials SET revoked_at = ? WHERE node_id = ? AND key_id <> ? AND revoked_at IS NULL",
                    )
                    .bind(format_time(at))
                    .bind(node_id)
                    .bind(keep)
                    .execute(&mut *conn)
                    .await
                })
                .await?
                .rows_affected(),
        };
        Ok(done)
    }
}

/// A user's password verifier (an argon2id PHC string, never the
/// password). `Debug` never shows the verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct UserPassword {
    /// The user.
    pub user_id: Uuid,
    /// The user's tenant.
    pub tenant_id: Uuid,
    /// The user's e-mail address, lower case.
    pub email: String,
    /// The verifier.
    pub verifier: String,
}

impl std::fmt::Debug for UserPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserPassword")
            .field("user_id", &self.user_id)
            .field("tenant_id", &self.tenant_id)
            .field("email", &self.email)
            .field("verifier", &"**redacted**")
            .finish()
    }
}

impl AnyStore {
    /// Sets a user's password verifier (replacing an earlier one). Another
    /// user with a password and the same e-mail address is a conflict.
    pub async fn set_user_password(
        &self,
        p: &UserPassword,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Postgres(s) => {
                sqlx::query(
                    "INSERT INTO user_passwords (user_id, tenant_id, email, verifier, set_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email, verifier = EXCLUDED.verifier, set_at = EXCLUDED.set_at",
                )
                .bind(p.user_id)
                .bind(p.tenant_id)
                .bind(&p.email)
                .bind(&p.verifier)
                .bind(at)
                .execute(s.pool())
                .await?;
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    sqlx::query(
                        "INSERT INTO user_passwords (user_id, tenant_id, email, verifier, set_at) VALUES (?, ?, ?, ?, ?) \
                         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, verifier = excluded.verifier, set_at = excluded.set_at",
                    )
                    .bind(p.user_id)
                    .bind(p.tenant_id)
                    .bind(&p.email)
                    .bind(&p.verifier)
                    .bind(format_time(at))
                    .execute(&mut *conn)
                    .await
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The password verifier of the user with this e-mail address (lower
    /// case), if one was set.
    pub async fn user_password(&self, email: &str) -> Result<Option<UserPassword>, StoreError> {
        let row: Option<(Uuid, Uuid, String, String)> = match self {
            AnyStore::Postgres(s) => sqlx::query_as(
                "SELECT user_id, tenant_id, email, verifier FROM user_passwords WHERE email = $1",
            )
            .bind(email)
            .fetch_optional(s.pool())
            .await?,
            AnyStore::Sqlite(s) => sqlx::query_as(
                "SELECT user_id, tenant_id, email, verifier FROM user_passwords WHERE email = ?",
            )
            .bind(email)
            .fetch_optional(s.readers())
            .await?,
        };
        Ok(
            row.map(|(user_id, tenant_id, email, verifier)| UserPassword {
                user_id,
                tenant_id,
                email,
                verifier,
            }),
        )
    }
}
