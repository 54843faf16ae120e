//! Enrolling a render node: the operator runs `flatrender node enroll` once
//! per machine and copies the printed id, key id and secret into the node's
//! configuration. The secret is shown once and never enters the event log.

use chrono::{DateTime, Utc};
use eventstore::{AnyStore, NodeKey};
use uuid::Uuid;

/// What the operator copies to the node. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The node's id.
    pub node_id: Uuid,
    /// The id of its secret.
    pub key_id: Uuid,
    /// The secret, 32 random bytes as 64 lower-case hex digits.
    pub secret_hex: String,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment")
            .field("node_id", &self.node_id)
            .field("key_id", &self.key_id)
            .field("secret_hex", &"**redacted**")
            .finish()
    }
}

/// Why enrolment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The name is empty, too long, or has characters other than
    /// letters, digits, `-`, `_` and `.`.
    #[error("a node name is 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName,
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] eventstore::StoreError),
}

/// Creates a node id and a secret key for it and stores the key.
pub async fn enrol(
    store: &AnyStore,
    vault: &eventstore::Vault,
    name: &str,
    at: DateTime<Utc>,
) -> Result<Enrolment, EnrolError> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(EnrolError::BadName);
    }
    let mut secret = vec![0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| EnrolError::Random(e.to_string()))?;
    let key = NodeKey {
        node_id: Uuid::new_v4(),
        key_id: Uuid::new_v4(),
        secret,
        name: name.to_string(),
    };
    store.add_node_key(&key, vault, at).await?;
    Ok(Enrolment {
        node_id: key.node_id,
        key_id: key.key_id,
        secret_hex: hex::encode(&key.secret),
    })
}
