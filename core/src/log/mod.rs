//! The append-only event log: streams, versions, a global position, a hash chain.
//!
//! Positions and stream versions both start at 1; 0 means "nothing yet" (an empty
//! log's head, a stream that does not exist). Everything outside `core` uses the log
//! through [`EventStore`]; only [`SledLog`] knows sled.

mod any_log;
mod group;
mod pg_log;
mod record;
mod sled_log;
mod subscription;

use std::future::Future;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::vault::SealedPii;

pub use any_log::AnyLog;
pub use pg_log::{import, Imported, PgLog, PgLogConfig};
pub use record::{Hash32, RecordedEvent};
pub use sled_log::{LogStats, SledLog, SledLogConfig, SyncMode};
pub use subscription::AllSubscription;

/// Longest stream name, in bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 128;
/// Longest event type name, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 64;
/// Largest payload of one event, in bytes (bincode of the domain event).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most events in one append request (over all its streams).
pub const MAX_EVENTS_PER_APPEND: usize = 1024;
/// Most streams one append request may touch atomically.
pub const MAX_STREAMS_PER_APPEND: usize = 16;
/// Most bytes of payload and PII in one append request.
pub const MAX_APPEND_BYTES: usize = 512 * 1024;
/// Most events one read call returns.
pub const MAX_READ_COUNT: usize = 10_000;
/// Largest sealed personal part of one event: the vault's largest plaintext and
/// room for its sealing overhead (a tag today), so that the log need not follow
/// the cipher's exact overhead.
pub(crate) const MAX_SEALED_PII_BYTES: usize = crate::vault::MAX_PII_BYTES + SEAL_ALLOWANCE_BYTES;
const SEAL_ALLOWANCE_BYTES: usize = 64;
// Everything the vault seals, the log stores.
const _: () = assert!(crate::vault::MAX_SEALED_BYTES <= MAX_SEALED_PII_BYTES);

/// A stream's name: 1 to [`MAX_STREAM_NAME_BYTES`] printable ASCII characters
/// (`!` to `~`), conventionally `category-id` such as `order-0190…`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamName(String);

impl StreamName {
    pub fn new(name: impl Into<String>) -> Result<Self, LogError> {
        let name = name.into();
        if name.is_empty() {
            return Err(LogError::InvalidStreamName("empty"));
        }
        if name.len() > MAX_STREAM_NAME_BYTES {
            return Err(LogError::InvalidStreamName("longer than 128 bytes"));
        }
        // Printable ASCII only: no NUL, which the stream index uses as a separator.
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(LogError::InvalidStreamName(
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name read back from the log, where it was checked on the way in.
    pub(crate) fn trusted(name: &str) -> Self {
        // Debug builds only: it reads every byte of the name, on every record
        // read, and the hash chain already covers what was checked on append.
        debug_assert!(Self::new(name).is_ok());
        Self(name.to_owned())
    }
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The unique id of an event; a retried append with the same ids is a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventId(pub Uuid);

impl EventId {
    /// A new time-ordered (UUIDv7) id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What the writer expects a stream's version to be before the append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist (version 0).
    NoStream,
    /// The stream's last event must have exactly this version (0 = no stream).
    Exact(u64),
}

impl ExpectedVersion {
    fn admits(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => current == v,
        }
    }
}

/// An event to append, before the log gives it a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: String,
    pub schema_version: u16,
    pub payload: Vec<u8>,
    pub pii: Option<SealedPii>,
}

/// Events for one stream, with the version the stream must be at. A write with
/// no events is a condition: the append goes through only if the stream is at
/// that version, and nothing is written to it (one decision read that stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamWrite {
    pub stream: StreamName,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// One atomic append: every write lands, or none does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendRequest {
    pub writes: Vec<StreamWrite>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
}

impl AppendRequest {
    /// An append to a single stream.
    pub fn single(stream: StreamName, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            writes: vec![StreamWrite {
                stream,
                expected,
                events,
            }],
            ..Self::default()
        }
    }

    /// Bytes of payload and sealed PII over all events.
    pub fn body_bytes(&self) -> usize {
        self.writes
            .iter()
            .flat_map(|w| &w.events)
            .map(|e| e.payload.len() + e.pii.as_ref().map_or(0, |p| p.ciphertext.len()))
            .sum()
    }

    pub fn event_count(&self) -> usize {
        self.writes.iter().map(|w| w.events.len()).sum()
    }

    /// Checks every limit; the log calls this before anything is queued.
    pub fn validate(&self) -> Result<(), LogError> {
        let condition_without_check = self
            .writes
            .iter()
            .any(|w| w.events.is_empty() && w.expected == ExpectedVersion::Any);
        if self.event_count() == 0 || condition_without_check {
            return Err(LogError::EmptyAppend);
        }
        if self.writes.len() > MAX_STREAMS_PER_APPEND {
            return Err(LogError::TooManyStreams {
                count: self.writes.len(),
                limit: MAX_STREAMS_PER_APPEND,
            });
        }
        let count = self.event_count();
        let bytes = self.body_bytes();
        if bytes > MAX_APPEND_BYTES {
            return Err(LogError::PayloadTooLarge {
                size: bytes,
                limit: MAX_APPEND_BYTES,
            });
        }
        if count > MAX_EVENTS_PER_APPEND {
            return Err(LogError::TooManyEvents {
                count,
                limit: MAX_EVENTS_PER_APPEND,
            });
        }
        let mut ids = std::collections::HashSet::with_capacity(count);
        for (i, write) in self.writes.iter().enumerate() {
            if self.writes[..i].iter().any(|w| w.stream == write.stream) {
                return Err(LogError::StreamRepeated {
                    stream: write.stream.clone(),
                });
            }
            for event in &write.events {
                validate_event(event)?;
                if !ids.insert(event.id) {
                    return Err(LogError::DuplicateIdInAppend { id: event.id });
                }
            }
        }
        Ok(())
    }
}

