//! Background tasks: spawned in one place, named, traced, and stopped with
//! their owner.

use std::future::Future;

use tokio::task::JoinHandle;
use tracing::Instrument;

/// Spawns a named background task inside a tracing span of that name.
pub fn spawn_named<F>(name: &'static str, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.instrument(tracing::info_span!("task", name)))
}

/// Aborts the tasks it holds when dropped, so that a store's helpers end with it.
#[derive(Debug, Default)]
pub struct AbortOnDrop(Vec<JoinHandle<()>>);

impl AbortOnDrop {
    /// Takes ownership of a task.
    pub fn push(&mut self, handle: JoinHandle<()>) {
        self.0.push(handle);
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}
