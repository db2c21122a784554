//! The log on sled.
//!
//! Layout (one sled database, two trees):
//! - `log`: one value per commit group, keyed by the group's first position
//!   (big-endian). A group holds every event of the appends that shared one durable
//!   flush, so the commit path writes one sled key per group, not per event.
//! - `index`: derived, rebuildable: `s` + stream + NUL + version → position,
//!   `e` + event id → position, and `~indexed` → the last position indexed. An
//!   indexer thread fills it after each commit, off the durable path; on open it is
//!   caught up from the log before any append is taken.
//!
//! One writer thread assigns positions and hashes, writes the group, and makes it
//! durable (flush + fdatasync) before answering any append in it. Readers see only
//! durable positions (`committed`); events committed but not yet indexed are found
//! in the in-memory `tail` map, so reading a stream never waits for the indexer.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, warn};

use super::record::{
    encode_group, encode_record, EncodedRecord, EventIdentity, GroupView, Hash32, Header,
    RecordedEvent, GENESIS_HASH,
};
use super::{
    AppendOutcome, AppendRequest, Appended, Broken, Direction, EventId, EventStore, LogError,
    StreamName, VerifyReport, MAX_READ_COUNT,
};
use crate::durable::{sled_to_io, DurableDb};

/// Most bytes of payload and PII in one append request.
pub const MAX_APPEND_BYTES: usize = 512 * 1024;
/// Appends waiting for the writer; senders wait (asynchronously) beyond this.
const MAX_QUEUED_APPENDS: usize = 16 * 1024;
/// The writer stops adding appends to a group past these.
const MAX_GROUP_EVENTS: usize = 8 * 1024;
const MAX_GROUP_BYTES: usize = 1024 * 1024;
/// Committed groups waiting for the indexer before the writer waits for it.
const MAX_QUEUED_INDEX_GROUPS: usize = 1024;
/// Groups the indexer folds into one sled batch.
const MAX_INDEX_GROUPS_PER_BATCH: usize = 256;
/// Writer caches are trimmed of indexed entries when they grow past these.
const MAX_CACHED_STREAMS: usize = 1 << 20;
const MAX_CACHED_IDS: usize = 1 << 18;

const INDEXED_KEY: &[u8] = b"~indexed";

/// Where and how to open the log.
#[derive(Clone, Debug)]
pub struct SledLogConfig {
    pub dir: PathBuf,
    /// sled's page cache.
    pub cache_capacity_bytes: u64,
}

impl SledLogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache_capacity_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Counters for benchmarks and the admin API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub head: u64,
    pub indexed: u64,
    pub groups: u64,
    pub syncs: u64,
}

/// The sled-backed [`EventStore`].
pub struct SledLog {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    indexer: Option<JoinHandle<()>>,
}

struct Shared {
    ddb: Arc<DurableDb>,
    log: sled::Tree,
    index: sled::Tree,
    committed: AtomicU64,
    head_tx: watch::Sender<u64>,
    indexed: AtomicU64,
    tail: Mutex<Tail>,
    poisoned: AtomicBool,
    groups: AtomicU64,
}

/// Committed stream entries the indexer has not written yet: stream → version → position.
#[derive(Default)]
struct Tail {
    streams: HashMap<StreamName, BTreeMap<u64, u64>>,
}

struct Job {
    request: AppendRequest,
    reply: oneshot::Sender<Result<AppendOutcome, LogError>>,
}

struct IndexEntry {
    stream: StreamName,
    version: u64,
    position: u64,
    id: EventId,
}

impl SledLog {
    /// Opens the log in its own sled database.
    pub fn open(config: &SledLogConfig) -> Result<Self, LogError> {
        std::fs::create_dir_all(&config.dir)?;
        let ddb = DurableDb::open(&config.dir, config.cache_capacity_bytes)?;
        Self::with_db(Arc::new(ddb))
    }

