//! Task logs: one file per task attempt, beside the data directory (never
//! in the event log): `<logs>/<tenant>/<render>/<task>/<attempt>.log`.
//!
//! Lines are appended as they arrive from the agent (each batch written
//! and flushed before the agent's request is answered), so whatever
//! reached the server before a node died is kept. An attempt's log is
//! capped ([`TaskLogs::DEFAULT_CAP`]): past the cap one marker line is
//! written and later bytes are counted in `<attempt>.dropped`; a served
//! log ends with that count. Lines are stored as sent, never interpreted;
//! paths are built from parsed ids only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use uuid::Uuid;

/// Which output of the renderer a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a renderer's output (without its newline).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    /// Where it came from.
    pub stream: Stream,
    /// The text, as printed.
    pub text: String,
}

/// One task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt {
    /// The tenant (the first level of the path: logs are tenant-scoped).
    pub tenant_id: Uuid,
    /// The render.
    pub render_id: Uuid,
    /// The task.
    pub task_id: Uuid,
    /// The lease epoch of the attempt (1, 2, ...).
    pub attempt: u32,
}

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// Bytes written to the log.
    pub written: u64,
    /// Bytes dropped because the attempt's log is full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Open {
    /// Bytes in the log, the marker excepted.
    size: u64,
    dropped: u64,
    loaded: bool,
    /// The log, open for appending (kept while the attempt writes).
    file: Option<tokio::fs::File>,
}

/// The task logs of one server.
#[derive(Debug, Clone)]
pub struct TaskLogs {
    root: PathBuf,
    cap: u64,
    open: Arc<std::sync::Mutex<HashMap<Attempt, Arc<Mutex<Open>>>>>,
}

/// Attempts kept in memory (size, open file) before those not in use are
/// let go (their sizes are read again from the files when they write):
/// bounds the open files.
const OPEN_LIMIT: usize = 512;

impl TaskLogs {
    /// The default cap of one attempt's log.
    pub const DEFAULT_CAP: u64 = 10 * 1024 * 1024;

    /// Logs under `root` (created when first written), each attempt's
    /// capped at `cap` bytes.
    pub fn new(root: &Path, cap: u64) -> Self {
        Self {
            root: root.to_path_buf(),
            cap,
            open: Arc::default(),
        }
    }

