//! Rebuild: drop projections' trees and replay the log from position 0.
//!
//! One reader feeds every projection being rebuilt (each event is read once);
//! each projection applies on a thread of its own. A rebuild commits in large
//! windows ([`RebuildOptions::window_events`]): the trees were just dropped, so
//! a window's state is kept in memory and written once, which is what makes a
//! rebuild fast on sled (its cost is per key written). Every commit carries the
//! checkpoint, as in the runner: a rebuild that is interrupted resumes like any
//! catch-up, from its last window.
//!
//! A rebuild applies the same code to the same events as the incremental
//! build, so the trees end byte for byte equal (tested), whatever the windows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_core::log::{EventStore, LogError, RecordedEvent, MAX_READ_COUNT};
use tokio::sync::mpsc;

use crate::error::StorageError;
use crate::models::ReadModels;
use crate::projection::{Applier, Failure, Projection};
use crate::staging::Staging;

/// Batches read ahead of the slowest projection.
const READ_AHEAD_BATCHES: usize = 16;

/// How a rebuild runs.
#[derive(Clone, Debug)]
pub struct RebuildOptions {
    /// Events per log read, 1 to the log's limit (10,000).
    pub read_batch: usize,
    /// Most events between two commits (each commit is one sled batch).
    pub window_events: u64,
    /// A commit happens earlier when this many keys are staged.
    pub max_staged_keys: usize,
    /// Rows each projection keeps in memory (decoded); beyond it committed rows
    /// are dropped and read back from sled (slower, same result).
    pub max_cached_rows: usize,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            read_batch: MAX_READ_COUNT,
            window_events: 100_000,
            max_staged_keys: 250_000,
            max_cached_rows: 2_000_000,
        }
    }
}

/// What one projection's rebuild came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildOutcome {
    pub name: &'static str,
    /// The last position applied and committed.
    pub position: u64,
    pub failure: Option<Failure>,
}

/// What a rebuild did.
#[derive(Clone, Debug)]
pub struct RebuildReport {
    /// The log's head when the rebuild started: what it replayed to.
    pub head: u64,
    pub elapsed: Duration,
    pub outcomes: Vec<RebuildOutcome>,
}

impl RebuildReport {
    /// Events replayed per second (each event counted once, however many
    /// projections read it).
    pub fn events_per_second(&self) -> f64 {
        self.head as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn failures(&self) -> impl Iterator<Item = &RebuildOutcome> {
        self.outcomes.iter().filter(|o| o.failure.is_some())
    }
}

/// Why a rebuild could not run to its end (a projection's own failure is in
/// its [`RebuildOutcome`] instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("reading the log at position {position}: {source}")]
    Log {
        position: u64,
        #[source]
        source: LogError,
    },
    #[error("the log ended at position {0}, before its head")]
    ShortLog(u64),
    #[error("a rebuild thread could not start: {0}")]
    Thread(std::io::Error),
}

struct Worker {
    name: &'static str,
    sender: Option<mpsc::Sender<Arc<Vec<RecordedEvent>>>>,
    position: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, Failure>>>,
}

/// Drops the trees of `projections` and replays the log into them up to its
/// head at the start. `progress(applied, head)` is called as the slowest
/// projection moves. The projections must not be running meanwhile.
pub async fn rebuild<S: EventStore>(
    store: &Arc<S>,
    models: &ReadModels,
    projections: Vec<Box<dyn Projection>>,
    options: &RebuildOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let head = store.head();
    let mut workers = Vec::with_capacity(projections.len());
    for projection in projections {
        let name = projection.name();
        models.drop_projection(name)?;
        let staging = Staging::new(models.tree(name)?, options.max_cached_rows)?;
        let applier = Applier::new(projection, staging)?;
        let (sender, receiver) = mpsc::channel(READ_AHEAD_BATCHES);
        let position = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (position, done, options) = (position.clone(), done.clone(), options.clone());
            std::thread::Builder::new()
                .name(format!("rebuild-{name}"))
                .spawn(move || {
                    let result = replay(applier, receiver, &position, &options);
                    done.store(true, Ordering::Release);
                    result
                })
                .map_err(RebuildError::Thread)?
        };
        workers.push(Worker {
            name,
            sender: Some(sender),
            position,
            done,
            thread: Some(thread),
        });
    }

    let slowest = |workers: &[Worker]| {
        workers
            .iter()
            .map(|w| w.position.load(Ordering::Acquire))
            .min()
            .unwrap_or(head)
    };
    let mut next = 1u64;
    let read_batch = options.read_batch.clamp(1, MAX_READ_COUNT);
    while next <= head {
        let count = read_batch.min((head - next + 1) as usize);
        let events = store
            .read_all(next, count)
            .await
            .map_err(|source| RebuildError::Log {
                position: next,
                source,
            })?;
        let Some(last) = events.last() else {
            return Err(RebuildError::ShortLog(next - 1));
        };
        next = last.position + 1;
        let events = Arc::new(events);
        for worker in &mut workers {
            if let Some(sender) = &worker.sender {
                // A worker that stopped (failed) just stops receiving.
                if sender.send(events.clone()).await.is_err() {
                    worker.sender = None;
                }
            }
        }
        progress(slowest(&workers), head);
    }
    for worker in &mut workers {
        worker.sender = None;
    }
    while !workers.iter().all(|w| w.done.load(Ordering::Acquire)) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        progress(slowest(&workers), head);
    }
    let mut outcomes = Vec::with_capacity(workers.len());
    for worker in &mut workers {
        let result = match worker.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            _ => Err(Failure {
                position: worker.position.load(Ordering::Acquire) + 1,
                reason: "the rebuild thread panicked".into(),
            }),
        };
        outcomes.push(RebuildOutcome {
            name: worker.name,
            position: worker.position.load(Ordering::Acquire),
            failure: result.err(),
        });
    }
    models.flush()?;
    progress(slowest(&workers), head);
    Ok(RebuildReport {
        head,
        elapsed: started.elapsed(),
        outcomes,
    })
}

/// One projection's side of a rebuild: apply what the reader sends, commit
/// per window, and the rest at the end (or before a failure).
fn replay(
    mut applier: Applier,
    mut receiver: mpsc::Receiver<Arc<Vec<RecordedEvent>>>,
    position: &AtomicU64,
    options: &RebuildOptions,
) -> Result<u64, Failure> {
    while let Some(events) = receiver.blocking_recv() {
        let result = applier.apply(events);
        let window_full = applier.applied() - applier.committed() >= options.window_events
            || applier.staged_keys() >= options.max_staged_keys;
        if result.is_err() || window_full {
            position.store(applier.commit()?, Ordering::Release);
        }
        result?;
    }
    let committed = applier.commit()?;
    position.store(committed, Ordering::Release);
    Ok(committed)
}
