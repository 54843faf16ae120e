//! Node credentials beside the event log (never in it): the HMAC secrets
//! that render nodes sign with, looked up by node and key id, stored
//! sealed under the server's master key (see [`crate::vault`]).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::any::AnyStore;
use crate::error::StoreError;
use crate::hashing::format_time;
use crate::vault::Vault;

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

/// What a node secret's sealed value is bound to: its row.
fn node_context(node_id: Uuid, key_id: Uuid) -> Vec<u8> {
    let mut out = b"node_credentials:".to_vec();
    out.extend_from_slice(node_id.as_bytes());
    out.extend_from_slice(key_id.as_bytes());
    out
}

/// What a webhook secret's sealed value is bound to: its row.
fn webhook_context(endpoint_id: Uuid, secret_key_id: Uuid) -> Vec<u8> {
    let mut out = b"webhook_secrets:".to_vec();
    out.extend_from_slice(endpoint_id.as_bytes());
    out.extend_from_slice(secret_key_id.as_bytes());
    out
}

/// What an API key secret's sealed value is bound to: its row.
fn api_key_context(api_key_id: Uuid, tenant_id: Uuid) -> Vec<u8> {
    let mut out = b"api_key_secrets:".to_vec();
    out.extend_from_slice(api_key_id.as_bytes());
    out.extend_from_slice(tenant_id.as_bytes());
    out
}

/// An API key's secret and whose key it is. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecretRow {
    /// The key.
    pub api_key_id: Uuid,
    /// The tenant it acts for.
    pub tenant_id: Uuid,
    /// The user it was issued to (whose identity stream holds its state).
    pub user_id: Uuid,
    /// The secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ApiKeySecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeySecretRow")
            .field("api_key_id", &self.api_key_id)
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("secret", &"**redacted**")
            .finish()
    }
}

/// A stored secret as the vault opens it; a plaintext one (written before
/// secrets were sealed, until [`AnyStore::reseal_secrets`] seals it) as is.
fn open_secret(vault: &Vault, stored: Vec<u8>, context: &[u8]) -> Result<Vec<u8>, StoreError> {
    if Vault::is_sealed(&stored) {
        Ok(vault.open(&stored, context)?)
    } else {
        Ok(stored)
    }
}

