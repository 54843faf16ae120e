//! What a running task prints and how far it is, sent to the server while
//! the task runs: log lines batched (every second, or sooner at 64 KiB),
//! fine progress at most once a second (the latest value), each request
//! signed like every other and retried while the server cannot take it.
//! Lines that reached the server are kept there even if this node dies
//! next; the last batch is sent before the task's completion or failure.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::{AgentClient, LeaseRef};
use crate::renderer::OutputStream;

/// A batch is sent when it holds this many bytes, or after [`EVERY`].
pub const BATCH_BYTES: usize = 64 * 1024;
/// How often lines and progress are sent.
pub const EVERY: Duration = Duration::from_secs(1);
/// Longer lines are sent as several (the contract's limit, in characters).
const MAX_LINE_CHARS: usize = 800;
/// The contract's limit of lines per request.
const MAX_LINES: usize = 100;
/// A line longer than this many pieces is cut.
const MAX_PIECES: usize = 64;
/// Bytes kept while the server cannot take them; beyond, lines are
/// counted and dropped (a marker line says how many).
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// What the renderer thread hands over.
#[derive(Debug)]
enum Note {
    Line(OutputStream, String),
    Progress {
        frame: u32,
        fraction: f64,
    },
    /// Send what is left and end (renderer threads may still hold a sink).
    End,
}

/// The renderer's side: cheap to clone into the blocking render call.
#[derive(Debug, Clone)]
pub(crate) struct OutputSink {
    notes: mpsc::UnboundedSender<Note>,
    since: std::time::Instant,
    /// Milliseconds from `since` to the last line, progress or frame.
    last: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl OutputSink {
    /// Counts now as a sign of output (a finished frame).
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last
            .fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the last sign of output (or since the task started).
    pub(crate) fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }

    /// A printed line.
    pub(crate) fn line(&self, stream: OutputStream, text: &str) {
        self.touch();
        for piece in pieces(text).take(MAX_PIECES) {
            let _ = self.notes.send(Note::Line(stream, piece));
        }
    }

    /// How far `frame` is (0 to 1).
    pub(crate) fn progress(&self, frame: u32, fraction: f64) {
        self.touch();
        let _ = self.notes.send(Note::Progress { frame, fraction });
    }
}

/// A line as the contract takes it: pieces of at most
/// [`MAX_LINE_CHARS`] characters (an empty line is one empty piece).
fn pieces(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let now = rest?;
        let cut = now
            .char_indices()
            .nth(MAX_LINE_CHARS)
            .map_or(now.len(), |(i, _)| i);
        rest = (cut < now.len()).then(|| &now[cut..]);
        Some(now[..cut].to_owned())
    })
}

/// Sends a task's output until [`Output::finish`].
#[derive(Debug)]
pub(crate) struct Output {
    sink: OutputSink,
    task: tokio::task::JoinHandle<()>,
}

impl Output {
    /// Starts sending `lease`'s output; `give_up_after` bounds how long one
    /// batch is retried while the server cannot take it.
    pub(crate) fn start(client: AgentClient, lease: LeaseRef, give_up_after: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(client, lease, give_up_after, rx));
        Self {
            sink: OutputSink {
                notes: tx,
                since: std::time::Instant::now(),
                last: Default::default(),
            },
            task,
        }
    }

    /// Where the renderer's lines and progress go.
    pub(crate) fn sink(&self) -> OutputSink {
        self.sink.clone()
    }

    /// Sends what is left, then ends.
    pub(crate) async fn finish(self) {
        let _ = self.sink.notes.send(Note::End);
        let _ = self.task.await;
    }

    /// Ends without sending what is left (the lease is gone).
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Pending {
    lines: Vec<(&'static str, String)>,
    bytes: usize,
    dropped_lines: u64,
}

async fn run(
    client: AgentClient,
    lease: LeaseRef,
    give_up_after: Duration,
    mut rx: mpsc::UnboundedReceiver<Note>,
) {
    let mut pending = Pending::default();
    let mut progress: Option<(u32, f64)> = None;
    let mut sent_progress: Option<(u32, f64)> = None;
    // The server refused the lease: nothing more is sent.
    let mut refused = false;
    let mut next = Instant::now() + EVERY;
    loop {
        let note = tokio::select! {
            note = rx.recv() => note,
            () = tokio::time::sleep_until(next) => {
                next = Instant::now() + EVERY;
                if !refused {
                    refused |= !flush(&client, lease, &mut pending, give_up_after).await;
                }
                if !refused && progress != sent_progress
                    && let Some((frame, fraction)) = progress
                {
                    // Progress is a hint: not retried (the next one follows).
                    if let Err(e) = client.progress_percent(lease, frame, fraction * 100.0).await {
                        refused |= !e.is_transient();
                    }
                    sent_progress = progress;
                }
                continue;
            }
        };
        match note {
            Some(Note::Line(stream, text)) => {
                if pending.bytes + text.len() > MAX_PENDING {
                    pending.dropped_lines += 1;
                } else {
                    pending.bytes += text.len() + 32;
                    pending.lines.push((stream.as_str(), text));
                }
                if pending.bytes >= BATCH_BYTES && !refused {
                    refused |= !flush(&client, lease, &mut pending, give_up_after).await;
                }
            }
            Some(Note::Progress { frame, fraction }) => progress = Some((frame, fraction)),
            Some(Note::End) | None => {
                if !refused {
                    flush(&client, lease, &mut pending, give_up_after).await;
                }
                return;
            }
        }
    }
}

/// Sends the pending lines (in requests of at most 1,000 lines); false
/// when the server refused them for good (the lease is gone).
async fn flush(
    client: &AgentClient,
    lease: LeaseRef,
    pending: &mut Pending,
    give_up_after: Duration,
) -> bool {
    if pending.dropped_lines > 0 {
        let marker = format!(
            "[flatrender-node] {} lines dropped: the server could not take them in time",
            pending.dropped_lines
        );
        pending.lines.push(("stderr", marker));
        pending.dropped_lines = 0;
    }
    while !pending.lines.is_empty() {
        let mut n = 0;
        let mut bytes = 0;
        while n < pending.lines.len() && n < MAX_LINES && (n == 0 || bytes < BATCH_BYTES) {
            bytes += pending.lines[n].1.len();
            n += 1;
        }
        let since = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            match client.logs(lease, &pending.lines[..n]).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && since.elapsed() < give_up_after => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::warn!(task_id = %lease.task_id, error = %e, "log lines not taken; dropped");
                    pending.lines.clear();
                    pending.bytes = 0;
                    return e.is_transient();
                }
            }
        }
        pending.lines.drain(..n);
    }
    pending.bytes = 0;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_sent_in_pieces_the_contract_takes() {
        assert_eq!(pieces("").collect::<Vec<_>>(), vec![String::new()]);
        assert_eq!(
            pieces("short").collect::<Vec<_>>(),
            vec!["short".to_string()]
        );
        let long = "é".repeat(MAX_LINE_CHARS * 2 + 5);
        let parts: Vec<String> = pieces(&long).collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= MAX_LINE_CHARS));
        assert_eq!(parts.concat(), long);
    }
}