fn validate_event(event: &NewEvent) -> Result<(), LogError> {
    let t = &event.event_type;
    if t.is_empty() || t.len() > MAX_EVENT_TYPE_BYTES || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LogError::InvalidEventType);
    }
    if event.schema_version == 0 {
        return Err(LogError::InvalidSchemaVersion);
    }
    if event.payload.len() > MAX_PAYLOAD_BYTES {
        return Err(LogError::PayloadTooLarge {
            size: event.payload.len(),
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    if let Some(pii) = &event.pii {
        if pii.ciphertext.len() > MAX_SEALED_PII_BYTES {
            return Err(LogError::PayloadTooLarge {
                size: pii.ciphertext.len(),
                limit: crate::vault::MAX_PII_BYTES,
            });
        }
    }
    Ok(())
}

/// Where one appended event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub position: u64,
    pub version: u64,
}

/// The answer to an append: one [`Appended`] per event, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    pub events: Vec<Appended>,
    /// True when every event was already in the log: nothing was written, and the
    /// positions are the original ones.
    pub duplicate: bool,
}

impl AppendOutcome {
    /// The highest position of this append (what read-your-writes waits for).
    pub fn last_position(&self) -> u64 {
        self.events.iter().map(|e| e.position).max().unwrap_or(0)
    }
}

/// Reading direction for [`EventStore::read_stream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forwards,
    Backwards,
}

/// Why the chain does not verify at a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub position: u64,
    pub reason: String,
}

/// The result of walking the whole hash chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub events_checked: u64,
    pub head: u64,
    pub head_hash: Hash32,
    pub first_broken: Option<Broken>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("wrong expected version on stream {stream}: expected {expected:?}, found {found}")]
    WrongExpectedVersion {
        stream: StreamName,
        expected: ExpectedVersion,
        found: u64,
    },
    #[error("event {id} is already in the log with a different body")]
    EventIdReused { id: EventId },
    #[error("event {id} is already in the log but other events of the same append are not")]
    PartialDuplicate { id: EventId },
    #[error("event id {id} appears twice in one append")]
    DuplicateIdInAppend { id: EventId },
    #[error("stream {stream} appears twice in one append")]
    StreamRepeated { stream: StreamName },
    #[error("invalid stream name: {0}")]
    InvalidStreamName(&'static str),
    #[error("invalid event type: 1 to 64 printable ASCII characters")]
    InvalidEventType,
    #[error("schema version must be at least 1")]
    InvalidSchemaVersion,
    #[error("unknown schema version {found} of event type {event_type} (this build reads up to {supported})")]
    UnknownSchemaVersion {
        event_type: String,
        found: u16,
        supported: u16,
    },
    #[error("event at position {position} is a {found}, not a {expected}")]
    WrongEventType {
        position: u64,
        expected: &'static str,
        found: String,
    },
    #[error("payload of {size} bytes is over the limit of {limit}")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error(
        "an append needs at least one event, and a write without events needs an expected version"
    )]
    EmptyAppend,
    #[error("{count} events in one append, over the limit of {limit}")]
    TooManyEvents { count: usize, limit: usize },
    #[error("{count} streams in one append, over the limit of {limit}")]
    TooManyStreams { count: usize, limit: usize },
    #[error("corrupt record at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    #[error("payload at position {position} does not decode: {reason}")]
    Decode { position: u64, reason: String },
    #[error("the log is closed")]
    Closed,
    #[error("the log stopped after a failed write and must be reopened")]
    Poisoned,
    /// The log's database refused or could not be reached; nothing was written
    /// unless the message says the outcome is unknown.
    #[error("log database: {0}")]
    Database(String),
    /// The I/O error is in the message and not a `source`: a report of the
    /// error chain (`{:#}`) would say it twice.
    #[error("log I/O: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::Io(e)
    }
}

/// The log as the rest of Nexus sees it. A second backend implements this trait;
/// nothing above `core` depends on sled.
pub trait EventStore: Send + Sync + 'static {
    /// Appends atomically and returns once the events are durable.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendOutcome, LogError>> + Send;

    /// Up to `max_count` events of one stream. Forwards starts at `from_version`;
    /// backwards starts at `from_version` too (`u64::MAX` for the last event).
    fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, LogError>> + Send;

    /// The version of a stream's last event; 0 if the stream does not exist.
    fn stream_version(
        &self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// Up to `max_count` events from `from_position` on (inclusive), in order.
    fn read_all(
        &self,
        from_position: u64,
        max_count: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, LogError>> + Send;

    /// The position of the last durable event (0 for an empty log).
    fn head(&self) -> u64;

    /// A receiver that sees the head move; subscriptions wait on it.
    fn watch_head(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Walks the whole chain and reports the first broken position.
    fn verify(&self) -> impl Future<Output = Result<VerifyReport, LogError>> + Send;
}
