//! The log on sled.
//!
//! Layout: one sled database (`<dir>/log/`, shared with the vault), tree `log`: one
//! value per commit group, keyed by the group's first position (big-endian). A
//! group holds every event of the appends that shared one durable flush, so the
//! commit path writes one sled key per group, not per event: sled's per-key cost
//! caps a key-per-event log near 40,000 appends/s on two cores.
//!
//! The indexes (stream → positions, event id → position) are derived from the log
//! and kept in memory, rebuilt on open by a header-only scan. Nothing derived is on
//! the durable path.
//!
//! One writer thread assigns positions and hashes, writes the group, and makes it
//! durable (flush + fdatasync) before answering any append in it. Readers see only
//! durable events: `committed` moves, and the stream index learns of a group, only
//! after the group's sync.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tracing::error;

use super::group::{
    submit, take_group, Committed, Group, Job, MAX_GROUP_BYTES, MAX_GROUP_EVENTS,
    MAX_QUEUED_APPENDS,
};
use super::record::{
    encode_group, EventIdentity, GroupView, Hash32, RecordedEvent, GENESIS_HASH,
    MAX_RECORD_FRAME_BYTES,
};
use super::{
    AppendOutcome, AppendRequest, Broken, Direction, EventId, EventStore, LogError, StreamName,
    VerifyReport, MAX_APPEND_BYTES, MAX_EVENTS_PER_APPEND, MAX_PAYLOAD_BYTES, MAX_READ_COUNT,
    MAX_SEALED_PII_BYTES,
};
use crate::durable::{sled_to_io, DurableDb};

/// The largest commit-group value: the last append of a group may overshoot the
/// group limits by one whole append.
const MAX_GROUP_VALUE_BYTES: usize = 5
    + (MAX_GROUP_EVENTS + MAX_EVENTS_PER_APPEND) * (4 + MAX_RECORD_FRAME_BYTES)
    + MAX_GROUP_BYTES
    + MAX_APPEND_BYTES;
// One event at the payload and PII limits fits one append.
const _: () = assert!(MAX_PAYLOAD_BYTES + MAX_SEALED_PII_BYTES <= MAX_APPEND_BYTES);
// A group's record count and offsets are u32.
const _: () = assert!(MAX_GROUP_VALUE_BYTES <= u32::MAX as usize);
/// Shards of the stream index, so readers rarely meet the writer's lock.
const STREAM_INDEX_SHARDS: usize = 64;
const _: () = assert!(STREAM_INDEX_SHARDS > 0);

/// The log's database directory under the store's.
const LOG_DIR: &str = "log";

/// Where and how to open the log.
#[derive(Clone, Debug)]
pub struct SledLogConfig {
    pub dir: PathBuf,
    /// sled's page cache.
    pub cache_capacity_bytes: u64,
    pub sync: SyncMode,
}

/// What the writer does before acknowledging a commit group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// sled flush, then fdatasync of the database file: durable.
    #[default]
    Fdatasync,
    /// sled flush only: NOT durable (`sync_file_range` is no barrier). Exists so
    /// the benchmark can measure what the fdatasync costs; never for serving.
    FlushOnlyNotDurable,
}

impl SledLogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            sync: SyncMode::Fdatasync,
        }
    }
}

/// Counters for benchmarks and the admin API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub head: u64,
    pub streams: u64,
    pub groups: u64,
    pub syncs: u64,
}

/// The sled-backed [`EventStore`].
pub struct SledLog {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    ddb: Arc<DurableDb>,
    sync: SyncMode,
    log: sled::Tree,
    committed: AtomicU64,
    head_tx: watch::Sender<u64>,
    streams: StreamIndex,
    poisoned: AtomicBool,
    groups: AtomicU64,
}

/// Stream → the positions of its events (version `v` at index `v - 1`).
struct StreamIndex {
    shards: Vec<RwLock<HashMap<StreamName, Vec<u64>>>>,
}

impl StreamIndex {
    fn new() -> Self {
        Self {
            shards: (0..STREAM_INDEX_SHARDS)
                .map(|_| RwLock::default())
                .collect(),
        }
    }