    /// The cap of one attempt's log.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    fn path(&self, a: &Attempt, extension: &str) -> PathBuf {
        self.root
            .join(a.tenant_id.to_string())
            .join(a.render_id.to_string())
            .join(a.task_id.to_string())
            .join(format!("{}.{extension}", a.attempt))
    }

    fn entry(&self, a: Attempt) -> Arc<Mutex<Open>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= OPEN_LIMIT && !open.contains_key(&a) {
            open.retain(|_, v| Arc::strong_count(v) > 1);
        }
        open.entry(a).or_default().clone()
    }

    /// Appends lines to an attempt's log, up to its cap.
    pub async fn append(&self, a: Attempt, lines: &[LogLine]) -> std::io::Result<Appended> {
        let entry = self.entry(a);
        let mut open = entry.lock().await;
        let path = self.path(&a, "log");
        if !open.loaded {
            open.size = match tokio::fs::metadata(&path).await {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            };
            open.dropped = read_dropped(&self.path(&a, "dropped")).await?;
            open.loaded = true;
        }
        let mut out = Vec::new();
        let mut dropped = 0u64;
        for line in lines {
            let n = line.text.len() as u64 + 1;
            if open.dropped == 0 && dropped == 0 && open.size + out.len() as u64 + n <= self.cap {
                out.extend_from_slice(line.text.as_bytes());
                out.push(b'\n');
            } else {
                dropped += n;
            }
        }
        let written = out.len() as u64;
        let first_drop = open.dropped == 0 && dropped > 0;
        if first_drop {
            out.extend_from_slice(
                format!(
                    "[flatrender] this attempt's log reached its cap of {} bytes; later lines are dropped (their count is at the end)\n",
                    self.cap
                )
                .as_bytes(),
            );
        }
        if !out.is_empty() {
            if open.file.is_none() {
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await?;
                open.file = Some(file);
            }
            if let Some(file) = open.file.as_mut() {
                let written = async {
                    file.write_all(&out).await?;
                    file.flush().await
                }
                .await;
                if let Err(e) = written {
                    // Opened again next time (a removed directory, a full disk).
                    open.file = None;
                    return Err(e);
                }
            }
        }
        open.size += written;
        if dropped > 0 {
            open.dropped += dropped;
            write_dropped(&self.path(&a, "dropped"), open.dropped).await?;
        }
        Ok(Appended { written, dropped })
    }

    /// An attempt's log (the marker and the count of dropped bytes at the
    /// end, if any were), or `None` if nothing was written for it; with
    /// `tail`, only its last `tail` lines.
    pub async fn read(&self, a: Attempt, tail: Option<usize>) -> std::io::Result<Option<Vec<u8>>> {
        let entry = self.entry(a);
        let _open = entry.lock().await;
        let mut text = match tokio::fs::read(self.path(&a, "log")).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let dropped = read_dropped(&self.path(&a, "dropped")).await?;
        if dropped > 0 {
            text.extend_from_slice(format!("[flatrender] {dropped} bytes dropped\n").as_bytes());
        }
        if let Some(n) = tail {
            let start = tail_start(&text, n);
            text.drain(..start);
        }
        Ok(Some(text))
    }

    /// The attempts of a task that have a log, in order.
    pub async fn attempts(
        &self,
        tenant_id: Uuid,
        render_id: Uuid,
        task_id: Uuid,
    ) -> std::io::Result<Vec<(u32, u64)>> {
        let dir = self
            .root
            .join(tenant_id.to_string())
            .join(render_id.to_string())
            .join(task_id.to_string());
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(attempt) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            out.push((attempt, entry.metadata().await?.len()));
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// Where the last `n` lines of `text` start.
fn tail_start(text: &[u8], n: usize) -> usize {
    if n == 0 {
        return text.len();
    }
    // A final newline ends the last line; it does not start another.
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

async fn read_dropped(path: &Path) -> std::io::Result<u64> {
    match tokio::fs::read_to_string(path).await {
        Ok(t) => Ok(t.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

async fn write_dropped(path: &Path, dropped: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("dropped.tmp");
    tokio::fs::write(&tmp, dropped.to_string()).await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            stream: Stream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail_start(b"a\nb\nc\n", 2), 2);
        assert_eq!(tail_start(b"a\nb\nc\n", 3), 0);
        assert_eq!(tail_start(b"a\nb\nc\n", 9), 0);
        assert_eq!(tail_start(b"a\nb\nc", 1), 4);
        assert_eq!(tail_start(b"a\nb\n", 0), 4);
    }

    #[tokio::test]
    async fn a_full_log_keeps_its_cap_and_counts_what_it_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = TaskLogs::new(dir.path(), 10);
        let a = Attempt {
            tenant_id: Uuid::new_v4(),
            render_id: Uuid::new_v4(),
            task_id: Uuid::new_v4(),
            attempt: 1,
        };
        assert_eq!(logs.read(a, None).await.expect("read"), None);
        let first = logs
            .append(a, &[line("1234"), line("5678")])
            .await
            .expect("append");
        assert_eq!(
            first,
            Appended {
                written: 10,
                dropped: 0
            }
        );
        let second = logs
            .append(a, &[line("x"), line("yy")])
            .await
            .expect("append");
        assert_eq!(
            second,
            Appended {
                written: 0,
                dropped: 5
            }
        );
        // A new instance (sizes reloaded from the files) goes on counting.
        let again = TaskLogs::new(dir.path(), 10);
        assert_eq!(
            again.append(a, &[line("z")]).await.expect("append").dropped,
            2
        );
        let text = String::from_utf8(again.read(a, None).await.expect("read").expect("log"))
            .expect("utf-8");
        assert!(
            text.starts_with(
                "1234\n5678\n[flatrender] this attempt's log reached its cap of 10 bytes"
            ),
            "{text}"
        );
        assert!(text.ends_with("[flatrender] 7 bytes dropped\n"), "{text}");
        let tail = again.read(a, Some(1)).await.expect("read").expect("log");
        assert_eq!(tail, b"[flatrender] 7 bytes dropped\n");
        assert_eq!(
            again
                .attempts(a.tenant_id, a.render_id, a.task_id)
                .await
                .expect("attempts")
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>(),
            vec![1]
        );
    }
}
