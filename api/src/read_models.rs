//! The read models in a running server, and the operator's `projections`
//! commands (they open the store directly).

use std::time::Duration;

use eventstore::AnyStore;
use indicatif::{ProgressBar, ProgressStyle};
use projections::{Runner, RunnerOptions};
use tokio::sync::watch;

/// The projections' runner of a server, stopped when dropped.
#[derive(Debug)]
pub struct ReadModels {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ReadModels {
    /// Starts following the log into the read models (on PostgreSQL only
    /// the instance holding the lock writes; the others wait to take over).
    pub fn spawn(store: &AnyStore) -> Self {
        let (stop, stopped) = watch::channel(false);
        let runner = Runner::new(store.clone(), RunnerOptions::default());
        let task = tokio::spawn(runner.run(stopped));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops after the batch in flight.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ReadModels {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// `flatrender projections rebuild [NAME]`: empties the named projection
/// (every one when `None`) and replays the log into it, with a progress
/// bar. When a running server holds the projections (PostgreSQL), the
/// reset is done here and that server replays; this waits until it has.
pub async fn rebuild(store: &AnyStore, name: Option<&str>) -> anyhow::Result<u64> {
    let names: Vec<&str> = match name {
        Some(n) => {
            projections::tables_of(n)?;
            vec![n]
        }
        None => projections::PROJECTIONS.to_vec(),
    };
    let lag = projections::lag(store).await?;
    let head = lag.first().map_or(0, |l| l.head);
    // Every projection replays the whole log; the one furthest behind
    // tells how much there is (counted up to a million).
    let events = projections::count_events(store).await?;
    let progress = bar(events);
    progress.set_message(format!("rebuilding {}", names.join(", ")));
    let mut runner = Runner::new(store.clone(), RunnerOptions::default());
    let result = match runner.acquire().await? {
        true => {
            let applied = runner
                .rebuild(&names, |applied, _, _| progress.set_position(applied))
                .await?;
            runner.release().await;
            applied
        }
        false => {
            progress
                .println("another instance runs the projections: resetting here, it replays them");
            for n in &names {
                projections::reset(store, n).await?;
            }
            wait_until_caught_up(store, &names, head, &progress).await?
        }
    };
    progress.finish_and_clear();
    Ok(result)
}

async fn wait_until_caught_up(
    store: &AnyStore,
    names: &[&str],
    head: i64,
    progress: &ProgressBar,
) -> anyhow::Result<u64> {
    let events = progress.length().unwrap_or(0);
    loop {
        let lag = projections::lag(store).await?;
        let behind = lag
            .iter()
            .filter(|l| names.contains(&l.name.as_str()))
            .map(|l| {
                if l.position >= head {
                    0
                } else {
                    l.events_behind
                }
            })
            .max()
            .unwrap_or(0);
        let done = events.saturating_sub(behind.max(0) as u64);
        progress.set_position(done);
        if behind == 0 {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `flatrender projections status`: each projection's checkpoint and lag.
pub async fn status(store: &AnyStore) -> anyhow::Result<Vec<projections::Lag>> {
    Ok(projections::lag(store).await?)
}
