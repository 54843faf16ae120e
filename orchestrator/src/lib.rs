#![doc = include_str!("../README.md")]

mod batch;
mod commands;
mod leases;
mod metrics;
mod pick;
mod reports;
mod snapshot;
mod state;
pub mod trace;
mod view;
mod waiters;
mod watchdog;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::{DomainError, NodeId};
use eventstore::{Actor, AnyStore, Clock, EventMetadata, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use pick::{any_capable_node, assignment, pick};
use state::State;

pub use batch::AppendHold;
pub use metrics::{CounterTotals, Gauges, LATENCY_BOUNDS, LatencySnapshot};
pub use snapshot::{SNAPSHOT_NAME, StartReport};

/// How the scheduler behaves; every default runs on a laptop.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a lease lives unless renewed by a heartbeat or progress.
    pub lease_ttl: chrono::Duration,
    /// A node not heard from for this long goes offline and loses its leases.
    pub offline_after: chrono::Duration,
    /// Failures of one job on one node before the node is blocklisted for it.
    pub blocklist_after: u32,
    /// Price per render-second by node class, in minor units.
    pub prices_minor_per_second: BTreeMap<String, i64>,
    /// Price per render-second of a class without its own price.
    pub default_price_minor_per_second: i64,
    /// Decide the next batch of claims and reports while the one before is
    /// being appended (pipelined group commit; see `batch`). Off: one batch
    /// at a time.
    pub pipeline: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lease_ttl: chrono::Duration::seconds(60),
            offline_after: chrono::Duration::seconds(30),
            blocklist_after: 3,
            prices_minor_per_second: BTreeMap::new(),
            default_price_minor_per_second: 1,
            pipeline: true,
        }
    }
}

impl Config {
    fn price_of(&self, node_class: &str) -> i64 {
        self.prices_minor_per_second
            .get(node_class)
            .copied()
            .unwrap_or(self.default_price_minor_per_second)
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// The domain refused the command (stale lease, paused job, …).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node never registered.
    #[error("the node has not registered")]
    UnknownNode,
    /// The named entity does not exist (or belongs to another tenant).
    #[error("unknown {0}")]
    NotFound(&'static str),
    /// A command refers to something unusable (e.g. a scene of another tenant).
    #[error("{0}")]
    Invalid(String),
    /// Other writers kept changing the stream; the caller may retry.
    #[error("the stream kept changing under concurrent writers")]
    Contention,
    /// The store failed during a group commit.
    #[error("storage failed: {0}")]
    Storage(String),
    /// A submission depends on a render that is not the tenant's, or on
    /// itself through others (a cycle).
    #[error("{0}")]
    InvalidDependency(String),
    /// A node reported or uploaded an output that is not this lease's
    /// output of that frame (or is not a usable image).
    #[error("{0}")]
    InvalidOutput(String),
}

/// Frames of an assignment, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireFrames {
    /// First frame.
    pub start: u32,
    /// Last frame (inclusive).
    pub end: u32,
}

/// The scene an assignment renders, named by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireScene {
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Its size.
    pub size_bytes: u64,
}

/// The renderer parameters of an assignment: typed, never a command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireParams {
    /// Output width in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Output height in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Samples per pixel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
}

/// A lease on a task, as the node-agent contract's `Assignment` (without
/// the orchestrator's signature, which the API adds with the node's secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The job.
    pub job_id: Uuid,
    /// The task.
    pub task_id: Uuid,
    /// The fencing token.
    pub lease_epoch: u32,
    /// When the lease ends unless renewed.
    pub lease_expires_at: DateTime<Utc>,
    /// The renderer, by name.
    pub renderer: String,
    /// Its typed parameters.
    pub params: WireParams,
    /// The frames.
    pub frames: WireFrames,
    /// The input scene.
    pub scene: WireScene,
    /// The render's task timeout, in seconds (the agent stops the task
    /// past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_timeout_seconds: Option<u32>,
    /// The render's stall timeout, in seconds (the agent stops a task that
    /// prints nothing and reports no progress for that long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_timeout_seconds: Option<u32>,
}

/// A tenant's uploaded file as the scheduler's view holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upload {
    /// SHA-256 of its bytes (lower-case hex).
    pub sha256: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its media type.
    pub content_type: String,
}

/// Counts for progress displays and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// The job's state.
    pub status: &'static str,
    /// Tasks in the job.
    pub tasks: usize,
    /// Completed tasks.
    pub tasks_completed: usize,
    /// Frames in the job.
    pub frames_total: u64,
    /// Frames reported finished.
    pub frames_done: u64,
    /// Tasks holding a lease.
    pub leased: usize,
}

/// What the scheduler's view holds: its size follows the live work, not
/// the history (finished renders retire from it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewStats {
    /// Renders in the view (not finished, or finished a moment ago).
    pub jobs: usize,
    /// Renders with a queued task that accept assignments.
    pub schedulable: usize,
    /// Finished renders that left the view (their status and tenant kept).
    pub retired: usize,
    /// Files the view holds (uploads, and frames of renders in the view).
    pub files: usize,
    /// Live leases.
    pub leases: usize,
}

