//! Secrets at rest: node secrets (and, later, API-key secrets) must be read
//! back by the server to check HMACs, so they cannot be stored hashed; they
//! are stored sealed with XChaCha20-Poly1305 under a master key from the
//! configuration, bound to their row (the associated data names the
//! secret's kind and ids, so a sealed value copied to another row does not
//! open).
//!
//! A sealed value is `"frv1"`, the master key's 8-byte id (the first bytes
//! of the SHA-256 of the key), a random 24-byte nonce, then the ciphertext
//! and its 16-byte tag. A vault knows its current key and any previous
//! ones: it opens values sealed under any of them and seals under the
//! current one, so a rotation is: give every instance the new key as
//! current and the old one as previous, re-seal every row
//! ([`crate::AnyStore::reseal_secrets`]), then drop the old key.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"frv1";
const ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
/// Bytes a sealed value adds to its secret.
pub const OVERHEAD: usize = MAGIC.len() + ID_LEN + NONCE_LEN + 16;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    /// A master key must be 32 bytes (64 hex digits).
    #[error("a master key is 32 bytes, written as 64 hex digits")]
    BadKey,
    /// The value was sealed under a master key this vault does not have.
    #[error("sealed under master key {0}, which this server does not have")]
    UnknownKey(String),
    /// The value is not a sealed value, or it was altered, or it belongs
    /// to another row.
    #[error("a sealed secret does not open (altered, or moved from another row)")]
    Corrupt,
    /// A node secret is at least 32 bytes.
    #[error("a secret is at least 32 bytes")]
    ShortSecret,
    /// The system's random source failed.

    #[error("no randomness: {0}")]
    Random(String),
}

/// A 32-byte master key. `Debug` shows its id only.
#[derive(Clone)]
pub struct MasterKey {
    id: [u8; ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// The key of these 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        if bytes.len() != 32 {
            return Err(VaultError::BadKey);
        }
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&digest[..ID_LEN]);
        Ok(Self {
            id,
            cipher: XChaCha20Poly1305::new_from_slice(bytes).map_err(|_| VaultError::BadKey)?,
        })
    }

    /// The key written as 64 hex digits (white space around is ignored).
    pub fn from_hex(text: &str) -> Result<Self, VaultError> {
        let bytes = hex::decode(text.trim()).map_err(|_| VaultError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    /// A new random key, as the 64 hex digits to keep.
    pub fn generate() -> Result<String, VaultError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| VaultError::Random(e.to_string()))?;
        Ok(hex::encode(bytes))
    }

    /// A new random key, for a process that keeps it nowhere (tests, a
    /// server state before its configured key is set).
    pub fn ephemeral() -> Result<Self, VaultError> {
        Self::from_hex(&Self::generate()?)
    }

    /// The key's public id (hex), as sealed values name it.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }
}

/// The master keys of a server: the current one, and previous ones that
/// still open older values.
#[derive(Debug, Clone)]
pub struct Vault {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Vault {
    /// A vault sealing under `current`.
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// The same vault, also opening values sealed under `previous`.
    pub fn with_previous(mut self, previous: MasterKey) -> Self {
        if previous.id != self.current.id {
            self.previous.push(previous);
        }
        self
    }

    /// The id of the key new values are sealed under.
    pub fn current_id(&self) -> String {
        self.current.id()
    }

    /// Seals `secret` for the row that `context` names.
    pub fn seal(&self, secret: &[u8], context: &[u8]) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| VaultError::Random(e.to_string()))?;
        let sealed = self
            .current
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: context,
                },
            )
            .map_err(|_| VaultError::Corrupt)?;
        let mut out = Vec::with_capacity(OVERHEAD + secret.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Whether `stored` is a sealed value (rather than a plaintext secret
    /// written before secrets were sealed).
    pub fn is_sealed(stored: &[u8]) -> bool {
        stored.len() >= OVERHEAD && stored.starts_with(MAGIC)
    }

    /// Whether `stored` is sealed under the current key.
    pub fn is_current(&self, stored: &[u8]) -> bool {
        Self::is_sealed(stored) && stored[MAGIC.len()..MAGIC.len() + ID_LEN] == self.current.id
    }

    /// Opens a value sealed for the row that `context` names.
    pub fn open(&self, stored: &[u8], context: &[u8]) -> Result<Vec<u8>, VaultError> {
        if !Self::is_sealed(stored) {
            return Err(VaultError::Corrupt);
        }
        let id = &stored[MAGIC.len()..MAGIC.len() + ID_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| VaultError::UnknownKey(hex::encode(id)))?;
        let nonce: [u8; NONCE_LEN] = stored[MAGIC.len() + ID_LEN..MAGIC.len() + ID_LEN + NONCE_LEN]
            .try_into()
            .map_err(|_| VaultError::Corrupt)?;
        key.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &stored[MAGIC.len() + ID_LEN + NONCE_LEN..],
                    aad: context,
                },
            )
            .map_err(|_| VaultError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::new(MasterKey::from_hex(&MasterKey::generate().unwrap()).unwrap())
    }

    #[test]
    fn a_sealed_secret_opens_for_its_row_only() {
        let v = vault();
        let sealed = v
            .seal(b"0123456789abcdef0123456789abcdef", b"node:1:2")
            .unwrap();
        assert!(Vault::is_sealed(&sealed) && v.is_current(&sealed));
        assert!(!sealed.windows(16).any(|w| w == b"0123456789abcdef"));
        assert_eq!(
            v.open(&sealed, b"node:1:2").unwrap(),
            b"0123456789abcdef0123456789abcdef"
        );
        assert_eq!(v.open(&sealed, b"node:1:3"), Err(VaultError::Corrupt));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(v.open(&altered, b"node:1:2"), Err(VaultError::Corrupt));
        // Another key does not open it, and says which key it needs.
        assert!(matches!(
            vault().open(&sealed, b"node:1:2"),
            Err(VaultError::UnknownKey(_))
        ));
        // Twice the same secret: two different values (random nonces).
        assert_ne!(
            sealed,
            v.seal(b"0123456789abcdef0123456789abcdef", b"node:1:2")
                .unwrap()
        );
    }

    #[test]
    fn a_rotated_vault_opens_old_values_and_seals_under_the_new_key() {
        let old = vault();
        let sealed = old.seal(b"secret", b"ctx").unwrap();
        let new = vault().with_previous(old.current.clone());
        assert_eq!(new.open(&sealed, b"ctx").unwrap(), b"secret");
        assert!(!new.is_current(&sealed));
        let resealed = new.seal(b"secret", b"ctx").unwrap();
        assert!(new.is_current(&resealed));
        assert!(matches!(
            old.open(&resealed, b"ctx"),
            Err(VaultError::UnknownKey(_))
        ));
    }

    #[test]
    fn keys_are_32_bytes_of_hex() {
        assert_eq!(MasterKey::from_hex("abcd").unwrap_err(), VaultError::BadKey);
        assert_eq!(
            MasterKey::from_hex(&"zz".repeat(32)).unwrap_err(),
            VaultError::BadKey
        );
        let k = MasterKey::from_hex(&format!("  {}\n", "ab".repeat(32))).unwrap();
        assert_eq!(k.id().len(), 16);
        assert!(!format!("{k:?}").contains(&"ab".repeat(32)));
    }
}
