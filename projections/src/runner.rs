//! Keeps projections caught up with the log, each in its own task fed by its
//! own catch-up subscription from its checkpoint, and lets callers wait until
//! a projection has reached a position (read-your-writes).
//!
//! A projection that fails stops at the failing position and says why; the
//! others go on. Each batch (at most [`RunnerConfig::batch_size`] events) is
//! applied on tokio's blocking pool and committed with its checkpoint in one
//! sled batch.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nexus_core::log::{AllSubscription, EventStore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::StorageError;
use crate::models::ReadModels;
use crate::projection::{Applier, Failure, Projection};
use crate::staging::Staging;

/// Events per batch unless configured otherwise. A commit is one sled batch,
/// and sled's batches take a process-wide lock that the log's appends wait for
/// while a commit writes its keys: smaller batches shorten that wait at the
/// cost of more commits (measured in docs/PROJECTIONS.md, "Appends behind
/// commits").
pub const DEFAULT_BATCH_EVENTS: usize = 1_000;
/// The largest batch (one log read).
pub const MAX_BATCH_EVENTS: usize = nexus_core::log::MAX_READ_COUNT;
/// The longest [`Runner::wait_for`] waits, whatever it is asked.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How the runner runs.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Events per batch (and so per sled batch), 1 to [`MAX_BATCH_EVENTS`].
    pub batch_size: usize,
    /// Rows each projection keeps in memory (decoded) between batches.
    pub max_cached_rows: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_EVENTS,
            max_cached_rows: 20_000,
        }
    }
}

/// Whether a projection is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    /// Stopped at `failure.position`, which is not applied.
    Failed(Failure),
    /// Stopped on request.
    Stopped,
}

/// A projection's position and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The last position applied and committed.
    pub position: u64,
    pub state: RunState,
}

/// What [`Runner::status`] reports of one projection.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub position: u64,
    /// The log's head when the status was taken.
    pub head: u64,
    /// Events behind the head.
    pub lag_events: u64,
    /// How long the oldest event not yet applied has waited (0 when caught
    /// up; `None` if the log could not be read).
    pub lag_seconds: Option<f64>,
    pub state: RunState,
}

/// Why [`Runner::wait_for`] returned without the projection at the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("projection {projection} reached {reached}, not {wanted}, within the time given")]
    Timeout {
        projection: &'static str,
        reached: u64,
        wanted: u64,
    },
    #[error("projection {projection} failed {failure}")]
    Failed {
        projection: &'static str,
        failure: Failure,
    },
    #[error("projection {0} is stopped")]
    Stopped(&'static str),
    #[error("no projection is named {0:?}")]
    UnknownProjection(String),
}

struct Slot {
    name: &'static str,
    progress: watch::Receiver<Progress>,
    task: Option<JoinHandle<()>>,
}

/// Projections kept caught up in the background. Start it inside a tokio
/// runtime; stop it with [`Runner::stop`] (dropping it asks the tasks to stop
/// too, without waiting for them).
pub struct Runner<S: EventStore> {
    store: Arc<S>,
    slots: Vec<Slot>,
    stop: watch::Sender<bool>,
}

impl<S: EventStore> Runner<S> {
    /// Starts every standard projection.
    pub fn start(
        store: Arc<S>,
        models: &ReadModels,
        config: RunnerConfig,
    ) -> Result<Self, StorageError> {
        Self::start_with(store, models, models.projections(), config)
    }

    /// Starts the given projections, each from its checkpoint.
    pub fn start_with(
        store: Arc<S>,
        models: &ReadModels,
        projections: Vec<Box<dyn Projection>>,
        config: RunnerConfig,
    ) -> Result<Self, StorageError> {
        let batch_size = config.batch_size.clamp(1, MAX_BATCH_EVENTS);
        let (stop, _) = watch::channel(false);
        let mut slots = Vec::with_capacity(projections.len());
        for projection in projections {
            let name = projection.name();
            // A rebuild that did not end left an incomplete tree, and rows of
            // another format cannot be read: start over.
            if models.needs_rebuild(&*projection)? {
                tracing::warn!(
                    projection = name,
                    format_version = projection.format_version(),
                    stored_format_version = ?models.format_version(name)?,
                    "an interrupted rebuild or rows of another format: starting from 0"
                );
                models.drop_projection(name)?;
            }
            let staging = Staging::new(models.tree(name)?, config.max_cached_rows)?;
            let applier = Applier::new(projection, staging)?;
            let (progress_tx, progress) = watch::channel(Progress {
                position: applier.committed(),
                state: RunState::Running,
            });
            let task = tokio::spawn(run(
                store.clone(),
                applier,
                progress_tx,
                stop.subscribe(),
                batch_size,
            ));
            slots.push(Slot {
                name,
                progress,
                task: Some(task),
            });
        }
        Ok(Self { store, slots, stop })
    }

