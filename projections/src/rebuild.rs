//! Rebuild: drop projections' trees and replay the log from position 0.
//!
//! One reader feeds every projection being rebuilt (each event is read once);
//! each projection applies on a thread of its own and keeps its rows in memory
//! (decoded), so a row changed by many events is written once.
//!
//! sled costs about 10 µs per key written, and its atomic batches take a
//! process-wide lock: trees committing batches take turns, and so do the log's
//! reads. A rebuild therefore writes without batches: plain inserts, in key
//! order, each tree from its own thread, behind a durable mark:
//!
//! 1. every tree being rebuilt is dropped and marked `\0rebuilding`, and the
//!    marks are flushed to disk before anything else is written;
//! 2. the projections apply the log and write their rows (at the end, or when
//!    [`RebuildOptions::max_staged_keys`] or [`RebuildOptions::window_events`]
//!    is reached), then their checkpoint;
//! 3. once every row is flushed to disk, the marks are removed and flushed.
//!
//! A marked tree reads checkpoint 0, and [`crate::Runner`] drops it before it
//! starts: a rebuild interrupted at any moment starts over, and never leaves a
//! projection that looks complete (sled recovers a prefix of its writes, so a
//! mark's removal never comes back without what was written before it).
//!
//! A projection that fails at position `p` is rebuilt once more, alone, up to
//! `p - 1`, so it ends exactly as the incremental build would: stopped before
//! the failing event with everything before it applied and its checkpoint.
//!
//! A rebuild applies the same code to the same events as the incremental
//! build, so the trees end byte for byte equal (tested), whatever the windows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_core::log::{EventStore, LogError, RecordedEvent, MAX_READ_COUNT};
use tokio::sync::mpsc;

use crate::error::StorageError;
use crate::keys::{CHECKPOINT_KEY, FORMAT_KEY};
use crate::models::ReadModels;
use crate::projection::{apply_events, Failure, Projection};
use crate::staging::Staging;

/// Batches read ahead of the slowest projection.
const READ_AHEAD_BATCHES: usize = 16;

/// How a rebuild runs.
#[derive(Clone, Debug)]
pub struct RebuildOptions {
    /// Events per log read, 1 to the log's limit (10,000).
    pub read_batch: usize,
    /// Every this many events, a projection writes the changed rows that no
    /// event changed in the last window (so rows are written about once, and
    /// while other projections apply); the rest is written at the end.
    pub window_events: u64,
    /// Changed rows are written when this many keys are staged (bounds the
    /// memory of what is not written yet).
    pub max_staged_keys: usize,
    /// Rows each projection keeps in memory (decoded); beyond it written rows
    /// are dropped and read back from sled (slower, same result).
    pub max_cached_rows: usize,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            read_batch: MAX_READ_COUNT,
            window_events: 100_000,
            max_staged_keys: 1_000_000,
            max_cached_rows: 2_000_000,
        }
    }
}

/// What one projection's rebuild came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildOutcome {
    pub name: &'static str,
    /// The last position applied and committed (0 if the projection is left
    /// marked as being rebuilt: it starts again from 0).
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
/// its [`RebuildOutcome`] instead). Trees still marked start again from 0.
#[derive(Debug, thiserror::Error)]
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
    #[error("the rebuild thread of {0} panicked")]
    Panicked(&'static str),
}

/// What a projection's thread hands back: the projection (for a second pass)
/// and the last position it wrote, or where it failed.
type Replayed = (Box<dyn Projection>, Result<u64, Failure>);

struct Worker {
    name: &'static str,
    sender: Option<mpsc::Sender<Arc<Vec<RecordedEvent>>>>,
    position: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Replayed>>,
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
    let names: Vec<&'static str> = projections.iter().map(|p| p.name()).collect();
    let jobs = projections.into_iter().map(|p| (p, head)).collect();
    let mut finished = Vec::with_capacity(names.len());
    let mut failed = Vec::new();
    for (projection, result) in pass(store, models, jobs, head, options, &mut progress).await? {
        match result {
            Ok(position) => finished.push((projection.name(), position, None)),
            Err(failure) => failed.push((projection, failure)),
        }
    }
    // A failed projection stops before its failing event, as the incremental
    // build does: rebuild it alone up to there.
    if !failed.is_empty() {
        let (projections, failures): (Vec<_>, Vec<_>) = failed.into_iter().unzip();
        let jobs = projections
            .into_iter()
            .zip(&failures)
            .map(|(projection, failure)| (projection, failure.position.saturating_sub(1)))
            .collect();
        let again = pass(store, models, jobs, head, options, &mut progress).await?;
        for ((projection, result), failure) in again.into_iter().zip(failures) {
            let (position, failure) = match result {
                Ok(position) => (position, failure),
                Err(second) => (
                    0,
                    Failure {
                        position: second.position,
                        reason: format!(
                            "{} (and rebuilding before it: {})",
                            failure.reason, second.reason
                        ),
                    },
                ),
            };
            finished.push((projection.name(), position, Some(failure)));
        }
    }
    models.flush()?;
    let mut outcomes = Vec::with_capacity(names.len());
    for name in names {
        let Some((_, position, failure)) = finished.iter().find(|f| f.0 == name).cloned() else {
            continue;
        };
        // Position 0 after a failure: nothing could be kept, the mark stays.
        if position > 0 || failure.is_none() {
            models.end_rebuild(name)?;
        }
        outcomes.push(RebuildOutcome {
            name,
            position,
            failure,
        });
    }
    models.flush()?;
    progress(head, head);
    Ok(RebuildReport {
        head,
        elapsed: started.elapsed(),
        outcomes,
    })
}

