//! The agent's main loop: register, heartbeat, long-poll for work, render,
//! upload, report, and drain on shutdown.
//!
//! - Claims back off exponentially with jitter while the orchestrator is
//!   unreachable or failing (0.5 s doubling to 4 s, ±50 %); as soon as any
//!   request succeeds again (a heartbeat, say) the backoff starts over and
//!   a pending wait is cut short, so work resumes within a heartbeat.
//! - The client fails over between the configured orchestrator URLs (see
//!   [`crate::client`]).
//! - Every assignment's orchestrator signature is checked by the client
//!   before anything is downloaded or run.
//! - Inputs are downloaded once, checked by SHA-256, and cached by digest.
//! - The renderer runs with a cancel token that a heartbeat answer trips
//!   when the lease was revoked (requeued, cancelled job): the child process
//!   group is killed and nothing more is reported for that lease.
//! - Completions, failures and releases that cannot be delivered are kept
//!   and retried until the orchestrator accepts or refuses them.
//! - Uploads and progress reports of a running task are retried while the
//!   orchestrator cannot take them, for at most
//!   [`AgentSettings::give_up_after`]; then the task is given back: its
//!   lease is released (now, or from the outbox once the orchestrator
//!   answers again) so that it is requeued at once instead of when the
//!   lease expires.
//! - On shutdown the running task is stopped and its lease released.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;

mod output;

use output::{Output, OutputSink};

use crate::client::{AgentClient, Assignment, ClientError, LeaseRef};
use crate::renderer::{CancelToken, FrameJob, RenderError, RenderParams, Renderers, Resolution};

/// How the agent runs (see `flatrender-node --help` for where each comes from).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Where inputs are cached and frames are rendered.
    pub data_dir: PathBuf,
    /// The capabilities reported at registration (the contract's `Capabilities`).
    pub capabilities: serde_json::Value,
    /// How often to heartbeat.
    pub heartbeat_every: Duration,
    /// How long one claim waits for work (at most 30 s).
    pub claim_wait_seconds: u32,
    /// Stop after this many tasks (for tests and benchmarks); `None` runs on.
    pub max_tasks: Option<usize>,
    /// How registration, claims and a running task's uploads and reports
    /// back off while they fail.
    pub backoff: Backoff,
    /// How long a running task's uploads and reports are retried while the
    /// orchestrator cannot take them before the task is given back.
    pub give_up_after: Duration,
}

impl AgentSettings {
    /// How long a running task's uploads and reports are retried by
    /// default before the task is given back.
    pub const GIVE_UP_AFTER: Duration = Duration::from_secs(15);
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Tasks completed and accepted.
    pub completed: usize,
    /// Tasks failed and reported.
    pub failed: usize,
    /// Leases revoked while rendering.
    pub revoked: usize,
    /// Frames rendered and uploaded.
    pub frames: usize,
    /// Tasks given back (lease released) because their uploads or reports
    /// could not reach the orchestrator.
    pub abandoned: usize,
}

/// Why the agent stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The orchestrator refused the node (not enrolled, revoked key, …).
    #[error("the orchestrator refused this node: {0}")]
    Refused(ClientError),
    /// Local disk trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A report that must reach the orchestrator.
#[derive(Debug, Clone)]
enum Report {
    Complete(LeaseRef),
    /// The lease, the reason, and the cause when a timeout stopped it.
    Fail(LeaseRef, String, Option<&'static str>),
    Release(LeaseRef),
}

/// The running agent.
#[derive(Debug)]
pub struct Agent {
    client: AgentClient,
    renderers: Arc<Renderers>,
    settings: AgentSettings,
    held: Arc<Mutex<HashMap<uuid::Uuid, (u32, CancelToken)>>>,
    outbox: VecDeque<Report>,
}

/// Exponential backoff with jitter: the `attempt`-th wait (from 0) is
/// `first × 2^attempt`, at most `cap`, times a random factor in 0.5..1.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The base of the first wait.
    pub first: Duration,
    /// The largest base.
    pub cap: Duration,
}

impl Backoff {
    /// 0.5 s doubling to 4 s (so no wait is longer than 6 s).
    pub const DEFAULT: Self = Self {
        first: Duration::from_millis(500),
        cap: Duration::from_secs(4),
    };