    fn shard_of(stream: &StreamName) -> usize {
        // DefaultHasher::new() has fixed keys: the same stream always maps to the
        // same shard. The maps inside use random keys against collision attacks.
        let mut h = DefaultHasher::new();
        stream.hash(&mut h);
        (h.finish() % STREAM_INDEX_SHARDS as u64) as usize
    }

    fn read(&self, shard: usize) -> std::sync::RwLockReadGuard<'_, HashMap<StreamName, Vec<u64>>> {
        self.shards[shard].read().unwrap_or_else(|p| p.into_inner())
    }

    fn version(&self, stream: &StreamName) -> u64 {
        let shard = self.read(Self::shard_of(stream));
        shard.get(stream).map_or(0, |p| p.len() as u64)
    }

    /// (version, position) pairs in the requested direction.
    fn positions(
        &self,
        stream: &StreamName,
        from_version: u64,
        direction: Direction,
        max: usize,
    ) -> Vec<(u64, u64)> {
        let shard = self.read(Self::shard_of(stream));
        let Some(positions) = shard.get(stream) else {
            return Vec::new();
        };
        let len = positions.len() as u64;
        let pair = |v: u64| (v, positions[(v - 1) as usize]);
        match direction {
            Direction::Forwards => {
                let from = from_version.max(1);
                (from..=len).take(max).map(pair).collect()
            }
            Direction::Backwards => {
                let from = from_version.min(len);
                (1..=from).rev().take(max).map(pair).collect()
            }
        }
    }

    /// Adds committed events; each stream's versions must follow on densely.
    fn extend(&self, entries: &[(StreamName, u64, u64)]) {
        let mut by_shard: Vec<Vec<&(StreamName, u64, u64)>> = vec![Vec::new(); STREAM_INDEX_SHARDS];
        for entry in entries {
            by_shard[Self::shard_of(&entry.0)].push(entry);
        }
        for (shard, entries) in by_shard.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let mut map = self.shards[shard]
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for (stream, version, position) in entries {
                let positions = map.entry(stream.clone()).or_default();
                assert_eq!(
                    positions.len() as u64 + 1,
                    *version,
                    "stream versions are dense"
                );
                positions.push(*position);
            }
        }
    }

    fn stream_count(&self) -> u64 {
        (0..STREAM_INDEX_SHARDS)
            .map(|s| self.read(s).len() as u64)
            .sum()
    }
}

impl SledLog {
    /// Opens the log in its own sled database.
    pub fn open(config: &SledLogConfig) -> Result<Self, LogError> {
        let ddb = Self::open_db(config)?;
        Self::with_db(Arc::new(ddb), config.sync)
    }

    /// Whether a log was created under `dir` (its database's page file):
    /// what a command that must not create one checks first.
    pub fn exists_in(dir: &std::path::Path) -> bool {
        dir.join(LOG_DIR).join("db").is_file()
    }

    /// Opens the database that holds the log (and the vault).
    pub(crate) fn open_db(config: &SledLogConfig) -> Result<DurableDb, LogError> {
        let dir = config.dir.join(LOG_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(DurableDb::open(&dir, config.cache_capacity_bytes)?)
    }

    /// Opens the log in `ddb` (from [`Self::open_db`]) and rebuilds its indexes.
    pub(crate) fn with_db(ddb: Arc<DurableDb>, sync: SyncMode) -> Result<Self, LogError> {
        let log = ddb.db().open_tree("log").map_err(sled_to_io)?;
        let (head_tx, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            ddb,
            sync,
            log,
            committed: AtomicU64::new(0),
            head_tx,
            streams: StreamIndex::new(),
            poisoned: AtomicBool::new(false),
            groups: AtomicU64::new(0),
        });
        let recovered = shared.rebuild_index()?;
        shared.committed.store(recovered.head, Ordering::Release);
        shared.head_tx.send_replace(recovered.head);

        let (jobs_tx, jobs_rx) = mpsc::channel(MAX_QUEUED_APPENDS);
        let writer = Writer {
            shared: shared.clone(),
            jobs: jobs_rx,
            head: recovered.head,
            last_hash: recovered.last_hash,
            last_micros: recovered.last_micros,
            ids: recovered.ids,
        };
        let writer = std::thread::Builder::new()
            .name("nexus-log-writer".into())
            .spawn(move || writer.run())?;
        Ok(Self {
            shared,
            jobs: Some(jobs_tx),
            writer: Some(writer),
        })
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            head: self.shared.head(),
            streams: self.shared.streams.stream_count(),
            groups: self.shared.groups.load(Ordering::Relaxed),
            syncs: self.shared.ddb.sync_count(),
        }
    }

    /// Makes every write so far durable (the vault's key writes ride on this too).
    pub fn sync(&self) -> Result<(), LogError> {
        Ok(self.shared.ddb.sync()?)
    }
}

