//! Scene uploads and rendered outputs, stored content-addressed on local disk
//! under the data directory: a file's name is its SHA-256, so the same bytes
//! are stored once and a download can be checked against its name.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Larger than the limit.
    #[error("file is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes do not hash to the digest the sender claimed.
    #[error("content does not match its SHA-256")]
    DigestMismatch,
    /// Not a 64-character lower-case hex digest.
    #[error("not a SHA-256 digest")]
    BadDigest,
    /// The disk failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// A content-addressed blob store in a directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    max_bytes: u64,
}

impl BlobStore {
    /// A store in `root` (created if missing) refusing blobs over `max_bytes`.
    pub async fn open(root: &Path, max_bytes: u64) -> Result<Self, FileError> {
        tokio::fs::create_dir_all(root.join("tmp")).await?;
        Ok(Self {
            root: root.to_path_buf(),
            max_bytes,
        })
    }

    /// The largest blob accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn path_of(&self, sha256: &str) -> Result<PathBuf, FileError> {
        if sha256.len() != 64
            || !sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(FileError::BadDigest);
        }
        Ok(self.root.join(&sha256[..2]).join(sha256))
    }

    /// Stores bytes; if `expected_sha256` is given, refuses content that does
    /// not match it. Writing goes through a temporary file and a rename, so a
    /// crash never leaves a partial blob under its digest.
    pub async fn put(
        &self,
        bytes: &[u8],
        expected_sha256: Option<&str>,
    ) -> Result<StoredBlob, FileError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(FileError::TooLarge {
                size,
                limit: self.max_bytes,
            });
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = expected_sha256 {
            self.path_of(expected)?;
            if expected != sha256 {
                return Err(FileError::DigestMismatch);
            }
        }
        let path = self.path_of(&sha256)?;
        if tokio::fs::try_exists(&path).await? {
            return Ok(StoredBlob {
                sha256,
                size_bytes: size,
            });
        }
        let tmp = self.root.join("tmp").join(Uuid::new_v4().to_string());
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        drop(file);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(&tmp, &path).await?;
        Ok(StoredBlob {
            sha256,
            size_bytes: size,
        })
    }

    /// Reads a blob by digest, checking the bytes against it.
    pub async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, FileError> {
        let path = self.path_of(sha256)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == sha256 => Ok(Some(bytes)),
            Ok(_) => Err(FileError::DigestMismatch),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(limit: u64) -> (BlobStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("flatrender-blobs-{}", Uuid::new_v4()));
        (BlobStore::open(&dir, limit).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn stores_by_digest_once_and_reads_back() {
        let (blobs, dir) = store(1024).await;
        let a = blobs.put(b"hello", None).await.unwrap();
        assert_eq!(
            a.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(blobs.put(b"hello", Some(&a.sha256)).await.unwrap(), a);
        assert_eq!(
            blobs.get(&a.sha256).await.unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(blobs.get(&"0".repeat(64)).await.unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn refuses_oversize_mismatched_and_malformed() {
        let (blobs, dir) = store(4).await;
        assert!(matches!(
            blobs.put(b"hello", None).await,
            Err(FileError::TooLarge { size: 5, limit: 4 })
        ));
        assert!(matches!(
            blobs.put(b"hey", Some(&"a".repeat(64))).await,
            Err(FileError::DigestMismatch)
        ));
        for bad in ["../../etc/passwd", "ABC", &"g".repeat(64)] {
            assert!(matches!(blobs.get(bad).await, Err(FileError::BadDigest)));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_corrupted_blob_is_refused_on_read() {
        let (blobs, dir) = store(1024).await;
        let a = blobs.put(b"frame", None).await.unwrap();
        std::fs::write(blobs.path_of(&a.sha256).unwrap(), b"tampered").unwrap();
        assert!(matches!(
            blobs.get(&a.sha256).await,
            Err(FileError::DigestMismatch)
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
