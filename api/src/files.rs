//! Scene uploads and rendered outputs, stored content-addressed on local disk
//! under the data directory: a file's name is its SHA-256, so the same bytes
//! are stored once and a download can be checked against its name.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use futures_util::stream::BoxStream;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// A temporary file not written to for this long is left over from a
/// process that died mid-upload, and is removed when a store opens. An
/// upload in progress (in this or another process sharing the directory)
/// writes far more often: a body that stalls is cut off long before.
pub const STALE_TEMPORARY_AFTER: Duration = Duration::from_secs(10 * 60);

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
    /// Temporary files of uploads that a dead process left behind (not
    /// written to for [`STALE_TEMPORARY_AFTER`]) are removed.
    pub async fn open(root: &Path, max_bytes: u64) -> Result<Self, FileError> {
        Self::open_removing_older_than(root, max_bytes, STALE_TEMPORARY_AFTER).await
    }

    /// Like [`BlobStore::open`], removing temporary files not written to for
    /// `stale_after`.
    pub async fn open_removing_older_than(
        root: &Path,
        max_bytes: u64,
        stale_after: Duration,
    ) -> Result<Self, FileError> {
        let tmp = root.join("tmp");
        tokio::fs::create_dir_all(&tmp).await?;
        let removed = tokio::task::spawn_blocking(move || remove_stale(&tmp, stale_after))
            .await
            .map_err(io::Error::other)??;
        if removed > 0 {
            tracing::info!(removed, "removed stale temporary upload files");
        }
        Ok(Self {
            root: root.to_path_buf(),
            max_bytes,
        })
    }

    /// The directory blobs are kept in.
    pub fn root(&self) -> &Path {
        &self.root
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

    /// Stores bytes held in memory (small files such as scenes); if
    /// `expected_sha256` is given, refuses content that does not match it.
    /// Writing goes through a temporary file and a rename, so a crash never
    /// leaves a partial blob under its digest.
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
        if let Some(expected) = expected_sha256 {
            self.path_of(expected)?;
            if expected != hex::encode(Sha256::digest(bytes)) {
                return Err(FileError::DigestMismatch);
            }
        }
        let mut writer = self.writer().await?;
        writer.write(bytes).await?;
        writer.finish().await?.store().await
    }

    /// A blob written piece by piece (an upload streamed from the network):
    /// into a temporary file, hashed and counted against the limit as it
    /// goes. Nothing is stored until [`TempBlob::store`]; the temporary file
    /// is removed on every other path (an error, a client that goes away).
    pub async fn writer(&self) -> Result<BlobWriter, FileError> {
        let path = self.root.join("tmp").join(Uuid::new_v4().to_string());
        let file = tokio::fs::File::create(&path).await?;
        Ok(BlobWriter {
            temp: Some(TempBlob {
                store: self.clone(),
                path,
                sha256: String::new(),
                size_bytes: 0,
            }),
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
        })
    }

    /// Reads a blob by digest in chunks, never whole into memory: its size
    /// and a stream of its bytes, checked against the digest as they go. A
    /// blob found corrupted at the end ends the stream with an error (a
    /// response built on it is cut short instead of completing).
    pub async fn read_stream(
        &self,
        sha256: &str,
    ) -> Result<Option<(u64, BoxStream<'static, io::Result<Bytes>>)>, FileError> {
        const CHUNK: usize = 64 * 1024;
        let path = self.path_of(sha256)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        let expected = sha256.to_owned();
        let state = (file, Sha256::new(), expected);
        let stream = futures_util::stream::try_unfold(
            state,
            |(mut file, mut hasher, expected)| async move {
                let mut chunk = vec![0u8; CHUNK];
                let n = file.read(&mut chunk).await?;
                if n == 0 {
                    if hex::encode(hasher.finalize()) != expected {
                        tracing::error!(sha256 = %expected, "a stored blob does not match its digest");
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the stored blob does not match its digest",
                        ));
                    }
                    return Ok(None);
                }
                chunk.truncate(n);
                hasher.update(&chunk);
                Ok(Some((Bytes::from(chunk), (file, hasher, expected))))
            },
        );
        Ok(Some((size, Box::pin(stream))))
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

/// Removes the files in `tmp` not modified for `stale_after`; answers how
/// many.
fn remove_stale(tmp: &Path, stale_after: Duration) -> io::Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in std::fs::read_dir(tmp)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if meta.is_file() && age >= stale_after {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                // Another instance sharing the directory got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// A blob being written: see [`BlobStore::writer`].
#[derive(Debug)]
pub struct BlobWriter {
    /// The temporary file (removed when dropped).
    temp: Option<TempBlob>,
    file: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha256,
}

impl BlobWriter {
    /// Appends bytes; refuses (and removes the file) once the total is over
    /// the store's limit.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        let Some(temp) = self.temp.as_mut() else {
            return Err(io::Error::other("the writer failed before").into());
        };
        let size = temp.size_bytes + bytes.len() as u64;
        let limit = temp.store.max_bytes;
        if size > limit {
            self.temp = None;
            return Err(FileError::TooLarge { size, limit });
        }
        temp.size_bytes = size;
        self.hasher.update(bytes);
        if let Err(e) = self.file.write_all(bytes).await {
            self.temp = None;
            return Err(e.into());
        }
        Ok(())
    }

    /// The bytes written so far.
    pub fn size_bytes(&self) -> u64 {
        self.temp.as_ref().map_or(0, |t| t.size_bytes)
    }

    /// Flushes the file to disk: the complete blob, not yet stored.
    pub async fn finish(mut self) -> Result<TempBlob, FileError> {
        let mut temp = self
            .temp
            .take()
            .ok_or_else(|| io::Error::other("the writer failed before"))?;
        self.file.flush().await?;
        self.file.get_ref().sync_all().await?;
        temp.sha256 = hex::encode(self.hasher.finalize());
        Ok(temp)
    }
}

