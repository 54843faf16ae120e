//! What the agent sends and receives, as the contract's schemas have it.

use uuid::Uuid;

/// A lease as the agent presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LeaseRef {
    /// The task.
    pub task_id: Uuid,
    /// The fencing token.
    pub lease_epoch: u32,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct HeartbeatReply {
    #[serde(default)]
    pub(super) stop: Vec<LeaseRef>,
}

/// Frames of an assignment (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frames {
    /// First frame.
    pub start: u32,
    /// Last frame.
    pub end: u32,
}

/// The scene of an assignment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scene {
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Size.
    pub size_bytes: u64,
}

/// Typed renderer parameters of an assignment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Width in pixels.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height in pixels.
    #[serde(default)]
    pub height: Option<u32>,
    /// Samples per pixel.
    #[serde(default)]
    pub samples: Option<u32>,
}

/// A verified work assignment (the contract's `Assignment`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Assignment {
    /// The job.
    pub job_id: Uuid,
    /// The task.
    pub task_id: Uuid,
    /// The fencing token.
    pub lease_epoch: u32,
    /// When the lease ends unless renewed.
    pub lease_expires_at: String,
    /// The renderer, by name.
    pub renderer: String,
    /// Its parameters.
    pub params: Params,
    /// The frames.
    pub frames: Frames,
    /// The input scene.
    pub scene: Scene,
    /// Stop the task (failed, `timed_out`) once it ran this long.
    #[serde(default)]
    pub task_timeout_seconds: Option<u32>,
    /// Stop the task (failed, `stalled`) once it printed nothing and
    /// reported no progress for this long.
    #[serde(default)]
    pub stall_timeout_seconds: Option<u32>,
}

impl Assignment {
    /// The lease to present in reports.
    pub fn lease(&self) -> LeaseRef {
        LeaseRef {
            task_id: self.task_id,
            lease_epoch: self.lease_epoch,
        }
    }
}

/// The longest failure reason the contract takes, in characters.
pub const MAX_FAILURE_CHARS: usize = 1000;

/// A renderer's error output as the contract's `fail.error` takes it:
/// control characters other than newline and tab (carriage returns,
/// terminal colours) dropped, blank edges trimmed, the last
/// [`MAX_FAILURE_CHARS`] characters kept (the end of a log says most), and
/// never empty.
pub fn failure_text(error: &str) -> String {
    let clean: String = error
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    let clean = clean.trim();
    let count = clean.chars().count();
    let kept: String = clean
        .chars()
        .skip(count.saturating_sub(MAX_FAILURE_CHARS))
        .collect();
    let kept = kept.trim();
    if kept.is_empty() {
        "the renderer failed without a message".to_owned()
    } else {
        kept.to_owned()
    }
}