    /// Opens the log's trees in a database shared with the vault.
    pub(crate) fn with_db(ddb: Arc<DurableDb>) -> Result<Self, LogError> {
        let log = ddb.db().open_tree("log").map_err(sled_to_io)?;
        let index = ddb.db().open_tree("index").map_err(sled_to_io)?;
        let (head, last_hash, last_micros) = read_head(&log)?;
        let (head_tx, _) = watch::channel(head);
        let shared = Arc::new(Shared {
            ddb,
            log,
            index,
            committed: AtomicU64::new(head),
            head_tx,
            indexed: AtomicU64::new(0),
            tail: Mutex::new(Tail::default()),
            poisoned: AtomicBool::new(false),
            groups: AtomicU64::new(0),
        });
        shared.catch_up_index(head)?;

        let (jobs_tx, jobs_rx) = mpsc::channel(MAX_QUEUED_APPENDS);
        let (index_tx, index_rx) = std::sync::mpsc::sync_channel(MAX_QUEUED_INDEX_GROUPS);
        let writer = Writer {
            shared: shared.clone(),
            jobs: jobs_rx,
            index_tx,
            head,
            last_hash,
            last_micros,
            versions: HashMap::new(),
            recent_ids: HashMap::new(),
        };
        let writer = std::thread::Builder::new()
            .name("nexus-log-writer".into())
            .spawn(move || writer.run())?;
        let indexer_shared = shared.clone();
        let indexer = std::thread::Builder::new()
            .name("nexus-log-indexer".into())
            .spawn(move || run_indexer(&indexer_shared, index_rx))?;
        Ok(Self {
            shared,
            jobs: Some(jobs_tx),
            writer: Some(writer),
            indexer: Some(indexer),
        })
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            head: self.shared.committed.load(Ordering::Acquire),
            indexed: self.shared.indexed.load(Ordering::Acquire),
            groups: self.shared.groups.load(Ordering::Relaxed),
            syncs: self.shared.ddb.sync_count(),
        }
    }

    /// Makes every write so far durable (the vault's key writes ride on this too).
    pub fn sync(&self) -> Result<(), LogError> {
        Ok(self.shared.ddb.sync()?)
    }

    #[cfg(test)]
    pub(crate) fn raw_log_tree(&self) -> &sled::Tree {
        &self.shared.log
    }
}

impl Drop for SledLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer, whose end closes the indexer's queue.
        self.jobs.take();
        for handle in [self.writer.take(), self.indexer.take()].into_iter().flatten() {
            if handle.join().is_err() {
                error!("a log thread panicked");
            }
        }
    }
}

impl EventStore for SledLog {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, LogError> {
        request.validate()?;
        let bytes = request_bytes(&request);
        if bytes > MAX_APPEND_BYTES {
            return Err(LogError::PayloadTooLarge {
                size: bytes,
                limit: MAX_APPEND_BYTES,
            });
        }
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        let jobs = self.jobs.as_ref().ok_or(LogError::Closed)?;
        let (reply, answer) = oneshot::channel();
        jobs.send(Job { request, reply })
            .await
            .map_err(|_| LogError::Closed)?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.shared
            .read_stream(stream, from_version, direction, max_count)
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<u64, LogError> {
        let entries = self.shared.stream_positions(stream, u64::MAX, Direction::Backwards, 1)?;
        Ok(entries.first().map_or(0, |(version, _)| *version))
    }

    async fn read_all(
        &self,
        from_position: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.shared.read_all(from_position, max_count)
    }

    fn head(&self) -> u64 {
        self.shared.committed.load(Ordering::Acquire)
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head_tx.subscribe()
    }