struct Inner {
    store: AnyStore,
    clock: Arc<dyn Clock>,
    /// This instance, for its rows of node liveness (random per start).
    instance: uuid::Uuid,
    config: Config,
    state: Mutex<State>,
    /// Bumped whenever work may have become available.
    work: watch::Sender<u64>,
    /// Claims waiting for work (see `waiters`).
    waiters: Arc<waiters::Waiters>,
    /// Claims and completions for the committer (see `batch`).
    ops: tokio::sync::mpsc::UnboundedSender<(batch::Op, Option<String>)>,
    /// What this instance did, for `/metrics`.
    counters: metrics::Counters,
    /// How the view was built at start.
    start: std::sync::OnceLock<StartReport>,
    /// A test's hold on the next batched append (see `batch::AppendHold`).
    append_hold: std::sync::Mutex<Option<batch::HoldGate>>,
}

/// The scheduler. Cheap to clone; every clone shares one view.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// How often a command is retried when another writer changed its stream.
const MAX_ATTEMPTS: usize = 16;

fn system() -> Actor {
    Actor::System {
        component: "orchestrator".into(),
    }
}

/// Whoever the current request acts for ([`trace::acting_as`]), else the
/// orchestrator.
fn requester() -> Actor {
    trace::actor().unwrap_or_else(system)
}

/// The metadata of events written for `actor` in the current request.
fn metadata(actor: Actor) -> EventMetadata {
    metadata_traced(actor, trace::current())
}

fn metadata_traced(actor: Actor, trace_id: Option<String>) -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor,
        trace_id,
    }
}

impl Orchestrator {
    /// Builds the view from the store and returns the scheduler.
    pub async fn open(
        store: AnyStore,
        clock: Arc<dyn Clock>,
        config: Config,
    ) -> Result<Self, OrchestratorError> {
        let now = clock.now();
        let state = State {
            lease_ttl: config.lease_ttl,
            now,
            ..State::default()
        };
        let (ops, queued) = tokio::sync::mpsc::unbounded_channel();
        let this = Self {
            inner: Arc::new(Inner {
                store,
                clock,
                instance: uuid::Uuid::new_v4(),
                config,
                state: Mutex::new(state),
                work: watch::channel(0).0,
                waiters: Arc::default(),
                ops,
                counters: metrics::Counters::default(),
                start: std::sync::OnceLock::new(),
                append_hold: std::sync::Mutex::new(None),
            }),
        };
        eventstore::task::spawn_named(
            "orchestrator-committer",
            batch::committer(Arc::downgrade(&this.inner), queued),
        );
        eventstore::task::spawn_named(
            "orchestrator-waker",
            waiters::waker(Arc::downgrade(&this.inner), this.inner.waiters.clone()),
        );
        // From a verified snapshot and the events after it, else from
        // position 0 (see `snapshot`).
        let started = std::time::Instant::now();
        let (snapshot_position, snapshot_ignored) = this.restore_snapshot().await;
        if let Some(why) = &snapshot_ignored {
            tracing::warn!(reason = %why, "ignored the scheduler's snapshot; rebuilding the view from the log");
        }
        let replayed = this.catch_up().await?;
        tracing::info!(
            snapshot_position,
            replayed,
            seconds = started.elapsed().as_secs_f64(),
            "scheduler's view built"
        );
        let _ = this.inner.start.set(StartReport {
            snapshot_position,
            snapshot_ignored,
            replayed,
        });
        // Nodes online in the log get a full grace period from now.
        let mut st = this.inner.state.lock().await;
        let online: Vec<NodeId> = st
            .nodes
            .iter()
            .filter(|(_, (n, _))| n.connectivity() == domain::node::Connectivity::Online)
            .map(|(id, _)| *id)
            .collect();
        for id in online {
            st.last_seen.insert(id, now);
        }
        drop(st);
        Ok(this)
    }

    /// The store.
    pub fn store(&self) -> &AnyStore {
        &self.inner.store
    }

    /// How this scheduler was configured (lease length, offline period, …).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A receiver that changes whenever work may have become available.
    pub fn work_signal(&self) -> watch::Receiver<u64> {
        self.inner.work.subscribe()
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn signal_work(&self) {
        self.inner.work.send_modify(|n| *n = n.wrapping_add(1));
        self.inner.waiters.signal();
    }
}

/// What a node uploaded for a frame.
#[derive(Debug, Clone)]
pub struct FileOutput {
    /// A file name for people (e.g. `frame_0001.png`).
    pub name: domain::FileName,
    /// Its media type.
    pub content_type: domain::ContentType,
    /// Its size.
    pub size_bytes: u64,
    /// Its digest.
    pub sha256: domain::Sha256Digest,
}

/// Render time charged for a lease: whole seconds, rounded up, at least one.
fn render_seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    let ms = (to - from).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}