impl Drop for SledLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has answered what was queued.
        self.jobs.take();
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                error!("the log writer panicked");
            }
        }
    }
}

impl EventStore for SledLog {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, LogError> {
        request.validate()?;
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        submit(self.jobs.as_ref(), request).await
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
        Ok(self.shared.streams.version(stream))
    }

    async fn read_all(
        &self,
        from_position: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.shared.read_all(from_position, max_count)
    }

    fn head(&self) -> u64 {
        self.shared.head()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head_tx.subscribe()
    }

    async fn verify(&self) -> Result<VerifyReport, LogError> {
        self.shared.verify()
    }
}

fn position_key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

fn group_key(bytes: &[u8]) -> Result<u64, LogError> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| LogError::Corrupt {
        position: 0,
        reason: "a commit group key is not 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// What a scan of the log on open recovers.
struct Recovered {
    head: u64,
    last_hash: Hash32,
    last_micros: i64,
    ids: HashMap<EventId, u64>,
}

impl Shared {
    fn head(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Scans every record's header to rebuild the stream and id indexes.
    fn rebuild_index(&self) -> Result<Recovered, LogError> {
        let mut recovered = Recovered {
            head: 0,
            last_hash: GENESIS_HASH,
            last_micros: 0,
            ids: HashMap::new(),
        };
        let mut entries = Vec::new();
        for item in self.log.iter() {
            let (key, value) = item.map_err(sled_to_io)?;
            let first = group_key(&key)?;
            if first != recovered.head + 1 {
                return Err(LogError::Corrupt {
                    position: recovered.head + 1,
                    reason: format!("the next commit group starts at {first}"),
                });
            }
            let group = GroupView::parse(first, &value)?;
            for i in 0..group.count() {
                let (stream, version, id) = group.index_entry(i)?;
                let position = first + i as u64;
                recovered.ids.insert(id, position);
                entries.push((stream, version, position));
            }
            recovered.head = group.last_position();
            // Bounded memory while scanning: hand entries over in chunks.
            if entries.len() >= MAX_READ_COUNT {
                self.streams.extend(&entries);
                entries.clear();
            }
        }
        self.streams.extend(&entries);
        if recovered.head > 0 {
            let (first, value) = self.group_at(recovered.head)?;
            let group = GroupView::parse(first, &value)?;
            recovered.last_hash = group.hash(group.count() - 1)?;
            recovered.last_micros = group.recorded_at_micros(group.count() - 1)?;
        }
        Ok(recovered)
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
        Ok((group_key(&key)?, value))
    }

    fn read_all(
        &self,
        from_position: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
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
            let first = group_key(&key)?;
            let group = GroupView::parse(first, &value)?;
            let skip = from.saturating_sub(first) as usize;
            for i in skip..group.count() {
                let position = first + i as u64;
                if position > head || out.len() == max {
                    return Ok(out);
                }
                out.push(group.event(i)?);
            }
        }
        Ok(out)
    }

    fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let max = max_count.min(MAX_READ_COUNT);
        let entries = self.streams.positions(stream, from_version, direction, max);
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
        let broken = |position: u64, reason: String, prev: Hash32| VerifyReport {
            events_checked: position - 1,
            head,
            head_hash: prev,
            first_broken: Some(Broken { position, reason }),
        };
        for item in self.log.iter() {
            let (key, value) = item.map_err(sled_to_io)?;
            let first = group_key(&key)?;
            if first > head {
                break;
            }
            if first != expected {
                let reason = format!("commit group starts at {first}, expected {expected}");
                return Ok(broken(expected, reason, prev));
            }
            let group = match GroupView::parse(first, &value) {
                Ok(g) => g,
                Err(e) => return Ok(broken(first, e.to_string(), prev)),
            };
            for i in 0..group.count() {
                match group.verify(i, &prev) {
                    Ok(hash) => prev = hash,
                    Err(reason) => return Ok(broken(expected, reason, prev)),
                }
                expected += 1;
            }
        }
        if expected != head + 1 {
            let reason = format!("log ends at {}, head is {head}", expected - 1);
            return Ok(broken(expected, reason, prev));
        }
        Ok(VerifyReport {
            events_checked: head,
            head,
            head_hash: prev,
            first_broken: None,
        })
    }
}