/// One replay of the log from position 1 into freshly dropped and marked
/// trees, each projection up to its own last position. Returns each
/// projection with the position it wrote its checkpoint at, or its failure.
async fn pass<S: EventStore>(
    store: &Arc<S>,
    models: &ReadModels,
    jobs: Vec<(Box<dyn Projection>, u64)>,
    head: u64,
    options: &RebuildOptions,
    progress: &mut impl FnMut(u64, u64),
) -> Result<Vec<Replayed>, RebuildError> {
    let mut trees = Vec::with_capacity(jobs.len());
    for (projection, _) in &jobs {
        trees.push(models.begin_rebuild(projection.name())?);
    }
    // The marks are on disk before any row is written.
    models.flush()?;
    let until_all = jobs.iter().map(|j| j.1).max().unwrap_or(0);
    let mut workers = Vec::with_capacity(jobs.len());
    for ((projection, until), tree) in jobs.into_iter().zip(trees) {
        let name = projection.name();
        let staging = Staging::new(tree, options.max_cached_rows)?;
        let (sender, receiver) = mpsc::channel(READ_AHEAD_BATCHES);
        let position = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (position, done, options) = (position.clone(), done.clone(), options.clone());
            std::thread::Builder::new()
                .name(format!("rebuild-{name}"))
                .spawn(move || {
                    let result = replay(projection, staging, receiver, until, &position, &options);
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
    // Batches sent, freed here once every worker is done with them: freeing a
    // batch's events is a good part of a worker's time otherwise, and the
    // reader waits for the slowest worker anyway.
    let mut sent: VecDeque<Arc<Vec<RecordedEvent>>> = VecDeque::new();
    while next <= until_all && workers.iter().any(|w| w.sender.is_some()) {
        let count = read_batch.min((until_all - next + 1) as usize);
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
                // A worker that stopped (failed, or at its end) stops receiving.
                if sender.send(events.clone()).await.is_err() {
                    worker.sender = None;
                }
            }
        }
        sent.push_back(events);
        while sent
            .front()
            .is_some_and(|batch| Arc::strong_count(batch) == 1)
        {
            sent.pop_front();
        }
        progress(slowest(&workers), head);
    }
    for worker in &mut workers {
        worker.sender = None;
    }
    while !workers.iter().all(|w| w.done.load(Ordering::Acquire)) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        progress(slowest(&workers), head);
    }
    let mut replayed = Vec::with_capacity(workers.len());
    for worker in &mut workers {
        match worker.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => replayed.push(result),
            _ => {
                let position = worker.position.load(Ordering::Acquire) + 1;
                tracing::error!(
                    projection = worker.name,
                    position,
                    "a rebuild thread panicked"
                );
                return Err(RebuildError::Panicked(worker.name));
            }
        }
    }
    Ok(replayed)
}

/// One projection's side of a pass: apply what the reader sends up to
/// `until`, write the rows (in windows, and at the end) and the checkpoint.
fn replay(
    mut projection: Box<dyn Projection>,
    mut staging: Staging,
    mut receiver: mpsc::Receiver<Arc<Vec<RecordedEvent>>>,
    until: u64,
    position: &AtomicU64,
    options: &RebuildOptions,
) -> Replayed {
    let result = replay_into(
        &mut *projection,
        &mut staging,
        &mut receiver,
        until,
        position,
        options,
    );
    (projection, result)
}

fn replay_into(
    projection: &mut dyn Projection,
    staging: &mut Staging,
    receiver: &mut mpsc::Receiver<Arc<Vec<RecordedEvent>>>,
    until: u64,
    position: &AtomicU64,
    options: &RebuildOptions,
) -> Result<u64, Failure> {
    let mut next = 1u64;
    let mut written = 0u64;
    let storage = |next: u64| {
        move |e: StorageError| Failure {
            position: next,
            reason: format!("writing the read model: {e}"),
        }
    };
    while next <= until {
        let Some(events) = receiver.blocking_recv() else {
            break;
        };
        let upto = events.partition_point(|e| e.position <= until);
        apply_events(projection, staging, &events[..upto], &mut next)?;
        position.store(next - 1, Ordering::Release);
        if staging.dirty_len() >= options.max_staged_keys {
            staging.write_unbatched().map_err(storage(next))?;
            written = next - 1;
        } else if next - 1 - written >= options.window_events {
            staging.write_idle_unbatched().map_err(storage(next))?;
            written = next - 1;
        }
    }
    receiver.close();
    let applied = next - 1;
    if applied < until {
        return Err(Failure {
            position: next,
            reason: "the log ended before the rebuild's head".into(),
        });
    }
    staging.write_unbatched().map_err(storage(next))?;
    staging
        .tree()
        .insert(CHECKPOINT_KEY, &applied.to_be_bytes())
        .map_err(|e| storage(next)(e.into()))?;
    staging
        .tree()
        .insert(FORMAT_KEY, &projection.format_version().to_be_bytes())
        .map_err(|e| storage(next)(e.into()))?;
    Ok(applied)
}