impl AnyStore {
    /// Stores a new key for a node, its secret sealed by `vault`.
    pub async fn add_node_key(
        &self,
        key: &NodeKey,
        vault: &Vault,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if key.secret.len() < 32 {
            return Err(crate::vault::VaultError::ShortSecret.into());
        }
        let sealed = vault.seal(&key.secret, &node_context(key.node_id, key.key_id))?;
        match self {
            AnyStore::Postgres(s) => {
                sqlx::query(
                    "INSERT INTO node_credentials (node_id, key_id, secret, name, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(key.node_id)
                .bind(key.key_id)
                .bind(&sealed)
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
                    .bind(&sealed)
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

    /// The node's key with this id, unless revoked, its secret opened by
    /// `vault`.
    pub async fn node_key(
        &self,
        node_id: Uuid,
        key_id: Uuid,
        vault: &Vault,
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
        let Some((stored, name)) = row else {
            return Ok(None);
        };
        Ok(Some(NodeKey {
            node_id,
            key_id,
            secret: open_secret(vault, stored, &node_context(node_id, key_id))?,
            name,
        }))
    }

    /// Seals every stored secret (node, webhook and API key secrets) that is not
    /// sealed under the vault's current key: plaintext ones of older
    /// stores, and ones sealed under a previous key (a rotation). Each row
    /// is rewritten only if it still holds what was read. Returns how many
    /// were rewritten.
    pub async fn reseal_secrets(&self, vault: &Vault) -> Result<u64, StoreError> {
        let mut done = 0;
        for (table, a, b, context) in [
            (
                "node_credentials",
                "node_id",
                "key_id",
                node_context as fn(Uuid, Uuid) -> Vec<u8>,
            ),
            (
                "webhook_secrets",
                "endpoint_id",
                "secret_key_id",
                webhook_context,
            ),
            (
                "api_key_secrets",
                "api_key_id",
                "tenant_id",
                api_key_context,
            ),
        ] {
            let select = format!("SELECT {a}, {b}, secret FROM {table}");
            let rows: Vec<(Uuid, Uuid, Vec<u8>)> = match self {
                AnyStore::Postgres(s) => {
                    sqlx::query_as(sqlx::AssertSqlSafe(select))
                        .fetch_all(s.pool())
                        .await?
                }
                AnyStore::Sqlite(s) => {
                    sqlx::query_as(sqlx::AssertSqlSafe(select))
                        .fetch_all(s.readers())
                        .await?
                }
            };
            let update = format!(
                "UPDATE {table} SET secret = $1 WHERE {a} = $2 AND {b} = $3 AND secret = $4"
            );
            for (x, y, stored) in rows {
                if vault.is_current(&stored) {
                    continue;
                }
                let context = context(x, y);
                let secret = open_secret(vault, stored.clone(), &context)?;
                let sealed = vault.seal(&secret, &context)?;
                let changed = match self {
                    AnyStore::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                        .bind(&sealed)
                        .bind(x)
                        .bind(y)
                        .bind(&stored)
                        .execute(s.pool())
                        .await?
                        .rows_affected(),
                    AnyStore::Sqlite(s) => s
                        .with_writer(async |conn| {
                            sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                                .bind(&sealed)
                                .bind(x)
                                .bind(y)
                                .bind(&stored)
                                .execute(&mut *conn)
                                .await
                        })
                        .await?
                        .rows_affected(),
                };
                done += changed;
            }
        }
        Ok(done)
    }

    /// Stores a webhook endpoint's signing secret, sealed by `vault`.
    pub async fn add_webhook_secret(
        &self,
        endpoint_id: Uuid,
        secret_key_id: Uuid,
        secret: &[u8],
        vault: &Vault,
    ) -> Result<(), StoreError> {
        if secret.len() < 24 {
            return Err(crate::vault::VaultError::ShortSecret.into());
        }
        let sealed = vault.seal(secret, &webhook_context(endpoint_id, secret_key_id))?;
        let sql =
            "INSERT INTO webhook_secrets (endpoint_id, secret_key_id, secret) VALUES ($1, $2, $3)";
        match self {
            AnyStore::Postgres(s) => {
                sqlx::query(sql)
                    .bind(endpoint_id)
                    .bind(secret_key_id)
                    .bind(&sealed)
                    .execute(s.pool())
                    .await?;
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    sqlx::query(sql)
                        .bind(endpoint_id)
                        .bind(secret_key_id)
                        .bind(&sealed)
                        .execute(&mut *conn)
                        .await
                })
                .await?;
            }
        }
        Ok(())
    }

    /// A webhook endpoint's signing secret, opened by `vault`.
    pub async fn webhook_secret(
        &self,
        endpoint_id: Uuid,
        secret_key_id: Uuid,
        vault: &Vault,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let sql =
            "SELECT secret FROM webhook_secrets WHERE endpoint_id = $1 AND secret_key_id = $2";
        let stored: Option<Vec<u8>> = match self {
            AnyStore::Postgres(s) => {
                sqlx::query_scalar(sql)
                    .bind(endpoint_id)
                    .bind(secret_key_id)
                    .fetch_optional(s.pool())
                    .await?
            }
            AnyStore::Sqlite(s) => {
                sqlx::query_scalar(sql)
                    .bind(endpoint_id)
                    .bind(secret_key_id)
                    .fetch_optional(s.readers())
                    .await?
            }
        };
        stored
            .map(|v| open_secret(vault, v, &webhook_context(endpoint_id, secret_key_id)))
            .transpose()
    }

    /// Stores an API key's secret, sealed by `vault` and bound to the key
    /// and its tenant.
    pub async fn add_api_key_secret(
        &self,
        row: &ApiKeySecretRow,
        vault: &Vault,
    ) -> Result<(), StoreError> {
        if row.secret.len() < 32 {
            return Err(crate::vault::VaultError::ShortSecret.into());
        }
        let sealed = vault.seal(&row.secret, &api_key_context(row.api_key_id, row.tenant_id))?;
        let sql = "INSERT INTO api_key_secrets (api_key_id, tenant_id, user_id, secret) VALUES ($1, $2, $3, $4)";
        match self {
            AnyStore::Postgres(s) => {
                sqlx::query(sql)
                    .bind(row.api_key_id)
                    .bind(row.tenant_id)
                    .bind(row.user_id)
                    .bind(&sealed)
                    .execute(s.pool())
                    .await?;
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    sqlx::query(sql)
                        .bind(row.api_key_id)
                        .bind(row.tenant_id)
                        .bind(row.user_id)
                        .bind(&sealed)
                        .execute(&mut *conn)
                        .await
                })
                .await?;
            }
        }
        Ok(())
    }

    /// An API key's secret and owner, opened by `vault` (`None`: no such
    /// key). Whether the key is still active is its owner's identity stream.
    pub async fn api_key_secret(
        &self,
        api_key_id: Uuid,
        vault: &Vault,
    ) -> Result<Option<ApiKeySecretRow>, StoreError> {
        let sql = "SELECT tenant_id, user_id, secret FROM api_key_secrets WHERE api_key_id = $1";
        let row: Option<(Uuid, Uuid, Vec<u8>)> = match self {
            AnyStore::Postgres(s) => {
                sqlx::query_as(sql)
                    .bind(api_key_id)
                    .fetch_optional(s.pool())
                    .await?
            }
            AnyStore::Sqlite(s) => {
                sqlx::query_as(sql)
                    .bind(api_key_id)
                    .fetch_optional(s.readers())
                    .await?
            }
        };
        let Some((tenant_id, user_id, stored)) = row else {
            return Ok(None);
        };
        Ok(Some(ApiKeySecretRow {
            api_key_id,
            tenant_id,
            user_id,
            secret: open_secret(vault, stored, &api_key_context(api_key_id, tenant_id))?,
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