/// A complete blob in a temporary file, hashed, not yet stored; the file is
/// removed when this is dropped unless [`TempBlob::store`] moved it into
/// place.
#[derive(Debug)]
pub struct TempBlob {
    store: BlobStore,
    path: PathBuf,
    sha256: String,
    size_bytes: u64,
}

impl TempBlob {
    /// The temporary file (to inspect the content before storing it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lower-case hex SHA-256 of the content.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Its size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Moves the file under its digest (once: the same content already
    /// stored is kept and the temporary file removed).
    pub async fn store(self) -> Result<StoredBlob, FileError> {
        let path = self.store.path_of(&self.sha256)?;
        let stored = StoredBlob {
            sha256: self.sha256.clone(),
            size_bytes: self.size_bytes,
        };
        if tokio::fs::try_exists(&path).await? {
            return Ok(stored);
        }
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(&self.path, &path).await?;
        Ok(stored)
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        // After `store` renamed it there is nothing left to remove.
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temporary file");
            }
            _ => {}
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

    fn temporaries(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("tmp")).unwrap().count()
    }

    #[tokio::test]
    async fn a_streamed_blob_is_stored_by_digest_and_leaves_no_temporary() {
        let (blobs, dir) = store(1024).await;
        let mut writer = blobs.writer().await.unwrap();
        writer.write(b"hel").await.unwrap();
        writer.write(b"lo").await.unwrap();
        let temp = writer.finish().await.unwrap();
        assert_eq!(std::fs::read(temp.path()).unwrap(), b"hello");
        assert_eq!(temp.size_bytes(), 5);
        let stored = temp.store().await.unwrap();
        assert_eq!(stored, blobs.put(b"hello", None).await.unwrap());
        assert_eq!(temporaries(&dir), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_streamed_blob_over_the_limit_or_abandoned_leaves_nothing() {
        let (blobs, dir) = store(4).await;
        let mut writer = blobs.writer().await.unwrap();
        writer.write(b"hey").await.unwrap();
        assert!(matches!(
            writer.write(b"yo").await,
            Err(FileError::TooLarge { size: 5, limit: 4 })
        ));
        assert_eq!(temporaries(&dir), 0);
        assert!(writer.write(b"").await.is_err());
        let mut abandoned = blobs.writer().await.unwrap();
        abandoned.write(b"hey").await.unwrap();
        assert_eq!(temporaries(&dir), 1);
        drop(abandoned);
        let unstored = blobs.writer().await.unwrap().finish().await.unwrap();
        drop(unstored);
        assert_eq!(temporaries(&dir), 0);
        assert_eq!(blobs.get(&node_digest(b"hey")).await.unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn node_digest(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[tokio::test]
    async fn opening_removes_stale_temporaries_and_keeps_recent_ones() {
        let (_, dir) = store(1024).await;
        let old = dir.join("tmp").join("left-by-a-killed-process");
        let recent = dir.join("tmp").join("another-instance-writing");
        std::fs::write(&old, b"partial").unwrap();
        std::fs::write(&recent, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - STALE_TEMPORARY_AFTER - Duration::from_secs(1))
            .unwrap();
        BlobStore::open(&dir, 1024).await.unwrap();
        assert!(!old.exists(), "a stale temporary file is removed");
        assert!(
            recent.exists(),
            "a recent one may be another instance's upload"
        );
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
        // Streamed, it ends in an error instead of completing.
        let (_, stream) = blobs.read_stream(&a.sha256).await.unwrap().unwrap();
        let read: Vec<io::Result<Bytes>> = futures_util::StreamExt::collect(stream).await;
        assert!(read.last().unwrap().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_blob_streams_in_chunks_with_its_size() {
        let (blobs, dir) = store(1 << 20).await;
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let a = blobs.put(&bytes, None).await.unwrap();
        let (size, stream) = blobs.read_stream(&a.sha256).await.unwrap().unwrap();
        assert_eq!(size, bytes.len() as u64);
        let chunks: Vec<io::Result<Bytes>> = futures_util::StreamExt::collect(stream).await;
        assert!(chunks.len() > 1, "read in chunks");
        let read: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(read, bytes);
        assert!(blobs.read_stream(&"0".repeat(64)).await.unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