fn group_len(value: &[u8]) -> u64 {
    value.get(1..5).map_or(0, |b| {
        u32::from_be_bytes(b.try_into().expect("4 bytes")) as u64
    })
}

/// The single writer: orders appends, builds commit groups, makes them durable.
struct Writer {
    shared: Arc<Shared>,
    jobs: mpsc::Receiver<Job>,
    head: u64,
    last_hash: Hash32,
    last_micros: i64,
    /// Every event id in the log → its position. Only the writer reads it.
    ids: HashMap<EventId, u64>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.jobs.blocking_recv() {
            let jobs = take_group(first, &mut self.jobs);
            self.commit(jobs);
        }
    }

    fn commit(&mut self, jobs: Vec<Job>) {
        let now_micros = Utc::now().timestamp_micros().max(self.last_micros);
        let mut group = Group::after(self.head, self.last_hash);
        let poisoned = self.shared.poisoned.load(Ordering::Acquire);
        let mut answers: Vec<(Job, Result<AppendOutcome, LogError>)> = jobs
            .into_iter()
            .map(|job| {
                let result = if poisoned {
                    Err(LogError::Poisoned)
                } else {
                    let committed = SledCommitted {
                        ids: &self.ids,
                        shared: &self.shared,
                    };
                    group.decide(&committed, &job.request, now_micros)
                };
                (job, result)
            })
            .collect();

        if !group.is_empty() {
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

    /// Writes the group as one sled value and makes it durable.
    fn write(&self, group: &Group) -> Result<(), LogError> {
        let value = encode_group(&group.records);
        self.shared
            .log
            .insert(position_key(group.first_position), value)
            .map_err(sled_to_io)?;
        match self.shared.sync {
            SyncMode::Fdatasync => self.shared.ddb.sync()?,
            SyncMode::FlushOnlyNotDurable => self.shared.ddb.flush_only()?,
        }
        Ok(())
    }

    /// After the group is durable: publish it to readers.
    fn committed(&mut self, group: Group, now_micros: i64) {
        let last = group.next_position() - 1;
        assert_eq!(group.first_position, self.head + 1, "positions are dense");
        assert_eq!(group.entries.len(), group.records.len());
        self.head = last;
        self.last_hash = group.last_hash;
        self.last_micros = now_micros;
        for (id, (_, _, position)) in group.ids.iter().zip(&group.entries) {
            self.ids.insert(*id, *position);
        }
        self.shared.streams.extend(&group.entries);
        self.shared.committed.store(last, Ordering::Release);
        self.shared.head_tx.send_replace(last);
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
    }
}

/// The committed log as the writer sees it: its id index and the stream index.
struct SledCommitted<'a> {
    ids: &'a HashMap<EventId, u64>,
    shared: &'a Shared,
}

impl Committed for SledCommitted<'_> {
    fn position_of(&self, id: &EventId) -> Result<Option<u64>, LogError> {
        Ok(self.ids.get(id).copied())
    }

    fn identity_at(&self, position: u64) -> Result<EventIdentity, LogError> {
        let (first, value) = self.shared.group_at(position)?;
        GroupView::parse(first, &value)?.identity((position - first) as usize)
    }

    fn version_of(&self, stream: &StreamName) -> Result<u64, LogError> {
        Ok(self.shared.streams.version(stream))
    }
}
