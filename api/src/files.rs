//! Scene uploads and rendered outputs, stored content-addressed: a file's
//! name is its SHA-256, so the same bytes are stored once and a download
//! can be checked against its name. On local disk under the data directory
//! (the embedded default), or in S3-compatible object storage shared by
//! every instance (`FLATRENDER_BLOB_URL=s3://bucket`, through the
//! `object_store` crate's [`ObjectStore`] trait): uploads still stream into
//! a local temporary file first (hashed, counted, checked), and only a
//! checked blob is put under `blobs/<aa>/<sha256>`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use axum::body::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::{ObjectStore, ObjectStoreExt};
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
    /// The object storage failed or refused.
    #[error("object storage: {0}")]
    Remote(#[from] object_store::Error),
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// A content-addressed blob store: in a directory, or in object storage
/// with the directory holding temporary files (and per-instance caches:
/// thumbnails, task logs).
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    max_bytes: u64,
    remote: Option<Arc<dyn ObjectStore>>,
}

/// Object storage for the URL `FLATRENDER_BLOB_URL` gives (`s3://bucket`
/// or `s3://bucket/prefix`), with the usual `AWS_*` settings from the
/// environment (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ALLOW_HTTP` for an `http://` endpoint).
pub fn object_storage(url: &str) -> Result<Arc<dyn ObjectStore>, FileError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        FileError::Remote(object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })
    })?;
    if parsed.scheme() != "s3" {
        return Err(FileError::Remote(object_store::Error::NotImplemented {
            operation: format!(
                "blob URL scheme {}: only s3:// is supported",
                parsed.scheme()
            ),
            implementer: "flatrender".into(),
        }));
    }
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_url(url)
        .build()?;
    let prefix = parsed.path().trim_matches('/');
    Ok(if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    })
}

/// The key of a blob in object storage.
fn key_of(sha256: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("blobs/{}/{sha256}", &sha256[..2]))
}