    /// The wait before retry number `attempt + 1`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .first
            .saturating_mul(1 << attempt.min(20))
            .min(self.cap);
        let mut raw = [0u8; 2];
        let r = if getrandom::fill(&mut raw).is_ok() {
            u16::from_le_bytes(raw)
        } else {
            32_768
        };
        base.mul_f64(0.5 + f64::from(r) / 65_536.0)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How rendering a task's frames ended: as a task ends, or failed with
/// the renderer's reason (reported once the output is sent).
enum Step {
    End(TaskEnd),
    Fail(String, Option<&'static str>),
}

/// A render's timeouts, as its assignment gives them.
struct Limits {
    task: Option<Duration>,
    stall: Option<Duration>,
}

impl Limits {
    /// Resolves once the task ran past its timeout, or its renderer went
    /// silent (no line, no progress, no finished frame) past the stall
    /// timeout: the cause and the reason to report. Never without limits.
    async fn overdue(&self, sink: &OutputSink) -> (&'static str, String) {
        if self.task.is_none() && self.stall.is_none() {
            return std::future::pending().await;
        }
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(limit) = self.task
                && started.elapsed() >= limit
            {
                return (
                    "timed_out",
                    format!(
                        "timed_out: the task ran longer than its task_timeout_seconds ({} s)",
                        limit.as_secs()
                    ),
                );
            }
            if let Some(limit) = self.stall
                && sink.silent_for() >= limit
            {
                return (
                    "stalled",
                    format!(
                        "stalled: no output and no progress for its stall_timeout_seconds ({} s)",
                        limit.as_secs()
                    ),
                );
            }
        }
    }
}

enum TaskEnd {
    Completed(usize),
    Failed,
    Revoked,
    /// The orchestrator could not take the task's uploads or reports: the
    /// lease is to be released.
    Abandoned,
    Shutdown,
}

impl Agent {
    /// An agent over a signed client and the renderers configured here.
    pub fn new(client: AgentClient, renderers: Renderers, settings: AgentSettings) -> Self {
        Self {
            client,
            renderers: Arc::new(renderers),
            settings,
            held: Arc::default(),
            outbox: VecDeque::new(),
        }
    }