    async fn verify(&self) -> Result<VerifyReport, LogError> {
        self.shared.verify()
    }
}

fn request_bytes(request: &AppendRequest) -> usize {
    request
        .writes
        .iter()
        .flat_map(|w| &w.events)
        .map(|e| e.payload.len() + e.pii.as_ref().map_or(0, |p| p.ciphertext.len()))
        .sum()
}

fn position_key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

fn be_u64(bytes: &[u8], what: &str) -> Result<u64, LogError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| LogError::Corrupt {
        position: 0,
        reason: format!("{what} is not 8 bytes"),
    })?;
    Ok(u64::from_be_bytes(arr))
}

fn stream_key(stream: &StreamName, version: u64) -> Vec<u8> {
    let name = stream.as_str().as_bytes();
    let mut key = Vec::with_capacity(name.len() + 10);
    key.push(b's');
    key.extend_from_slice(name);
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn id_key(id: &EventId) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'e';
    key[1..].copy_from_slice(id.0.as_bytes());
    key
}

/// The last durable position, its hash and its time, from the last group.
fn read_head(log: &sled::Tree) -> Result<(u64, Hash32, i64), LogError> {
    let Some((key, value)) = log.last().map_err(sled_to_io)? else {
        return Ok((0, GENESIS_HASH, 0));
    };
    let first = be_u64(&key, "group key")?;
    let group = GroupView::parse(first, &value)?;
    let last = group.event(group.count() - 1)?;
    Ok((
        group.last_position(),
        last.hash,
        last.recorded_at.timestamp_micros(),
    ))
}

impl Shared {
    fn head(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The group holding `position`: its first position and its bytes.
    fn group_at(&self, position: u64) -> Result<(u64, sled::IVec), LogError> {
        let found = self
            .log
            .range(..=position_key(position))
            .next_back()
            .transpose()
            .map_err(sled_to_io)?;
        let (key, value) = found.ok_or(LogError::Corrupt {
            position,
            reason: "no commit group holds this position".into(),
        })?;
        let first = be_u64(&key, "group key")?;
        Ok((first, value))
    }

    fn read_all(&self, from_position: u64, max_count: usize) -> Result<Vec<RecordedEvent>, LogError> {
        let head = self.head();
        let from = from_position.max(1);
        let max = max_count.min(MAX_READ_COUNT);
        let mut out = Vec::with_capacity(max.min(1024));
        if from > head || max == 0 {
            return Ok(out);
        }
        let (start, _) = self.group_at(from)?;
        for item in self.log.range(position_key(start)..) {
            let (key, value) = item.map_err(sled_to_io)?;
            let first = be_u64(&key, "group key")?;
            let group = GroupView::parse(first, &value)?;
            let skip = from.saturating_sub(first) as usize;
            for i in skip..group.count() {
                let position = first + i as u64;
                if position > head || out.len() == max {
                    return Ok(out);
                }
                let event = group.event(i)?;
                debug_assert_eq!(event.position, position);
                out.push(event);
            }
        }
        Ok(out)
    }

    /// (version, position) of a stream's events, in the requested direction.
    fn stream_positions(
        &self,
        stream: &StreamName,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<(u64, u64)>, LogError> {
        let max = max_count.min(MAX_READ_COUNT);
        // The tail first, then the tree: the indexer writes the tree before it
        // removes from the tail, so every committed entry is in one or the other.
        let mut merged: BTreeMap<u64, u64> = BTreeMap::new();
        {
            let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entries) = tail.streams.get(stream) {
                match direction {
                    Direction::Forwards => merged.extend(entries.range(from_version..).take(max)),
                    Direction::Backwards => {
                        merged.extend(entries.range(..=from_version).rev().take(max))
                    }
                }
            }
        }
        let tree = match direction {
            Direction::Forwards => self
                .index
                .range(stream_key(stream, from_version)..=stream_key(stream, u64::MAX)),
            Direction::Backwards => self
                .index
                .range(stream_key(stream, 0)..=stream_key(stream, from_version)),
        };
        let mut take_entry = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<(), LogError> {
            let (key, value) = item.map_err(sled_to_io)?;
            let version = be_u64(&key[key.len() - 8..], "stream index key")?;
            merged.insert(version, be_u64(&value, "stream index value")?);
            Ok(())
        };
        match direction {
            Direction::Forwards => tree.take(max).try_for_each(&mut take_entry)?,
            Direction::Backwards => tree.rev().take(max).try_for_each(&mut take_entry)?,
        }
        let entries: Vec<(u64, u64)> = match direction {
            Direction::Forwards => merged.into_iter().take(max).collect(),
            Direction::Backwards => merged.into_iter().rev().take(max).collect(),
        };
        debug_assert!(entries.windows(2).all(|w| w[0].0.abs_diff(w[1].0) == 1));
        Ok(entries)
    }

    fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let entries = self.stream_positions(stream, from_version, direction, max_count)?;
        let mut out = Vec::with_capacity(entries.len());
        let mut cached: Option<(u64, sled::IVec)> = None;
        for (version, position) in entries {
            let hit = matches!(&cached, Some((first, value))
                if position >= *first && position < *first + group_len(value));
            if !hit {
                cached = Some(self.group_at(position)?);
            }
            let (first, value) = cached.as_ref().expect("group was just loaded");
            let group = GroupView::parse(*first, value)?;
            let event = group.event((position - first) as usize)?;
            if event.stream != *stream || event.version != version {
                return Err(LogError::Corrupt {
                    position,
                    reason: "stream index points at another event".into(),
                });
            }
            out.push(event);
        }
        Ok(out)
    }

