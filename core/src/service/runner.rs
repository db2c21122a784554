//! The one way a command changes the log: load the streams its decision reads,
//! call the pure decision, append what it decided at the versions it read, and
//! decide again when another writer got there first.
//!
//! A command is a *step*: an async closure over a [`Tx`] that loads aggregates
//! ([`Tx::load`], [`Tx::peek`]), calls a pure decision and hands its events to
//! [`Tx::emit`]. [`Runner::run`] turns the step into one atomic append:
//!
//! - every stream written is appended at the version it was read at (a stream
//!   never read is new: `NoStream`);
//! - every stream loaded and not written is a *condition* of the append (a write
//!   with no events: the append lands only if the stream did not move), so a
//!   decision is never applied to a state it did not see;
//! - on a version conflict the step runs again on fresh state, at most
//!   [`MAX_ATTEMPTS`] times, then [`ServiceError::Contention`];
//! - a refusal decided on a stream that moved meanwhile is decided again too: a
//!   refusal is final only when the state it was decided on is still current
//!   (after the last attempt it is answered as it is).
//!
//! Side effects that must precede the record of them (erasing a vault key before
//! the event that says so) may run inside the step: they are idempotent and run
//! again if the step does.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use super::repo::{encode, load, load_cached, AggregateCache, LoadError, Loaded};
use crate::domain::aggregate::Aggregate;
use crate::domain::codec::{CodecError, DomainEvent};
use crate::log::{AppendRequest, EventStore, ExpectedVersion, LogError, StreamName, StreamWrite};
use crate::vault::{Vault, VaultError};

/// Attempts at a command whose streams keep changing under it (DOMAIN.md).
pub const MAX_ATTEMPTS: usize = 16;

/// The machinery failed; nothing the caller asked for was wrong, and nothing
/// was written.
#[derive(Debug, thiserror::Error)]
pub enum StoreFault {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("stream {0} is too long to load")]
    StreamTooLong(StreamName),
    #[error("the system's random source failed")]
    Random,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl From<LoadError> for StoreFault {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Log(e) => Self::Log(e),
            LoadError::Codec(e) => Self::Codec(e),
            LoadError::TooLong(stream) => Self::StreamTooLong(stream),
        }
    }
}

/// Why a command did not happen: the domain refused it, its streams kept
/// changing, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError<E> {
    #[error(transparent)]
    Refused(E),
    #[error(
        "the streams of this command changed concurrently {attempts} times in a row; try again"
    )]
    Contention { attempts: usize },
    #[error(transparent)]
    Store(#[from] StoreFault),
}

impl<E> ServiceError<E> {
    /// The domain's refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&E> {
        match self {
            ServiceError::Refused(e) => Some(e),
            _ => None,
        }
    }

    /// The same failure with the refusal converted (a service calling another).
    pub fn map_refusal<F>(self, f: impl FnOnce(E) -> F) -> ServiceError<F> {
        match self {
            ServiceError::Refused(e) => ServiceError::Refused(f(e)),
            ServiceError::Contention { attempts } => ServiceError::Contention { attempts },
            ServiceError::Store(e) => ServiceError::Store(e),
        }
    }
}

macro_rules! store_fault_from {
    ($($source:ty),+) => {$(
        impl<E> From<$source> for ServiceError<E> {
            fn from(e: $source) -> Self {
                ServiceError::Store(e.into())
            }
        }
    )+};
}
store_fault_from!(LogError, CodecError, VaultError, LoadError);

/// What a step's future is: boxed so that a step can borrow from its caller
/// and from the transaction, and `Send` so commands run on any worker.
pub type Step<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, ServiceError<E>>> + Send + 'a>>;

/// A committed command: what the step returned, and the log position to wait
/// for before a read model shows it (the head when nothing was written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed<T> {
    pub value: T,
    pub position: u64,
}

/// Runs steps against one store, vault and (optionally) aggregate cache.
pub struct Runner<'a, S: EventStore> {
    store: &'a S,
    vault: &'a Vault,
    cache: Option<&'a AggregateCache>,
}

impl<S: EventStore> Clone for Runner<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: EventStore> Copy for Runner<'_, S> {}

impl<'a, S: EventStore> Runner<'a, S> {
    /// A runner that folds every stream afresh.
    pub fn new(store: &'a S, vault: &'a Vault) -> Self {
        Self {
            store,
            vault,
            cache: None,
        }
    }

    /// A runner that keeps folded aggregates in `cache` between commands.
    pub fn cached(store: &'a S, vault: &'a Vault, cache: &'a AggregateCache) -> Self {
        Self {
            store,
            vault,
            cache: Some(cache),
        }
    }