    /// The names of the projections this runner runs.
    pub fn names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.name).collect()
    }

    fn slot(&self, name: &str) -> Result<&Slot, WaitError> {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| WaitError::UnknownProjection(name.to_owned()))
    }

    /// A projection's position and state now.
    pub fn progress(&self, name: &str) -> Option<Progress> {
        self.slot(name).ok().map(|s| s.progress.borrow().clone())
    }

    /// Position, lag and state of every projection.
    pub async fn status(&self) -> Vec<ProjectionStatus> {
        let head = self.store.head();
        let now = Utc::now();
        let mut out = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let progress = slot.progress.borrow().clone();
            let lag_events = head.saturating_sub(progress.position);
            let lag_seconds = if lag_events == 0 {
                Some(0.0)
            } else {
                match self.store.read_all(progress.position + 1, 1).await {
                    Ok(events) => events
                        .first()
                        .map(|e| ((now - e.recorded_at).num_milliseconds().max(0) as f64) / 1000.0),
                    Err(_) => None,
                }
            };
            out.push(ProjectionStatus {
                name: slot.name,
                position: progress.position,
                head,
                lag_events,
                lag_seconds,
                state: progress.state,
            });
        }
        out
    }

    /// Waits until the projection `name` (every projection for `None`) has
    /// applied `position`, at most `timeout` (capped at [`MAX_WAIT`]). Returns
    /// at once if a projection it waits for has failed or stopped before it.
    pub async fn wait_for(
        &self,
        name: Option<&str>,
        position: u64,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        let slots: Vec<&Slot> = match name {
            Some(name) => vec![self.slot(name)?],
            None => self.slots.iter().collect(),
        };
        for slot in slots {
            let mut progress = slot.progress.clone();
            let waited = tokio::time::timeout_at(
                deadline,
                progress.wait_for(|p| p.position >= position || p.state != RunState::Running),
            )
            .await;
            let reached = match waited {
                Err(_) => None,
                Ok(Err(_)) => return Err(WaitError::Stopped(slot.name)),
                Ok(Ok(p)) => Some(p.clone()),
            };
            let Some(reached) = reached else {
                return Err(WaitError::Timeout {
                    projection: slot.name,
                    reached: slot.progress.borrow().position,
                    wanted: position,
                });
            };
            if reached.position < position {
                return Err(match reached.state {
                    RunState::Failed(failure) => WaitError::Failed {
                        projection: slot.name,
                        failure,
                    },
                    _ => WaitError::Stopped(slot.name),
                });
            }
        }
        Ok(())
    }

    /// Stops every projection after its current batch and waits for them.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for slot in &mut self.slots {
            if let Some(task) = slot.task.take() {
                let _ = task.await;
            }
        }
    }
}

impl<S: EventStore> Drop for Runner<S> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One projection's task: read a batch, apply and commit it off the async
/// workers, publish the new position; stop on request or at a failure.
async fn run<S: EventStore>(
    store: Arc<S>,
    mut applier: Applier,
    progress: watch::Sender<Progress>,
    mut stop: watch::Receiver<bool>,
    batch_size: usize,
) {
    let name = applier.name();
    let mut subscription = AllSubscription::new(store, applier.applied() + 1, batch_size);
    let fail = |failure: Failure| {
        tracing::error!(projection = name, position = failure.position, reason = %failure.reason, "projection stopped");
        progress.send_modify(|p| p.state = RunState::Failed(failure));
    };
    loop {
        let batch = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            batch = subscription.next_batch() => batch,
        };
        let events = match batch {
            Ok(events) => Arc::new(events),
            Err(e) => {
                fail(Failure {
                    position: applier.applied() + 1,
                    reason: format!("reading the log: {e}"),
                });
                return;
            }
        };
        let start = applier.applied() + 1;
        let done = tokio::task::spawn_blocking(move || {
            let applied = applier.apply(events);
            // A failed batch commits what came before the failing event.
            let committed = applier.commit();
            let result = applied.and(committed.map(|_| ()));
            (applier, result)
        })
        .await;
        let result;
        (applier, result) = match done {
            Ok(done) => done,
            Err(e) => {
                fail(Failure {
                    position: start,
                    reason: format!("the apply task failed: {e}"),
                });
                return;
            }
        };
        let committed = applier.committed();
        progress.send_if_modified(|p| {
            let moved = p.position != committed;
            p.position = committed;
            moved
        });
        if let Err(failure) = result {
            fail(failure);
            return;
        }
    }
    progress.send_modify(|p| p.state = RunState::Stopped);
}