    fn verify(&self) -> Result<VerifyReport, LogError> {
        let head = self.head();
        let mut prev = GENESIS_HASH;
        let mut expected = 1u64;
        let broken = |position: u64, reason: String, checked: u64, prev: Hash32| VerifyReport {
            events_checked: checked,
            head,
            head_hash: prev,
            first_broken: Some(Broken { position, reason }),
        };
        for item in self.log.iter() {
            let (key, value) = item.map_err(sled_to_io)?;
            let first = be_u64(&key, "group key")?;
            if first > head {
                break;
            }
            if first != expected {
                let reason = format!("commit group starts at {first}, expected {expected}");
                return Ok(broken(expected, reason, expected - 1, prev));
            }
            let group = match GroupView::parse(first, &value) {
                Ok(g) => g,
                Err(e) => return Ok(broken(first, e.to_string(), expected - 1, prev)),
            };
            for i in 0..group.count() {
                match group.verify(i, &prev) {
                    Ok(hash) => prev = hash,
                    Err(reason) => return Ok(broken(expected, reason, expected - 1, prev)),
                }
                expected += 1;
            }
        }
        if expected != head + 1 {
            let reason = format!("log ends at {}, head is {head}", expected - 1);
            return Ok(broken(expected, reason, expected - 1, prev));
        }
        Ok(VerifyReport {
            events_checked: head,
            head,
            head_hash: prev,
            first_broken: None,
        })
    }

    /// Indexes what the log holds past the index's checkpoint (after a crash, or
    /// after the last run's indexer fell behind).
    fn catch_up_index(&self, head: u64) -> Result<(), LogError> {
        let mut indexed = match self.index.get(INDEXED_KEY).map_err(sled_to_io)? {
            Some(v) => be_u64(&v, "index checkpoint")?,
            None => 0,
        };
        if indexed > head {
            warn!(indexed, head, "stream index is ahead of the log; rebuilding it");
            self.index.clear().map_err(sled_to_io)?;
            indexed = 0;
        }
        // Bounded: each round indexes up to MAX_READ_COUNT events and moves forward.
        while indexed < head {
            let events = self.read_all(indexed + 1, MAX_READ_COUNT)?;
            let entries: Vec<IndexEntry> = events
                .into_iter()
                .map(|e| IndexEntry {
                    stream: e.stream,
                    version: e.version,
                    position: e.position,
                    id: e.id,
                })
                .collect();
            assert!(!entries.is_empty(), "read_all below the head returned nothing");
            indexed = self.write_index(&entries)?;
        }
        self.indexed.store(indexed, Ordering::Release);
        Ok(())
    }