/// `stream`, ending with an error unless its bytes hash to `expected`.
fn checked(
    stream: BoxStream<'static, io::Result<Bytes>>,
    expected: String,
) -> BoxStream<'static, io::Result<Bytes>> {
    let state = (stream, Sha256::new(), expected, false);
    Box::pin(futures_util::stream::try_unfold(
        state,
        |(mut stream, mut hasher, expected, done)| async move {
            if done {
                return Ok(None);
            }
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    hasher.update(&chunk);
                    Ok(Some((chunk, (stream, hasher, expected, false))))
                }
                None => {
                    if hex::encode(hasher.finalize()) != expected {
                        tracing::error!(sha256 = %expected, "a stored blob does not match its digest");
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the stored blob does not match its digest",
                        ));
                    }
                    Ok(None)
                }
            }
        },
    ))
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
            remote: None,
        })
    }

    /// The same store keeping its blobs in `remote` (its directory keeps
    /// temporary files and caches only).
    pub fn with_remote(mut self, remote: Arc<dyn ObjectStore>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Where blobs are kept, for logs and `/readyz`: a directory or the
    /// object store.
    pub fn describe(&self) -> String {
        match &self.remote {
            Some(r) => r.to_string(),
            None => self.root.display().to_string(),
        }
    }

    /// Whether the blobs can be reached (object storage answers).
    pub async fn ready(&self) -> Result<(), FileError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        match remote.head(&key_of(&"0".repeat(64))).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
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
        if let Some(remote) = &self.remote {
            let got = match remote.get(&key_of(sha256)).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let size = got.meta.size;
            let stream = got
                .into_stream()
                .map(|c| c.map_err(io::Error::from))
                .boxed();
            return Ok(Some((size, checked(stream, sha256.to_owned()))));
        }
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
            let mut chunk = vec![0u8; CHUNK];
            let n = file.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            chunk.truncate(n);
            Ok(Some((Bytes::from(chunk), file)))
        });
        Ok(Some((size, checked(Box::pin(chunks), sha256.to_owned()))))
    }

    /// Reads a blob by digest, checking the bytes against it.
    pub async fn get(&self, sha256: &str) -> Result<Option<Vec<u8>>, FileError> {
        let path = self.path_of(sha256)?;
        if let Some(remote) = &self.remote {
            let bytes = match remote.get(&key_of(sha256)).await {
                Ok(got) => got.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if hex::encode(Sha256::digest(&bytes)) != sha256 {
                return Err(FileError::DigestMismatch);
            }
            return Ok(Some(bytes.to_vec()));
        }
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
        if let Some(remote) = &self.store.remote {
            let key = key_of(&self.sha256);
            match remote.head(&key).await {
                Ok(_) => return Ok(stored),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            // Streamed from the file in parts; an object appears whole or
            // not at all. The temporary file goes when `self` drops.
            let mut upload = object_store::WriteMultipart::new(remote.put_multipart(&key).await?);
            let mut file = tokio::fs::File::open(&self.path).await?;
            let mut chunk = vec![0u8; 1024 * 1024];
            loop {
                let n = file.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                upload.wait_for_capacity(4).await?;
                upload.write(&chunk[..n]);
            }
            upload.finish().await?;
            return Ok(stored);
        }
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
    //! One conformance suite for every place blobs can live: the local
    //! directory, object storage in memory, and a real S3-compatible server
    //! (`FLATRENDER_TEST_S3_URL`, started by `.ci/run`; each test under its
    //! own prefix).
    use super::*;

    /// Instantiates every test for each backend.
    macro_rules! every_backend {
        ($($test:ident),* $(,)?) => {
            mod local { $( #[tokio::test] async fn $test() { super::$test(super::Backend::Local).await } )* }
            mod memory { $( #[tokio::test] async fn $test() { super::$test(super::Backend::Memory).await } )* }
            mod s3 { $( #[tokio::test] async fn $test() { if let Some(b) = super::s3() { super::$test(b).await } } )* }
        };
    }

    every_backend!(
        stores_by_digest_once_and_reads_back,
        refuses_oversize_mismatched_and_malformed,
        a_streamed_blob_is_stored_by_digest_and_leaves_no_temporary,
        a_streamed_blob_over_the_limit_or_abandoned_leaves_nothing,
        a_corrupted_blob_is_refused_on_read,
        a_blob_streams_in_chunks_with_its_size,
        two_stores_on_one_backend_share_their_blobs,
    );

    #[derive(Clone)]
    enum Backend {
        Local,
        Memory,
        S3(Arc<dyn ObjectStore>),
    }

    /// The test S3 server under a new prefix, or `None` (said loudly)
    /// when there is none and services are not required.
    fn s3() -> Option<Backend> {
        match std::env::var("FLATRENDER_TEST_S3_URL") {
            Ok(url) if !url.is_empty() => {
                let url = format!("{}/test-{}", url.trim_end_matches('/'), Uuid::new_v4());
                Some(Backend::S3(object_storage(&url).expect("the test S3 URL")))
            }
            _ if std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!("FLATRENDER_REQUIRE_SERVICES=1 but FLATRENDER_TEST_S3_URL is not set")
            }
            _ => {
                eprintln!(
                    "!!! SKIPPED: FLATRENDER_TEST_S3_URL is not set; S3 blob checks did not run"
                );
                None
            }
        }
    }

    /// A store on `backend` in a new directory; stores opened with the
    /// same `remote` share their blobs.
    async fn on(
        backend: &Backend,
        limit: u64,
        remote: &Arc<dyn ObjectStore>,
    ) -> (BlobStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("flatrender-blobs-{}", Uuid::new_v4()));
        let blobs = BlobStore::open(&dir, limit).await.unwrap();
        let blobs = match backend {
            Backend::Local => blobs,
            Backend::Memory | Backend::S3(_) => blobs.with_remote(remote.clone()),
        };
        (blobs, dir)
    }

    fn remote_of(backend: &Backend) -> Arc<dyn ObjectStore> {
        match backend {
            Backend::S3(r) => r.clone(),
            _ => Arc::new(object_store::memory::InMemory::new()),
        }
    }

    async fn store(backend: Backend, limit: u64) -> (BlobStore, PathBuf) {
        on(&backend, limit, &remote_of(&backend)).await
    }

    /// Replaces a stored blob's bytes behind the store's back.
    async fn tamper(blobs: &BlobStore, sha256: &str, bytes: &'static [u8]) {
        match &blobs.remote {
            Some(remote) => {
                remote
                    .put(
                        &key_of(sha256),
                        object_store::PutPayload::from_static(bytes),
                    )
                    .await
                    .unwrap();
            }
            None => std::fs::write(blobs.path_of(sha256).unwrap(), bytes).unwrap(),
        }
    }

    /// Two instances (own directories) on one object store: what one
    /// stores the other reads; a local store keeps to its directory.
    async fn two_stores_on_one_backend_share_their_blobs(backend: Backend) {
        let remote = remote_of(&backend);
        let (one, dir_one) = on(&backend, 1 << 20, &remote).await;
        let (two, dir_two) = on(&backend, 1 << 20, &remote).await;
        let stored = one.put(b"a frame from instance one", None).await.unwrap();
        let read = two.get(&stored.sha256).await.unwrap();
        match backend {
            Backend::Local => assert_eq!(read, None),
            _ => {
                assert_eq!(read.as_deref(), Some(&b"a frame from instance one"[..]));
                assert!(
                    !two.path_of(&stored.sha256).unwrap().exists(),
                    "not on local disk"
                );
                // Stored again through the other: kept once.
                assert_eq!(
                    two.put(b"a frame from instance one", None).await.unwrap(),
                    stored
                );
                two.ready().await.unwrap();
            }
        }
        std::fs::remove_dir_all(dir_one).unwrap();
        std::fs::remove_dir_all(dir_two).unwrap();
    }

    async fn stores_by_digest_once_and_reads_back(backend: Backend) {
        let (blobs, dir) = store(backend, 1024).await;
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

    async fn refuses_oversize_mismatched_and_malformed(backend: Backend) {
        let (blobs, dir) = store(backend, 4).await;
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

    async fn a_streamed_blob_is_stored_by_digest_and_leaves_no_temporary(backend: Backend) {
        let (blobs, dir) = store(backend, 1024).await;
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

    async fn a_streamed_blob_over_the_limit_or_abandoned_leaves_nothing(backend: Backend) {
        let (blobs, dir) = store(backend, 4).await;
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
        let (_, dir) = store(Backend::Local, 1024).await;
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

    async fn a_corrupted_blob_is_refused_on_read(backend: Backend) {
        let (blobs, dir) = store(backend, 1024).await;
        let a = blobs.put(b"frame", None).await.unwrap();
        tamper(&blobs, &a.sha256, b"tampered").await;
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

    async fn a_blob_streams_in_chunks_with_its_size(backend: Backend) {
        let local = matches!(backend, Backend::Local);
        let (blobs, dir) = store(backend, 1 << 20).await;
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let a = blobs.put(&bytes, None).await.unwrap();
        let (size, stream) = blobs.read_stream(&a.sha256).await.unwrap().unwrap();
        assert_eq!(size, bytes.len() as u64);
        let chunks: Vec<io::Result<Bytes>> = futures_util::StreamExt::collect(stream).await;
        // From disk never whole in memory (object storage streams as the
        // server sends).
        assert!(!local || chunks.len() > 1, "read in chunks");
        let read: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(read, bytes);
        assert!(blobs.read_stream(&"0".repeat(64)).await.unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