    /// Runs until `shutdown` resolves (or `max_tasks` were done).
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<RunSummary, AgentError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        for dir in ["cache", "work"] {
            let path = self.settings.data_dir.join(dir);
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|source| AgentError::Io {
                    context: format!("creating {}", path.display()),
                    source,
                })?;
        }
        // Register, backing off while the orchestrator is unreachable or
        // failing; a refusal (unknown node, revoked key) ends the run.
        let mut attempt = 0;
        loop {
            match self.client.register(&self.settings.capabilities).await {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "registration failed; retrying");
                }
                Err(e) => return Err(AgentError::Refused(e)),
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.backoff.delay(attempt)) => {}
                () = &mut shutdown => return Ok(RunSummary::default()),
            }
            attempt += 1;
        }
        let heartbeat = self.spawn_heartbeat(stop_rx);
        let mut summary = RunSummary::default();
        let mut successes = self.client.successes();
        let mut attempt = 0;
        let result = loop {
            self.flush_outbox().await;
            if self.settings.max_tasks.is_some_and(|m| {
                summary.completed + summary.failed + summary.revoked + summary.abandoned >= m
            }) {
                break Ok(());
            }
            // Successes from now on (the claim's own, a heartbeat's) end a
            // backoff after this claim.
            successes.borrow_and_update();
            let claim = tokio::select! {
                c = self.client.claim(self.settings.claim_wait_seconds) => c,
                () = &mut shutdown => break Ok(()),
            };
            let error = match claim {
                Ok(Some(assignment)) => {
                    attempt = 0;
                    // The orchestrator answers: deliver what is owed first.
                    self.flush_outbox().await;
                    match self.run_task(&assignment, &mut shutdown).await {
                        TaskEnd::Completed(frames) => {
                            summary.completed += 1;
                            summary.frames += frames;
                        }
                        TaskEnd::Failed => summary.failed += 1,
                        TaskEnd::Revoked => summary.revoked += 1,
                        TaskEnd::Abandoned => summary.abandoned += 1,
                        TaskEnd::Shutdown => break Ok(()),
                    }
                    continue;
                }
                Ok(None) => {
                    attempt = 0;
                    continue;
                }
                Err(e) => e,
            };
            if error.status() == Some(StatusCode::UNAUTHORIZED) {
                tracing::error!(error = %error, "the orchestrator refuses this node's signature");
            } else {
                tracing::warn!(error = %error, "claim failed; backing off");
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.backoff.delay(attempt)) => attempt += 1,
                Ok(()) = successes.changed() => {
                    tracing::info!("the orchestrator answers again; claiming now");
                    attempt = 0;
                }
                () = &mut shutdown => break Ok(()),
            }
        };
        // Deliver what is owed before leaving (bounded).
        for _ in 0..5 {
            if self.outbox.is_empty() {
                break;
            }
            self.flush_outbox().await;
            if !self.outbox.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let _ = stop_tx.send(true);
        heartbeat.abort();
        result.map(|()| summary)
    }

    fn spawn_heartbeat(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let held = self.held.clone();
        let every = self.settings.heartbeat_every;
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let leases: Vec<LeaseRef> = lock(&held)
                    .iter()
                    .map(|(task_id, (epoch, _))| LeaseRef {
                        task_id: *task_id,
                        lease_epoch: *epoch,
                    })
                    .collect();
                match client.heartbeat(&leases).await {
                    Ok(stop_list) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!(server = %client.current_server(), "heartbeat answered again");
                        }
                        let held = lock(&held);
                        for lease in stop_list {
                            if let Some((epoch, cancel)) = held.get(&lease.task_id)
                                && *epoch == lease.lease_epoch
                            {
                                tracing::warn!(task_id = %lease.task_id, "lease revoked; stopping the renderer");
                                cancel.cancel();
                            }
                        }
                    }
                    Err(e) => {
                        failing = true;
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }

    async fn send(&self, report: &Report) -> Result<(), ClientError> {
        match report {
            Report::Complete(l) => self.client.complete(*l).await,
            Report::Fail(l, e, cause) => self.client.fail_with(*l, e, *cause).await,
            Report::Release(l) => self.client.release(*l).await,
        }
    }

    /// Sends buffered reports; keeps those the orchestrator could not take
    /// (and, once one could not be delivered, the rest for the next time),
    /// drops those it refused (a stale lease stays stale).
    async fn flush_outbox(&mut self) {
        while let Some(report) = self.outbox.pop_front() {
            match self.send(&report).await {
                Ok(()) => tracing::info!(?report, "buffered report delivered"),
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "buffered reports not delivered yet");
                    self.outbox.push_front(report);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, ?report, "report refused; dropped"),
            }
        }
    }

    /// Sends a final report now, or keeps it for later if the orchestrator
    /// is unreachable. Returns false when it was refused.
    async fn report(&mut self, report: Report) -> bool {
        match self.send(&report).await {
            Ok(()) => true,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, ?report, "report not delivered; kept to send again");
                self.outbox.push_back(report);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, ?report, "report refused");
                false
            }
        }
    }

    async fn scene_path(&self, assignment: &Assignment) -> Result<PathBuf, String> {
        let sha = &assignment.scene.sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the scene digest is malformed".into());
        }
        let path = self.settings.data_dir.join("cache").join(sha);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        let bytes = self
            .client
            .download(sha)
            .await
            .map_err(|e| format!("downloading the scene: {e}"))?;
        let tmp = path.with_extension(format!("part-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&tmp, &bytes)
            .await
            .map_err(|e| format!("caching the scene: {e}"))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| format!("caching the scene: {e}"))?;
        Ok(path)
    }

    async fn run_task(
        &mut self,
        assignment: &Assignment,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> TaskEnd {
        let lease = assignment.lease();
        let cancel = CancelToken::new();
        lock(&self.held).insert(lease.task_id, (lease.lease_epoch, cancel.clone()));
        let end = tokio::select! {
            end = self.render_task(assignment, &cancel) => end,
            () = shutdown.as_mut() => {
                cancel.cancel();
                TaskEnd::Shutdown
            }
        };
        lock(&self.held).remove(&lease.task_id);
        let work = self
            .settings
            .data_dir
            .join("work")
            .join(lease.task_id.to_string());
        let _ = tokio::fs::remove_dir_all(&work).await;
        match end {
            TaskEnd::Completed(frames) => {
                if self.report(Report::Complete(lease)).await {
                    TaskEnd::Completed(frames)
                } else {
                    TaskEnd::Revoked
                }
            }
            TaskEnd::Shutdown => {
                tracing::info!(task_id = %lease.task_id, "shutting down; releasing the lease");
                self.report(Report::Release(lease)).await;
                TaskEnd::Shutdown
            }
            TaskEnd::Abandoned => {
                self.report(Report::Release(lease)).await;
                TaskEnd::Abandoned
            }
            other => other,
        }
    }

    /// Renders every frame of the task, uploading and reporting each, its
    /// output (printed lines, progress) sent as it goes.
    async fn render_task(&mut self, assignment: &Assignment, cancel: &CancelToken) -> TaskEnd {
        let lease = assignment.lease();
        let scene = match self.scene_path(assignment).await {
            Ok(p) => p,
            Err(message) => {
                self.report(Report::Fail(lease, message, None)).await;
                return TaskEnd::Failed;
            }
        };
        let (client, settings) = (&self.client, &self.settings);
        if let Err(e) = retrying(client, settings, cancel, || {
            client.progress(lease, None, None)
        })
        .await
        {
            return self.lost(lease, cancel, e);
        }
        let output = Output::start(self.client.clone(), lease, self.settings.give_up_after);
        let sink = output.sink();
        let limits = Limits {
            task: assignment
                .task_timeout_seconds
                .map(|s| Duration::from_secs(u64::from(s))),
            stall: assignment
                .stall_timeout_seconds
                .map(|s| Duration::from_secs(u64::from(s))),
        };
        let step = tokio::select! {
            step = self.render_frames(assignment, cancel, scene, sink.clone()) => step,
            (cause, message) = limits.overdue(&sink) => {
                tracing::warn!(task_id = %lease.task_id, cause, "stopping the task: {message}");
                // Stops the renderer (its process group, for Blender).
                cancel.cancel();
                sink.line(crate::renderer::OutputStream::Stderr, &format!("[flatrender-node] {message}"));
                Step::Fail(message, Some(cause))
            }
        };
        match step {
            Step::Fail(message, cause) => {
                // The lines that explain the failure go first.
                output.finish().await;
                self.report(Report::Fail(lease, message, cause)).await;
                TaskEnd::Failed
            }
            Step::End(end @ TaskEnd::Completed(_)) => {
                output.finish().await;
                end
            }
            Step::End(end) => {
                output.abort();
                end
            }
        }
    }

    async fn render_frames(
        &mut self,
        assignment: &Assignment,
        cancel: &CancelToken,
        scene: PathBuf,
        sink: OutputSink,
    ) -> Step {
        let lease = assignment.lease();
        let output_dir = self
            .settings
            .data_dir
            .join("work")
            .join(lease.task_id.to_string());
        let params = RenderParams {
            resolution: match (assignment.params.width, assignment.params.height) {
                (Some(width), Some(height)) => Some(Resolution { width, height }),
                _ => None,
            },
            samples: assignment.params.samples,
            options: Default::default(),
        };
        // The renderer runs the whole chunk (Blender in one process) and
        // hands over each frame as it is written; each is uploaded and
        // reported while the next renders.
        let (first, last) = (assignment.frames.start, assignment.frames.end);
        let job = FrameJob {
            scene,
            frame: first,
            output_dir,
            params,
        };
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let renderers = self.renderers.clone();
        let name = assignment.renderer.clone();
        let token = cancel.clone();
        let to = sink.clone();
        let renderer = tokio::task::spawn_blocking(move || {
            renderers.render_frames_logged(
                &name,
                &job,
                last,
                &mut |frame, rendered| {
                    let _ = done_tx.send((frame, rendered));
                },
                &mut |frame, p| to.progress(frame, p.fraction),
                &mut |stream, text| to.line(stream, text),
                &token,
            )
        });
        let mut frames = 0;
        // Ends when the renderer returns (it drops the sender).
        while let Some((frame, rendered)) = done_rx.recv().await {
            if let Err(step) = self.deliver(lease, frame, &rendered, cancel).await {
                // Stops the renderer; the lease is gone or given back.
                cancel.cancel();
                return step;
            }
            // A finished frame is progress too.
            sink.touch();
            frames += 1;
        }
        match renderer.await {
            Ok(Ok(())) => {}
            Ok(Err(RenderError::Cancelled)) => return Step::End(TaskEnd::Revoked),
            Ok(Err(e)) => return Step::Fail(e.to_string(), None),
            Err(e) => return Step::Fail(format!("renderer crashed: {e}"), None),
        }
        Step::End(TaskEnd::Completed(frames))
    }

    /// Uploads a rendered frame and reports it under the lease; `Err` with
    /// how the task ends when that failed for good.
    async fn deliver(
        &self,
        lease: LeaseRef,
        frame: u32,
        rendered: &crate::renderer::RenderedFrame,
        cancel: &CancelToken,
    ) -> Result<(), Step> {
        let png = read(&rendered.path)
            .await
            .map_err(|message| Step::Fail(message, None))?;
        let (client, settings) = (&self.client, &self.settings);
        let file_id = retrying(client, settings, cancel, || {
            client.upload_output(lease, frame, png.clone())
        })
        .await
        .map_err(|e| Step::End(self.lost(lease, cancel, e)))?;
        retrying(client, settings, cancel, || {
            client.progress(lease, Some(frame), Some(file_id))
        })
        .await
        .map_err(|e| Step::End(self.lost(lease, cancel, e)))?;
        Ok(())
    }

    /// An upload or report during the task failed for good: a refusal (or
    /// a revoked lease) means the lease is gone; an orchestrator that could
    /// not take it for [`AgentSettings::give_up_after`] gets the task back.
    fn lost(&self, lease: LeaseRef, cancel: &CancelToken, error: ClientError) -> TaskEnd {
        if cancel.is_cancelled() {
            tracing::warn!(task_id = %lease.task_id, "lease revoked; task stopped");
            TaskEnd::Revoked
        } else if error.is_transient() {
            tracing::warn!(
                task_id = %lease.task_id,
                error = %error,
                give_up_after = ?self.settings.give_up_after,
                "the orchestrator cannot take this task's uploads or reports; \
                 giving the task back (releasing its lease)"
            );
            TaskEnd::Abandoned
        } else {
            tracing::warn!(task_id = %lease.task_id, error = %error, "refused; task abandoned");
            TaskEnd::Revoked
        }
    }
}