    /// Writes index entries and the checkpoint in one atomic batch.
    fn write_index(&self, entries: &[IndexEntry]) -> Result<u64, LogError> {
        let mut batch = sled::Batch::default();
        let mut last = 0;
        for e in entries {
            batch.insert(stream_key(&e.stream, e.version), &position_key(e.position));
            batch.insert(&id_key(&e.id), &position_key(e.position));
            last = last.max(e.position);
        }
        batch.insert(INDEXED_KEY, &position_key(last));
        self.index.apply_batch(batch).map_err(sled_to_io)?;
        Ok(last)
    }
}

fn group_len(value: &[u8]) -> u64 {
    value
        .get(1..5)
        .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as u64)
}

fn run_indexer(shared: &Shared, groups: std::sync::mpsc::Receiver<Vec<IndexEntry>>) {
    while let Ok(first) = groups.recv() {
        let mut entries = first;
        for _ in 1..MAX_INDEX_GROUPS_PER_BATCH {
            match groups.try_recv() {
                Ok(more) => entries.extend(more),
                Err(_) => break,
            }
        }
        let last = match shared.write_index(&entries) {
            Ok(last) => last,
            Err(e) => {
                // The tail keeps serving these entries; the next open re-indexes.
                error!(error = %e, "stream index write failed; indexer stops");
                shared.poisoned.store(true, Ordering::Release);
                return;
            }
        };
        shared.indexed.store(last, Ordering::Release);
        let mut tail = shared.tail.lock().unwrap_or_else(|p| p.into_inner());
        for e in &entries {
            if let Some(versions) = tail.streams.get_mut(&e.stream) {
                versions.remove(&e.version);
                if versions.is_empty() {
                    tail.streams.remove(&e.stream);
                }
            }
        }
    }
}

/// The single writer: orders appends, builds commit groups, makes them durable.
struct Writer {
    shared: Arc<Shared>,
    jobs: mpsc::Receiver<Job>,
    index_tx: std::sync::mpsc::SyncSender<Vec<IndexEntry>>,
    head: u64,
    last_hash: Hash32,
    last_micros: i64,
    /// Streams written since open: (version, position of the last event).
    versions: HashMap<StreamName, (u64, u64)>,
    /// Event ids written since open and perhaps not indexed yet.
    recent_ids: HashMap<EventId, u64>,
}

/// One commit group under construction.
struct Group {
    first_position: u64,
    last_hash: Hash32,
    records: Vec<EncodedRecord>,
    identities: Vec<EventIdentity>,
    entries: Vec<IndexEntry>,
    versions: HashMap<StreamName, u64>,
    ids: HashMap<EventId, u64>,
}

impl Group {
    fn next_position(&self) -> u64 {
        self.first_position + self.records.len() as u64
    }
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.jobs.blocking_recv() {
            let mut events = first.request.event_count();
            let mut bytes = request_bytes(&first.request);
            let mut jobs = vec![first];
            while events < MAX_GROUP_EVENTS && bytes < MAX_GROUP_BYTES {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        events += job.request.event_count();
                        bytes += request_bytes(&job.request);
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(jobs);
        }
    }

