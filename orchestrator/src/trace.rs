//! The trace id of the request being served, for the metadata of the
//! events it causes (SPEC §1 `metadata.trace_id`).
//!
//! The HTTP layer runs each request inside [`scope`]; every event the
//! scheduler writes for it — directly, or group-committed by the batch
//! committer, which carries each operation's trace id with it — has that
//! id. Events of the scheduler's own work (the ticker, charges) have none.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static TRACE_ID: Arc<str>;
    static ACTOR: eventstore::Actor;
}

/// Runs `f` with `trace_id` as the current trace id.
pub async fn scope<F: Future>(trace_id: String, f: F) -> F::Output {
    TRACE_ID.scope(Arc::from(trace_id), f).await
}

/// The current trace id, inside [`scope`].
pub fn current() -> Option<String> {
    TRACE_ID.try_with(|t| t.to_string()).ok()
}

/// Runs `f` on behalf of `actor`: the renders it submits and controls and
/// the files it uploads are recorded as that actor's (the reseller API's
/// keys); without it, as the orchestrator's.
pub async fn acting_as<F: Future>(actor: eventstore::Actor, f: F) -> F::Output {
    ACTOR.scope(actor, f).await
}

/// The actor of the current request, inside [`acting_as`].
pub fn actor() -> Option<eventstore::Actor> {
    ACTOR.try_with(Clone::clone).ok()
}
