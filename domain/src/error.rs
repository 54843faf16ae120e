//! The errors of the domain: refused commands and undecodable events.

use crate::ids::{JobId, TaskId};

/// A value that failed to parse at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The field or type that was rejected, e.g. `frame_range`.
    pub field: &'static str,
    /// Why, in words fit for an API client.
    pub reason: String,
}

impl ValidationError {
    /// A validation error on `field` for `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Why an aggregate refused a command. Every variant is an expected outcome
/// (a 4xx for the API), never a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A value in the command is invalid.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The aggregate (or an entity inside it) does not exist.
    #[error("{entity} {id} not found")]
    NotFound {
        /// What was looked for, e.g. `task`.
        entity: &'static str,
        /// Its id, or `-` when the stream itself is empty.
        id: String,
    },
    /// The aggregate (or an entity inside it) already exists.
    #[error("{entity} {id} already exists")]
    AlreadyExists {
        /// What was created twice, e.g. `api_key`.
        entity: &'static str,
        /// Its id.
        id: String,
    },
    /// The command is not allowed in the current state.
    #[error("cannot {command} a {entity} that is {from}")]
    InvalidTransition {
        /// The entity whose state machine refused, e.g. `task`.
        entity: &'static str,
        /// The state it is in, e.g. `completed`.
        from: &'static str,
        /// The refused command, e.g. `assign`.
        command: &'static str,
    },
    /// A task report (start, progress, complete, fail, release, requeue)
    /// carried a lease that is no longer the task's current lease.
    #[error("{}", stale_lease_message(*task_id, *presented, *current))]
    StaleLease {
        /// The task.
        task_id: TaskId,
        /// The lease epoch the caller presented.
        presented: u32,
        /// The task's current lease epoch, if it is leased at all.
        current: Option<u32>,
    },
    /// A task reported complete before every one of its frames was
    /// reported with its output under the current lease.
    #[error(
        "task {task_id} is not finished: {missing} of its {total} frames have no reported output under this lease"
    )]
    FramesMissing {
        /// The task.
        task_id: TaskId,
        /// Frames without a reported output.
        missing: u64,
        /// Frames of the task.
        total: u64,
    },
    /// The job was cancelled and accepts no new work.
    #[error("job {job_id} is cancelled")]
    JobCancelled {
        /// The job.
        job_id: JobId,
    },
    /// The job is paused and gets no new assignments.
    #[error("job {job_id} is paused")]
    JobPaused {
        /// The job.
        job_id: JobId,
    },
    /// A charge larger than the tenant's balance.
    #[error("insufficient credit: balance {balance_minor}, requested {requested_minor}")]
    InsufficientCredit {
        /// The balance, in minor units.
        balance_minor: i64,
        /// The requested charge, in minor units.
        requested_minor: i64,
    },
}

impl DomainError {
    /// A stable, machine-readable code for the error body
    /// (`{"error": {"code", …}}`), e.g. `stale_lease`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) => "validation_failed",
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::StaleLease { .. } => "stale_lease",
            Self::FramesMissing { .. } => "frames_missing",
            Self::JobCancelled { .. } => "job_cancelled",
            Self::JobPaused { .. } => "job_paused",
            Self::InsufficientCredit { .. } => "insufficient_credit",
        }
    }
}

/// The words of [`DomainError::StaleLease`], for people.
fn stale_lease_message(task_id: TaskId, presented: u32, current: Option<u32>) -> String {
    match current {
        Some(current) => format!(
            "the lease on task {task_id} is no longer yours: you presented epoch {presented}, the current lease is epoch {current}"
        ),
        None => format!(
            "the lease on task {task_id} is no longer yours: you presented epoch {presented}, and the task holds no lease now"
        ),
    }
}

/// Why a stored payload could not be turned back into an event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The routing key belongs to no variant of this event enum.
    #[error("unknown routing key `{0}` for this stream type")]
    UnknownRoutingKey(String),
    /// The payload does not match the variant's struct.
    #[error("payload of `{routing_key}` does not decode: {source}")]
    Payload {
        /// The routing key.
        routing_key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}