/// Calls `call` until it succeeds, is refused, the lease is revoked, or
/// the orchestrator could not take it for `settings.give_up_after` (backing
/// off with jitter; a success of any other request, such as a heartbeat,
/// ends a wait early).
async fn retrying<T, F, Fut>(
    client: &AgentClient,
    settings: &AgentSettings,
    cancel: &CancelToken,
    call: F,
) -> Result<T, ClientError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut successes: watch::Receiver<u64> = client.successes();
    let mut failing_since = None;
    let mut attempt = 0;
    loop {
        successes.borrow_and_update();
        match call().await {
            Err(e) if e.is_transient() && !cancel.is_cancelled() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                let left = settings.give_up_after.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return Err(e);
                }
                tracing::warn!(error = %e, "retrying");
                tokio::select! {
                    () = tokio::time::sleep(settings.backoff.delay(attempt).min(left)) => {}
                    Ok(()) = successes.changed() => {}
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, String> {
    tokio::fs::read(path)
        .await
        .map_err(|e| format!("reading the rendered frame: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let backoff = Backoff::DEFAULT;
        for attempt in 0..100 {
            let base = Duration::from_millis(500)
                .saturating_mul(1 << attempt.min(20))
                .min(Duration::from_secs(4));
            let delay = backoff.delay(attempt);
            assert!(
                delay >= base / 2 && delay <= base * 3 / 2,
                "{attempt}: {delay:?}"
            );
            assert!(delay <= Duration::from_secs(6));
        }
        let slow = Backoff {
            first: Duration::from_secs(20),
            cap: Duration::from_secs(30),
        };
        assert!(slow.delay(0) >= Duration::from_secs(10));
        assert!(slow.delay(7) <= Duration::from_secs(45));
    }
}