    fn commit(&mut self, jobs: Vec<Job>) {
        let now_micros = Utc::now().timestamp_micros().max(self.last_micros);
        let mut group = Group {
            first_position: self.head + 1,
            last_hash: self.last_hash,
            records: Vec::new(),
            identities: Vec::new(),
            entries: Vec::new(),
            versions: HashMap::new(),
            ids: HashMap::new(),
        };
        let poisoned = self.shared.poisoned.load(Ordering::Acquire);
        let mut answers: Vec<(Job, Result<AppendOutcome, LogError>)> = jobs
            .into_iter()
            .map(|job| {
                let result = if poisoned {
                    Err(LogError::Poisoned)
                } else {
                    self.decide(&mut group, &job.request, now_micros)
                };
                (job, result)
            })
            .collect();

        if !group.records.is_empty() {
            if let Err(e) = self.write(&group) {
                error!(error = %e, "log write failed; the log stops taking appends");
                self.shared.poisoned.store(true, Ordering::Release);
                for (_, result) in &mut answers {
                    if result.is_ok() {
                        *result = Err(LogError::Poisoned);
                    }
                }
            } else {
                self.committed(group, now_micros);
            }
        }
        for (job, result) in answers {
            // The caller may have gone away; its events are durable all the same.
            let _ = job.reply.send(result);
        }
    }

    /// Decides one append against the log plus the group so far; on success its
    /// records are in the group, on failure the group is unchanged.
    fn decide(
        &mut self,
        group: &mut Group,
        request: &AppendRequest,
        now_micros: i64,
    ) -> Result<AppendOutcome, LogError> {
        if let Some(outcome) = self.duplicate(group, request)? {
            return Ok(outcome);
        }
        let mut currents = Vec::with_capacity(request.writes.len());
        for write in &request.writes {
            let current = self.current_version(group, &write.stream)?;
            if !write.expected.admits(current) {
                return Err(LogError::WrongExpectedVersion {
                    stream: write.stream.clone(),
                    expected: write.expected,
                    found: current,
                });
            }
            currents.push(current);
        }

        let mut position = group.next_position();
        let mut prev = group.last_hash;
        let mut records = Vec::with_capacity(request.event_count());
        let mut appended = Vec::with_capacity(request.event_count());
        for (write, current) in request.writes.iter().zip(currents) {
            for (k, event) in write.events.iter().enumerate() {
                let version = current + k as u64 + 1;
                let header = Header {
                    position,
                    stream: write.stream.as_str().to_owned(),
                    version,
                    event_id: *event.id.0.as_bytes(),
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    recorded_at_micros: now_micros,
                    correlation_id: request.correlation_id.map(|u| *u.as_bytes()),
                    causation_id: request.causation_id.map(|u| *u.as_bytes()),
                };
                let record = encode_record(&header, &event.payload, &event.pii, &prev)?;
                prev = record.hash;
                let identity = EventIdentity {
                    stream: header.stream,
                    version,
                    event_type: header.event_type,
                    schema_version: header.schema_version,
                    payload_digest: record.payload_digest,
                };
                records.push((record, identity, write.stream.clone(), event.id));
                appended.push(Appended { position, version });
                position += 1;
            }
        }
        for (record, identity, stream, id) in records {
            let position = group.next_position();
            group.last_hash = record.hash;
            group.versions.insert(stream.clone(), identity.version);
            group.ids.insert(id, position);
            group.entries.push(IndexEntry {
                stream,
                version: identity.version,
                position,
                id,
            });
            group.records.push(record);
            group.identities.push(identity);
        }
        Ok(AppendOutcome {
            events: appended,
            duplicate: false,
        })
    }

    /// `Some` when every event of the request is already in the log with the same
    /// body: the original positions. An id reused for another body is an error.
    fn duplicate(
        &self,
        group: &Group,
        request: &AppendRequest,
    ) -> Result<Option<AppendOutcome>, LogError> {
        let mut found = Vec::new();
        let mut missing = None;
        for write in &request.writes {
            for event in &write.events {
                match self.lookup_id(group, &event.id)? {
                    Some(position) => found.push((position, write, event)),
                    None => missing = Some(event.id),
                }
            }
        }
        let Some((_, _, first_found)) = found.first() else {
            return Ok(None);
        };
        if missing.is_some() {
            return Err(LogError::PartialDuplicate { id: first_found.id });
        }
        let mut events = Vec::with_capacity(found.len());
        for (position, write, event) in found {
            let identity = self.identity_at(group, position)?;
            let same = identity.stream == write.stream.as_str()
                && identity.event_type == event.event_type
                && identity.schema_version == event.schema_version
                && identity.payload_digest == super::record::sha256(&event.payload);
            if !same {
                return Err(LogError::EventIdReused { id: event.id });
            }
            events.push(Appended {
                position,
                version: identity.version,
            });
        }
        Ok(Some(AppendOutcome {
            events,
            duplicate: true,
        }))
    }