    /// Runs `step` until its decision is appended (or refused, or the store
    /// fails), at most [`MAX_ATTEMPTS`] times.
    pub async fn run<T, E>(
        self,
        mut step: impl FnMut(Tx<'a, S>) -> Step<'a, T, E>,
    ) -> Result<Committed<T>, ServiceError<E>> {
        for attempt in 1..=MAX_ATTEMPTS {
            let tx = Tx::new(self);
            let outcome = step(tx.clone()).await;
            let last = attempt == MAX_ATTEMPTS;
            match outcome {
                Ok(value) => {
                    if let Some(position) = tx.commit().await? {
                        return Ok(Committed { value, position });
                    }
                }
                Err(ServiceError::Refused(e)) if last || !tx.moved().await? => {
                    return Err(ServiceError::Refused(e));
                }
                Err(ServiceError::Refused(_)) => {
                    tracing::debug!(attempt, "a refusal was decided on a stale state; again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(ServiceError::Contention {
            attempts: MAX_ATTEMPTS,
        })
    }
}

/// One attempt at a command: what it read (and at which versions) and what it
/// decided to write. Cloning shares the attempt (the runner keeps a handle to
/// commit what the step recorded).
pub struct Tx<'a, S: EventStore> {
    runner: Runner<'a, S>,
    recorded: Arc<Mutex<Recorded>>,
}

impl<S: EventStore> Clone for Tx<'_, S> {
    fn clone(&self) -> Self {
        Self {
            runner: self.runner,
            recorded: Arc::clone(&self.recorded),
        }
    }
}

#[derive(Default)]
struct Recorded {
    /// Streams read, each at the first version it was read at.
    reads: Vec<Read>,
    /// Streams written, in the order of their first write.
    writes: Vec<StreamWrite>,
}

struct Read {
    stream: StreamName,
    version: u64,
    /// Whether the append is conditional on the stream staying at `version`.
    condition: bool,
}

/// The expected version of a stream read at `version` (0: not there).
fn expected(version: u64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

impl<'a, S: EventStore> Tx<'a, S> {
    fn new(runner: Runner<'a, S>) -> Self {
        Self {
            runner,
            recorded: Arc::default(),
        }
    }

    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        // Never held across an await; a panic while held poisons nothing of value.
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The aggregate of `stream` as the log has it now. The append is
    /// conditional on the stream still being at this version.
    pub async fn load<A>(&self, stream: &StreamName) -> Result<A, StoreFault>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
        A::Event: DomainEvent,
    {
        self.read(stream, true).await
    }

    /// Like [`Tx::load`], without making the stream a condition of the append:
    /// for what a decision reads in bulk (a customer's recent orders) where a
    /// change can only make the decision more permissive. A refusal decided on
    /// a peeked stream that moved is still decided again.
    pub async fn peek<A>(&self, stream: &StreamName) -> Result<A, StoreFault>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
        A::Event: DomainEvent,
    {
        self.read(stream, false).await
    }

    async fn read<A>(&self, stream: &StreamName, condition: bool) -> Result<A, StoreFault>
    where
        A: Aggregate + Clone + Send + Sync + 'static,
        A::Event: DomainEvent,
    {
        let Runner {
            store,
            vault,
            cache,
        } = self.runner;
        let loaded: Loaded<A> = match cache {
            Some(cache) => load_cached(store, vault, stream, cache).await?,
            None => load(store, vault, stream).await?,
        };
        let mut recorded = self.recorded();
        match recorded.reads.iter_mut().find(|r| r.stream == *stream) {
            Some(read) => read.condition |= condition,
            None => recorded.reads.push(Read {
                stream: stream.clone(),
                version: loaded.version,
                condition,
            }),
        }
        Ok(loaded.state)
    }

    /// The version `stream` was read at in this attempt, if it was read.
    pub fn version(&self, stream: &StreamName) -> Option<u64> {
        let recorded = self.recorded();
        recorded
            .reads
            .iter()
            .find(|r| r.stream == *stream)
            .map(|r| r.version)
    }

    /// Appends `events` to `stream` with the command: at the version it was
    /// read at, or as a new stream if it was not read. No events, no write.
    pub fn emit<E: DomainEvent>(
        &self,
        stream: &StreamName,
        events: &[E],
    ) -> Result<(), StoreFault> {
        if events.is_empty() {
            return Ok(());
        }
        let encoded = encode(events, self.runner.vault)?;
        let version = self.version(stream).unwrap_or(0);
        let mut recorded = self.recorded();
        match recorded.writes.iter_mut().find(|w| w.stream == *stream) {
            Some(write) => write.events.extend(encoded),
            None => recorded.writes.push(StreamWrite {
                stream: stream.clone(),
                expected: expected(version),
                events: encoded,
            }),
        }
        Ok(())
    }

    /// Appends what was emitted, conditional on what was loaded. `None` on a
    /// version conflict; the head when nothing was emitted.
    async fn commit(&self) -> Result<Option<u64>, StoreFault> {
        let request = {
            let mut recorded = self.recorded();
            if recorded.writes.is_empty() {
                return Ok(Some(self.runner.store.head()));
            }
            // An attempt commits once: its writes are taken, not copied.
            let mut writes = std::mem::take(&mut recorded.writes);
            for read in recorded.reads.iter().filter(|r| r.condition) {
                if !writes.iter().any(|w| w.stream == read.stream) {
                    writes.push(StreamWrite {
                        stream: read.stream.clone(),
                        expected: expected(read.version),
                        events: Vec::new(),
                    });
                }
            }
            AppendRequest {
                writes,
                ..AppendRequest::default()
            }
        };
        match self.runner.store.append(request).await {
            Ok(outcome) => Ok(Some(outcome.last_position())),
            Err(LogError::WrongExpectedVersion { stream, .. }) => {
                tracing::debug!(%stream, "concurrent write; deciding again");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether any stream read in this attempt has moved since.
    async fn moved(&self) -> Result<bool, StoreFault> {
        let reads: Vec<(StreamName, u64)> = self
            .recorded()
            .reads
            .iter()
            .map(|r| (r.stream.clone(), r.version))
            .collect();
        for (stream, version) in reads {
            if self.runner.store.stream_version(&stream).await? != version {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