    fn lookup_id(&self, group: &Group, id: &EventId) -> Result<Option<u64>, LogError> {
        if let Some(position) = group.ids.get(id).or_else(|| self.recent_ids.get(id)) {
            return Ok(Some(*position));
        }
        match self.shared.index.get(id_key(id)).map_err(sled_to_io)? {
            Some(value) => Ok(Some(be_u64(&value, "event id index value")?)),
            None => Ok(None),
        }
    }

    fn identity_at(&self, group: &Group, position: u64) -> Result<EventIdentity, LogError> {
        if position >= group.first_position {
            let i = (position - group.first_position) as usize;
            return Ok(group.identities[i].clone());
        }
        let (first, value) = self.shared.group_at(position)?;
        GroupView::parse(first, &value)?.identity((position - first) as usize)
    }

    fn current_version(&self, group: &Group, stream: &StreamName) -> Result<u64, LogError> {
        if let Some(version) = group.versions.get(stream) {
            return Ok(*version);
        }
        if let Some((version, _)) = self.versions.get(stream) {
            return Ok(*version);
        }
        // Not written since open (or trimmed after indexing): the index knows.
        let prefix = {
            let mut key = stream_key(stream, 0);
            key.truncate(key.len() - 8);
            key
        };
        match self.shared.index.scan_prefix(prefix).next_back() {
            Some(item) => {
                let (key, _) = item.map_err(sled_to_io)?;
                be_u64(&key[key.len() - 8..], "stream index key")
            }
            None => Ok(0),
        }
    }

    /// Writes the group as one sled value and makes it durable.
    fn write(&self, group: &Group) -> Result<(), LogError> {
        let value = encode_group(&group.records);
        self.shared
            .log
            .insert(position_key(group.first_position), value)
            .map_err(sled_to_io)?;
        self.shared.ddb.sync()?;
        Ok(())
    }

    /// After the group is durable: publish it to readers and the indexer.
    fn committed(&mut self, group: Group, now_micros: i64) {
        let last = group.next_position() - 1;
        debug_assert_eq!(group.first_position, self.head + 1, "positions are dense");
        debug_assert_eq!(group.entries.len(), group.records.len());
        self.head = last;
        self.last_hash = group.last_hash;
        self.last_micros = now_micros;
        {
            let mut tail = self.shared.tail.lock().unwrap_or_else(|p| p.into_inner());
            for e in &group.entries {
                self.versions.insert(e.stream.clone(), (e.version, e.position));
                self.recent_ids.insert(e.id, e.position);
                tail.streams
                    .entry(e.stream.clone())
                    .or_default()
                    .insert(e.version, e.position);
            }
        }
        self.shared.committed.store(last, Ordering::Release);
        self.shared.head_tx.send_replace(last);
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        self.trim_caches();
        if self.index_tx.send(group.entries).is_err() {
            // The indexer stopped (and said why); the tail keeps reads correct.
            self.shared.poisoned.store(true, Ordering::Release);
        }
    }

    /// Drops cached entries the index already holds, once the caches are large.
    fn trim_caches(&mut self) {
        let indexed = self.shared.indexed.load(Ordering::Acquire);
        if self.versions.len() > MAX_CACHED_STREAMS {
            self.versions.retain(|_, (_, position)| *position > indexed);
        }
        if self.recent_ids.len() > MAX_CACHED_IDS {
            self.recent_ids.retain(|_, position| *position > indexed);
        }
    }
}
