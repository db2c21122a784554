//! The log on PostgreSQL: the same records, decisions and hash chain as the
//! embedded log, one row per record, shared by every node.
//!
//! Appends: each node queues its appends to one writer task, which drains the
//! queue into a commit group and commits the group as one transaction:
//! `pg_advisory_xact_lock` (so groups of all nodes commit one at a time), read
//! the head row, look up the group's event ids and streams, decide every append
//! (`group.rs`, as on sled), insert the rows (one statement over arrays), move
//! the head from the value read (the fence: a writer whose view is stale moves
//! nothing and rolls back), `pg_notify`, commit (`synchronous_commit = on`).
//! Positions are assigned under the lock and the lock is released only after
//! the commit is visible, so commit order is position order: a reader of
//! `position > checkpoint` can never skip a row that commits later. The unique
//! constraints on event ids and (stream, version) are a second line of defence.
//!
//! The head a node knows moves with its own commits, with NOTIFY from the other
//! nodes' commits, and with a poll of the head row (the fallback when a
//! notification is lost, and after the listening connection comes back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};
use tracing::{debug, error, warn};
use uuid::Uuid;

use super::group::{submit, take_group, Committed, Group, Job, MAX_QUEUED_APPENDS};
use super::record::{EventIdentity, Hash32, RecordedEvent, StoredRecord, GENESIS_HASH};
use super::{
    AppendOutcome, AppendRequest, Broken, Direction, EventId, EventStore, LogError, StreamName,
    VerifyReport, MAX_READ_COUNT,
};
use crate::postgres::schema::check_schema;
use crate::postgres::{describe, to_i64, to_u64, Connections, PgAddress, PgError};

/// The advisory lock every node's writer takes for one commit group.
const WRITER_LOCK_KEY: i64 = 0x6e65_7875_735f_6c67; // "nexus_lg"
/// The channel commits are announced on (payload: the new head).
const NOTIFY_CHANNEL: &str = "nexus_log";
/// A writer session that stalls inside a transaction loses it (and the lock)
/// after this, so a hung node cannot hold up the others' appends.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 5_000;

/// Inserts records given as five arrays (position, stream, version, event
/// id, record bytes): one statement for a whole group.
const INSERT_ROWS: &str = "INSERT INTO nexus.events (position, stream, version, event_id, record) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::bytea[])";

/// A statement parameter.
type Param<'a> = dyn ToSql + Sync + 'a;

/// Where and how to open the log.
#[derive(Clone, Debug)]
pub struct PgLogConfig {
    pub address: PgAddress,
    /// Connections for reads (each pipelines many concurrent reads).
    pub read_connections: usize,
    /// How often the head row is polled when no notification arrives.
    pub poll_interval_ms: u64,
}

impl PgLogConfig {
    pub fn new(address: PgAddress) -> Self {
        Self {
            address,
            read_connections: 4,
            poll_interval_ms: 500,
        }
    }
}

/// The PostgreSQL-backed [`EventStore`].
pub struct PgLog {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    listener: tokio::task::JoinHandle<()>,
}

struct Shared {
    reads: Connections,
    head: AtomicU64,
    head_tx: watch::Sender<u64>,
    groups: AtomicU64,
}

impl Shared {
    /// A head seen somewhere (own commit, notification, poll): the highest wins.
    fn saw_head(&self, head: u64) {
        self.head.fetch_max(head, Ordering::AcqRel);
        self.head_tx.send_if_modified(|known| {
            let moved = head > *known;
            if moved {
                *known = head;
            }
            moved
        });
    }

    fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }
}

impl From<PgError> for LogError {
    fn from(e: PgError) -> Self {
        LogError::Database(e.to_string())
    }
}

fn db(e: tokio_postgres::Error) -> LogError {
    LogError::Database(describe(&e))
}

impl PgLog {
    /// Connects, checks the schema, reads the head and starts the writer and
    /// the head listener. Must run inside a tokio runtime.
    pub async fn open(config: &PgLogConfig) -> Result<Self, LogError> {
        let reads = Connections::new(config.address.clone(), config.read_connections);
        let client = reads.client().await?;
        check_schema(&client).await?;
        let head = read_head(client.as_ref()).await?.position;
        let (head_tx, _) = watch::channel(head);
        let shared = Arc::new(Shared {
            reads,
            head: AtomicU64::new(head),
            head_tx,
            groups: AtomicU64::new(0),
        });
        let (jobs_tx, jobs_rx) = mpsc::channel(MAX_QUEUED_APPENDS);
        let writer = Writer {
            shared: shared.clone(),
            address: config.address.clone(),
            jobs: jobs_rx,
            session: None,
            cache: VersionCache::default(),
        };
        // A thread and runtime of its own, as on sled: the writer's turns do not
        // wait behind the callers' tasks.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("nexus-pg-writer".into())
            .spawn(move || runtime.block_on(writer.run()))?;
        let poll = Duration::from_millis(config.poll_interval_ms.max(10));
        let listener = tokio::spawn(listen(
            Arc::downgrade(&shared),
            config.address.clone(),
            poll,
        ));
        Ok(Self {
            shared,
            jobs: Some(jobs_tx),
            listener,
        })
    }

    /// Commit groups this node wrote.
    pub fn groups(&self) -> u64 {
        self.shared.groups.load(Ordering::Relaxed)
    }
}

impl Drop for PgLog {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has answered what was queued.
        self.jobs.take();
        self.listener.abort();
    }
}

/// The head row: the last position, its hash and its time.
struct HeadRow {
    position: u64,
    hash: Hash32,
    recorded_at_micros: i64,
}

async fn read_head(client: &impl tokio_postgres::GenericClient) -> Result<HeadRow, LogError> {
    let row = client
        .query_one(
            "SELECT position, hash, recorded_at_micros FROM nexus.log_head",
            &[],
        )
        .await
        .map_err(db)?;
    head_row(&row)
}

fn head_row(row: &Row) -> Result<HeadRow, LogError> {
    let corrupt = |reason: &str| LogError::Corrupt {
        position: 0,
        reason: format!("head row: {reason}"),
    };
    let position = to_u64(row.get(0)).ok_or_else(|| corrupt("negative position"))?;
    let hash: &[u8] = row.get(1);
    Ok(HeadRow {
        position,
        hash: hash
            .try_into()
            .map_err(|_| corrupt("hash is not 32 bytes"))?,
        recorded_at_micros: row.get(2),
    })
}

/// Watches the head: LISTEN for commits, and poll the head row as a fallback.
async fn listen(shared: Weak<Shared>, address: PgAddress, poll: Duration) {
    loop {
        let on_notify = {
            let shared = shared.clone();
            Box::new(move |(channel, payload): (String, String)| {
                let head = payload.parse::<u64>().ok();
                if let (true, Some(head), Some(shared)) =
                    (channel == NOTIFY_CHANNEL, head, shared.upgrade())
                {
                    shared.saw_head(head);
                }
            })
        };
        match address.connect_listening(Some(on_notify)).await {
            Ok(client) => {
                if let Err(e) = client.batch_execute("LISTEN nexus_log").await {
                    warn!(error = %describe(&e), "cannot listen for log commits");
                } else {
                    // Returns when the connection fails or the log is gone.
                    if poll_head(&shared, &client, poll).await {
                        return;
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot connect to listen for log commits"),
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Polls the head row until the connection fails (false) or the log is gone (true).
async fn poll_head(shared: &Weak<Shared>, client: &Client, poll: Duration) -> bool {
    loop {
        let head = read_head(client).await;
        let Some(shared) = shared.upgrade() else {
            return true;
        };
        match head {
            Ok(head) => shared.saw_head(head.position),
            Err(e) => {
                debug!(error = %e, "head poll failed; reconnecting");
                return false;
            }
        }
        drop(shared);
        tokio::time::sleep(poll).await;
    }
}

impl EventStore for PgLog {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, LogError> {
        request.validate()?;
        submit(self.jobs.as_ref(), request).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let max = to_i64(max_count.min(MAX_READ_COUNT) as u64);
        let client = self.shared.reads.client().await?;
        let rows = match direction {
            Direction::Forwards => {
                client
                    .query(
                        "SELECT position, record FROM nexus.events \
                         WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3",
                        &[&stream.as_str(), &to_i64(from_version.max(1)), &max],
                    )
                    .await
            }
            Direction::Backwards => {
                client
                    .query(
                        "SELECT position, record FROM nexus.events \
                         WHERE stream = $1 AND version <= $2 ORDER BY version DESC LIMIT $3",
                        &[&stream.as_str(), &to_i64(from_version), &max],
                    )
                    .await
            }
        }
        .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let event = stored(row)?.event()?;
            if event.stream != *stream {
                return Err(LogError::Corrupt {
                    position: event.position,
                    reason: "the row's stream is not the record's".into(),
                });
            }
            out.push(event);
        }
        Ok(out)
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<u64, LogError> {
        let client = self.shared.reads.client().await?;
        let row = client
            .query_one(
                "SELECT max(version) FROM nexus.events WHERE stream = $1",
                &[&stream.as_str()],
            )
            .await
            .map_err(db)?;
        let version: Option<i64> = row.get(0);
        Ok(version.and_then(to_u64).unwrap_or(0))
    }

    async fn read_all(
        &self,
        from_position: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let head = self.head();
        let from = from_position.max(1);
        let max = max_count.min(MAX_READ_COUNT);
        if from > head || max == 0 {
            return Ok(Vec::new());
        }
        let client = self.shared.reads.client().await?;
        let rows = read_rows(&client, from, head, max).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let record = stored(row)?;
            // Positions are dense: a missing row is corruption, not a gap to skip.
            if record.position != from + i as u64 {
                return Err(LogError::Corrupt {
                    position: from + i as u64,
                    reason: "no row at this position".into(),
                });
            }
            out.push(record.event()?);
        }
        Ok(out)
    }

    fn head(&self) -> u64 {
        self.shared.head()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head_tx.subscribe()
    }

    async fn verify(&self) -> Result<VerifyReport, LogError> {
        let client = self.shared.reads.client().await?;
        let head = read_head(client.as_ref()).await?;
        let mut prev = GENESIS_HASH;
        let mut expected = 1u64;
        let broken = |position: u64, reason: String, prev: Hash32| VerifyReport {
            events_checked: position - 1,
            head: head.position,
            head_hash: prev,
            first_broken: Some(Broken { position, reason }),
        };
        while expected <= head.position {
            let rows = read_rows(&client, expected, head.position, MAX_READ_COUNT).await?;
            if rows.is_empty() {
                let reason = format!("log ends at {}, head is {}", expected - 1, head.position);
                return Ok(broken(expected, reason, prev));
            }
            for row in &rows {
                let record = stored(row)?;
                if record.position != expected {
                    let reason = format!("no row at this position (next is {})", record.position);
                    return Ok(broken(expected, reason, prev));
                }
                match record.verify(&prev) {
                    Ok(hash) => prev = hash,
                    Err(reason) => return Ok(broken(expected, reason, prev)),
                }
                expected += 1;
            }
        }
        if prev != head.hash {
            let reason = "the head row's hash is not the chain's".to_owned();
            return Ok(broken(head.position.max(1), reason, prev));
        }
        Ok(VerifyReport {
            events_checked: head.position,
            head: head.position,
            head_hash: prev,
            first_broken: None,
        })
    }
}

async fn read_rows(client: &Client, from: u64, to: u64, max: usize) -> Result<Vec<Row>, LogError> {
    client
        .query(
            "SELECT position, record FROM nexus.events \
             WHERE position >= $1 AND position <= $2 ORDER BY position LIMIT $3",
            &[&to_i64(from), &to_i64(to), &to_i64(max as u64)],
        )
        .await
        .map_err(db)
}

/// A `(position, record)` row as a stored record.
fn stored(row: &Row) -> Result<StoredRecord<'_>, LogError> {
    let position: i64 = row.get(0);
    let position = to_u64(position).ok_or(LogError::Corrupt {
        position: 0,
        reason: "a negative position".into(),
    })?;
    Ok(StoredRecord {
        position,
        bytes: row.get(1),
    })
}

/// The writer's connection and its prepared statements.
struct Session {
    client: Client,
    lock: Statement,
    head: Statement,
    ids: Statement,
    versions: Statement,
    insert: Statement,
    move_head: Statement,
    notify: Statement,
    since: Statement,
    find: Statement,
}

impl Session {
    async fn open(address: &PgAddress) -> Result<Self, LogError> {
        let client = address.connect().await?;
        client
            .batch_execute(&format!(
                "SET synchronous_commit = on; \
                 SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}"
            ))
            .await
            .map_err(db)?;
        let prepare = |sql: &'static str| {
            let client = &client;
            async move { client.prepare(sql).await.map_err(db) }
        };
        Ok(Self {
            lock: prepare("SELECT pg_advisory_xact_lock($1)").await?,
            head: prepare("SELECT position, hash, recorded_at_micros FROM nexus.log_head").await?,
            ids: prepare(
                "SELECT position, record FROM nexus.events WHERE event_id = ANY($1::uuid[])",
            )
            .await?,
            versions: prepare(
                "SELECT s, (SELECT max(version) FROM nexus.events WHERE stream = s) \
                 FROM unnest($1::text[]) AS s",
            )
            .await?,
            insert: prepare(INSERT_ROWS).await?,
            // The fence: moves the head only from the position read, and
            // divides by zero (aborting the transaction) when it did not.
            move_head: prepare(
                "WITH moved AS (UPDATE nexus.log_head \
                 SET position = $1, hash = $2, recorded_at_micros = $3 \
                 WHERE position = $4 RETURNING 1) \
                 SELECT 1 / (SELECT count(*)::int FROM moved)",
            )
            .await?,
            notify: prepare("SELECT pg_notify($1, $2)").await?,
            since: prepare(
                "SELECT stream, version FROM nexus.events \
                 WHERE position > $1 AND position <= $2 ORDER BY position",
            )
            .await?,
            find: prepare("SELECT position FROM nexus.events WHERE event_id = $1").await?,
            client,
        })
    }
}

/// The writer of one node: orders its appends into groups and commits them.
struct Writer {
    shared: Arc<Shared>,
    address: PgAddress,
    jobs: mpsc::Receiver<Job>,
    session: Option<Session>,
    cache: VersionCache,
}

/// What was committed before the group, as looked up under the lock.
struct Looked {
    /// Event id → (position, record bytes) for the group's ids already stored.
    ids: HashMap<EventId, (u64, Vec<u8>)>,
    versions: HashMap<StreamName, u64>,
}

impl Committed for Looked {
    fn position_of(&self, id: &EventId) -> Result<Option<u64>, LogError> {
        Ok(self.ids.get(id).map(|(position, _)| *position))
    }

    fn identity_at(&self, position: u64) -> Result<EventIdentity, LogError> {
        let (_, bytes) =
            self.ids
                .values()
                .find(|(p, _)| *p == position)
                .ok_or(LogError::Corrupt {
                    position,
                    reason: "an event looked up by id is missing".into(),
                })?;
        StoredRecord { position, bytes }.identity()
    }

    fn version_of(&self, stream: &StreamName) -> Result<u64, LogError> {
        Ok(self.versions.get(stream).copied().unwrap_or(0))
    }
}

impl Writer {
    async fn run(mut self) {
        while let Some(first) = self.jobs.recv().await {
            let jobs = take_group(first, &mut self.jobs);
            self.commit(jobs).await;
        }
    }

    async fn commit(&mut self, jobs: Vec<Job>) {
        let requests: Vec<&AppendRequest> = jobs.iter().map(|j| &j.request).collect();
        let answers = match self.commit_group(&requests).await {
            Ok(answers) => answers,
            Err(e) => {
                if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
                    self.session = None;
                }
                error!(error = %e, "log commit failed; its appends were refused");
                requests.iter().map(|_| Err(clone_error(&e))).collect()
            }
        };
        for (job, answer) in jobs.into_iter().zip(answers) {
            // The caller may have gone away; its events are durable all the same.
            let _ = job.reply.send(answer);
        }
    }

    /// One transaction for the whole group; the answers in request order.
    /// Tried first on what this writer knows (the stream versions it has seen
    /// plus the rows other nodes committed since); again with every lookup when
    /// an event id turns out to be in the log already.
    async fn commit_group(
        &mut self,
        requests: &[&AppendRequest],
    ) -> Result<Vec<Result<AppendOutcome, LogError>>, LogError> {
        match self.try_group(requests, Lookups::Streams).await {
            Err(Attempt::IdsSeen) => {}
            Err(Attempt::Failed(e)) => return Err(e),
            Ok(answers) => return Ok(answers),
        }
        match self.try_group(requests, Lookups::StreamsAndIds).await {
            Ok(answers) => Ok(answers),
            Err(Attempt::Failed(e)) => Err(e),
            Err(Attempt::IdsSeen) => Err(LogError::Corrupt {
                position: 0,
                reason: "an event id is in the log but its lookup did not find it".into(),
            }),
        }
    }

    async fn try_group(
        &mut self,
        requests: &[&AppendRequest],
        lookups: Lookups,
    ) -> Result<Vec<Result<AppendOutcome, LogError>>, Attempt> {
        self.cache.trim();
        let as_of = self.cache.as_of;
        let s = open_session(&mut self.session, &self.address).await?;
        let c = &s.client;
        let ids: Vec<Uuid> = match lookups {
            Lookups::Streams => Vec::new(),
            Lookups::StreamsAndIds => requests
                .iter()
                .flat_map(|r| &r.writes)
                .flat_map(|w| &w.events)
                .map(|e| e.id.0)
                .collect(),
        };
        let mut unknown: Vec<&str> = requests
            .iter()
            .flat_map(|r| &r.writes)
            .filter(|w| !self.cache.versions.contains_key(&w.stream))
            .map(|w| w.stream.as_str())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        // Pipelined: each statement is sent at once and runs after the one
        // before, so the head and the lookups are read under the lock.
        let (as_of_i64, until_i64) = (to_i64(as_of), to_i64(as_of + MAX_CATCH_UP_ROWS));
        let lock_params: [&Param<'_>; 1] = [&WRITER_LOCK_KEY];
        let since_params: [&Param<'_>; 2] = [&as_of_i64, &until_i64];
        let ids_params: [&Param<'_>; 1] = [&ids];
        let streams_params: [&Param<'_>; 1] = [&unknown];
        // All awaited, and the first failure in statement order reported: the
        // later ones only say the transaction was already aborted.
        let looked = tokio::join!(
            c.batch_execute("BEGIN"),
            c.query_one(&s.lock, &lock_params),
            c.query_one(&s.head, &[]),
            c.query(&s.since, &since_params),
            c.query(&s.ids, &ids_params),
            c.query(&s.versions, &streams_params),
        );
        let looked = (|| -> Result<_, tokio_postgres::Error> {
            looked.0?;
            looked.1?;
            Ok((looked.2?, looked.3?, looked.4?, looked.5?))
        })();
        let (head, since_rows, id_rows, version_rows) = match looked {
            Ok(rows) => rows,
            Err(e) => return Err(rollback(c, e).await.into()),
        };
        let head = head_row(&head)?;
        let mut looked = looked_up(&id_rows, &version_rows)?;
        if !self.cache.catch_up(&since_rows, head.position)? {
            // Too far behind to catch up: ask for every stream of the group.
            let all: Vec<&str> = requests
                .iter()
                .flat_map(|r| &r.writes)
                .map(|w| w.stream.as_str())
                .collect();
            let rows = c.query(&s.versions, &[&all]).await;
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => return Err(rollback(c, e).await.into()),
            };
            looked.versions = looked_up(&[], &rows)?.versions;
        }
        self.cache.learn(&looked.versions, head.position);
        looked.versions = self.cache.versions_of(requests)?;
        let now_micros = Utc::now().timestamp_micros().max(head.recorded_at_micros);
        let mut group = Group::after(head.position, head.hash);
        let answers: Vec<_> = requests
            .iter()
            .map(|r| group.decide(&looked, r, now_micros))
            .collect();
        // Without the id lookups, a refusal may hide a retry of an append
        // already in the log (a duplicate answers with its first positions).
        if lookups == Lookups::Streams && answers.iter().any(Result::is_err) {
            let _ = c.batch_execute("ROLLBACK").await;
            return Err(Attempt::IdsSeen);
        }
        if group.is_empty() {
            let _ = c.batch_execute("ROLLBACK").await;
            return Ok(answers);
        }
        let last = group.next_position() - 1;
        match write_group(s, &group, &head, now_micros).await {
            Ok(()) => {}
            Err(WriteError::IdSeen) => return Err(Attempt::IdsSeen),
            Err(WriteError::Log(e)) => return Err(e.into()),
            Err(WriteError::Commit(e)) => {
                let first_id = group.ids[0];
                return Ok(self
                    .resolve_unknown_commit(e, first_id, group.first_position, answers)
                    .await?);
            }
        }
        self.cache.committed(&group);
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        self.shared.saw_head(last);
        Ok(answers)
    }

    /// COMMIT failed: the group may or may not be in. A fresh connection asks
    /// whether its first event is; only a definite answer is given.
    async fn resolve_unknown_commit(
        &mut self,
        e: tokio_postgres::Error,
        first_id: EventId,
        first_position: u64,
        answers: Vec<Result<AppendOutcome, LogError>>,
    ) -> Result<Vec<Result<AppendOutcome, LogError>>, LogError> {
        warn!(error = %describe(&e), "log commit failed; checking whether it landed");
        self.session = None;
        let s = open_session(&mut self.session, &self.address).await?;
        let found = s
            .client
            .query_opt(&s.find, &[&first_id.0])
            .await
            .map_err(db)?;
        match found.map(|row| row.get::<_, i64>(0)) {
            Some(p) if to_u64(p) == Some(first_position) => {
                let last = answers
                    .iter()
                    .filter_map(|a| a.as_ref().ok())
                    .map(AppendOutcome::last_position)
                    .max()
                    .unwrap_or(first_position);
                self.shared.saw_head(last);
                Ok(answers)
            }
            Some(_) => Err(LogError::Corrupt {
                position: first_position,
                reason: "a committed event sits at another position".into(),
            }),
            None => Err(db(e)),
        }
    }
}

/// The writer's session, (re)connected when it is missing or closed.
async fn open_session<'a>(
    session: &'a mut Option<Session>,
    address: &PgAddress,
) -> Result<&'a Session, LogError> {
    if session.as_ref().is_none_or(|s| s.client.is_closed()) {
        *session = Some(Session::open(address).await?);
    }
    Ok(session.as_ref().expect("just opened"))
}

/// Inserts the group's rows and moves the head from where it was read.
async fn write_group(
    s: &Session,
    group: &Group,
    head: &HeadRow,
    now_micros: i64,
) -> Result<(), WriteError> {
    let positions: Vec<i64> = group.entries.iter().map(|e| to_i64(e.2)).collect();
    let streams: Vec<&str> = group.entries.iter().map(|e| e.0.as_str()).collect();
    let versions: Vec<i64> = group.entries.iter().map(|e| to_i64(e.1)).collect();
    let ids: Vec<Uuid> = group.ids.iter().map(|id| id.0).collect();
    let records: Vec<&[u8]> = group.records.iter().map(|r| r.bytes.as_slice()).collect();
    let last = group.next_position() - 1;
    let hash: &[u8] = &group.last_hash;
    let (last_i64, head_i64, last_text) = (to_i64(last), to_i64(head.position), last.to_string());
    let insert: [&Param<'_>; 5] = [&positions, &streams, &versions, &ids, &records];
    let move_head: [&Param<'_>; 4] = [&last_i64, &hash, &now_micros, &head_i64];
    let notify: [&Param<'_>; 2] = [&NOTIFY_CHANNEL, &last_text];
    let c = &s.client;
    // One round trip with the COMMIT. A failed statement aborts the
    // transaction, and the COMMIT then rolls it back: only when all three
    // succeeded can the COMMIT's own failure leave the outcome unknown.
    let written = tokio::join!(
        c.execute(&s.insert, &insert),
        c.query_one(&s.move_head, &move_head),
        c.query_one(&s.notify, &notify),
        c.batch_execute("COMMIT"),
    );
    let statements =
        (|| -> Result<_, tokio_postgres::Error> { Ok((written.0?, written.1?, written.2?)) })();
    let inserted = match statements {
        Ok((inserted, _, _)) => inserted,
        Err(e) => {
            let id_seen = e
                .as_db_error()
                .is_some_and(|d| d.constraint() == Some("events_event_id_key"));
            let fenced = e
                .as_db_error()
                .is_some_and(|d| d.code() == &tokio_postgres::error::SqlState::DIVISION_BY_ZERO);
            // The COMMIT was a rollback; make sure of it if it did not answer.
            if written.3.is_err() {
                let _ = c.batch_execute("ROLLBACK").await;
            }
            return Err(if id_seen {
                WriteError::IdSeen
            } else if fenced {
                WriteError::Log(LogError::Corrupt {
                    position: group.first_position,
                    reason: "the head moved under the writers' lock".into(),
                })
            } else {
                WriteError::Log(db(e))
            });
        }
    };
    written.3.map_err(WriteError::Commit)?;
    // The PRIMARY KEY on positions refuses a row twice; all were inserted.
    debug_assert_eq!(inserted as usize, group.records.len());
    Ok(())
}

/// Why a group's rows were not committed.
enum WriteError {
    /// An event id of the group is in the log already (the unique constraint);
    /// nothing was committed.
    IdSeen,
    /// Refused; nothing was committed.
    Log(LogError),
    /// The COMMIT did not answer: the outcome is unknown.
    Commit(tokio_postgres::Error),
}

/// What a group's transaction looks up besides the head.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookups {
    /// Only the streams this writer has not seen: the common case, where every
    /// event id is new (the unique constraint proves it at insert).
    Streams,
    /// Streams and event ids: after an id was found to be in the log.
    StreamsAndIds,
}

/// How one try at a group ended, when it did not.
enum Attempt {
    /// Try again with the id lookups.
    IdsSeen,
    Failed(LogError),
}

impl From<LogError> for Attempt {
    fn from(e: LogError) -> Self {
        Attempt::Failed(e)
    }
}

/// Most rows other nodes committed that a writer reads to catch its stream
/// versions up; further behind, it asks for the group's streams instead.
const MAX_CATCH_UP_ROWS: u64 = 10_000;
/// Most stream versions a writer keeps; past it, it forgets them all.
const MAX_CACHED_STREAMS: usize = 1_000_000;

/// The stream versions a writer has seen, true as of a head.
#[derive(Default)]
struct VersionCache {
    as_of: u64,
    versions: HashMap<StreamName, u64>,
}

impl VersionCache {
    /// Applies the rows committed after `as_of` (read under the lock); false
    /// when they do not reach `head` (the cache is then emptied).
    fn catch_up(&mut self, since: &[Row], head: u64) -> Result<bool, LogError> {
        for row in since {
            let stream: &str = row.get(0);
            let version = to_u64(row.get(1)).unwrap_or(0);
            self.remember(StreamName::new(stream)?, version);
        }
        let reached = self.as_of + since.len() as u64 >= head;
        if !reached {
            self.versions.clear();
        }
        self.as_of = head;
        Ok(reached)
    }

    /// Versions read from the database at `head`.
    fn learn(&mut self, versions: &HashMap<StreamName, u64>, head: u64) {
        debug_assert_eq!(self.as_of, head);
        for (stream, version) in versions {
            self.remember(stream.clone(), *version);
        }
    }

    fn remember(&mut self, stream: StreamName, version: u64) {
        self.versions.insert(stream, version);
    }

    /// Forgets everything past the limit; only between groups, so that a
    /// group's streams, once looked up, stay known until it is decided.
    fn trim(&mut self) {
        if self.versions.len() > MAX_CACHED_STREAMS {
            self.versions.clear();
        }
    }

    /// The versions of every stream the requests touch (each was known or
    /// looked up under the lock).
    fn versions_of(
        &self,
        requests: &[&AppendRequest],
    ) -> Result<HashMap<StreamName, u64>, LogError> {
        requests
            .iter()
            .flat_map(|r| &r.writes)
            .map(|w| match self.versions.get(&w.stream) {
                Some(version) => Ok((w.stream.clone(), *version)),
                None => Err(LogError::Corrupt {
                    position: self.as_of,
                    reason: format!("the version of {} was not looked up", w.stream),
                }),
            })
            .collect()
    }

    fn committed(&mut self, group: &Group) {
        for (stream, version, _) in &group.entries {
            self.remember(stream.clone(), *version);
        }
        self.as_of = group.next_position() - 1;
    }
}

/// Rolls back after a failed statement; the error to report.
async fn rollback(c: &Client, e: impl Into<LogError>) -> LogError {
    let _ = c.batch_execute("ROLLBACK").await;
    e.into()
}

impl From<tokio_postgres::Error> for LogError {
    fn from(e: tokio_postgres::Error) -> Self {
        db(e)
    }
}

fn looked_up(id_rows: &[Row], version_rows: &[Row]) -> Result<Looked, LogError> {
    let mut ids = HashMap::with_capacity(id_rows.len());
    for row in id_rows {
        let record = stored(row)?;
        let (_, _, id) = record.index_entry()?;
        ids.insert(id, (record.position, record.bytes.to_vec()));
    }
    let mut versions = HashMap::with_capacity(version_rows.len());
    for row in version_rows {
        let stream: &str = row.get(0);
        let version: Option<i64> = row.get(1);
        let stream = StreamName::new(stream)?;
        versions.insert(stream, version.and_then(to_u64).unwrap_or(0));
    }
    Ok(Looked { ids, versions })
}

/// The same refusal for every append of a failed group.
fn clone_error(e: &LogError) -> LogError {
    match e {
        LogError::Database(m) => LogError::Database(m.clone()),
        LogError::Corrupt { position, reason } => LogError::Corrupt {
            position: *position,
            reason: reason.clone(),
        },
        other => LogError::Database(other.to_string()),
    }
}

/// What [`import`] copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    pub events: u64,
    pub head_hash: Hash32,
}

/// Copies every record of `source` into an empty PostgreSQL log, as the
/// schema's owner, in one transaction: the same bytes at the same positions,
/// so ids, positions and hashes are unchanged (each record is re-encoded and
/// checked against its stored hash and its predecessor's). Refuses a database
/// whose log is not empty. `progress` hears the position copied so far.
pub async fn import(
    owner: &mut Client,
    source: &impl EventStore,
    mut progress: impl FnMut(u64),
) -> Result<Imported, LogError> {
    check_schema(owner).await?;
    let tx = owner.transaction().await?;
    tx.execute("LOCK TABLE nexus.log_head IN EXCLUSIVE MODE", &[])
        .await?;
    let head = read_head(&tx).await?;
    let rows: i64 = tx
        .query_one("SELECT count(*) FROM nexus.events", &[])
        .await?
        .get(0);
    if head.position != 0 || rows != 0 {
        return Err(PgError::NotEmpty(format!(
            "its log holds {rows} events (head {}): a migration copies into an empty one",
            head.position
        ))
        .into());
    }
    let insert = tx.prepare(INSERT_ROWS).await?;
    let source_head = source.head();
    let (mut next, mut prev, mut last_micros) = (1u64, GENESIS_HASH, 0i64);
    while next <= source_head {
        let events = source.read_all(next, MAX_READ_COUNT).await?;
        if events.is_empty() {
            return Err(LogError::Corrupt {
                position: next,
                reason: "the source log ends before its head".into(),
            });
        }
        let mut rows = ImportRows::default();
        for event in &events {
            let record = super::record::encode_event(event);
            if event.position != next || event.prev_hash != prev || record.hash != event.hash {
                return Err(LogError::Corrupt {
                    position: event.position,
                    reason: "the source record does not verify; run `nexus verify`".into(),
                });
            }
            rows.push(event, record.bytes);
            (next, prev) = (next + 1, event.hash);
            last_micros = event.recorded_at.timestamp_micros();
        }
        let params: [&Param<'_>; 5] = [
            &rows.positions,
            &rows.streams,
            &rows.versions,
            &rows.ids,
            &rows.records,
        ];
        tx.execute(&insert, &params).await?;
        progress(next - 1);
    }
    let hash: &[u8] = &prev;
    tx.execute(
        "UPDATE nexus.log_head SET position = $1, hash = $2, recorded_at_micros = $3",
        &[&to_i64(next - 1), &hash, &last_micros],
    )
    .await?;
    tx.commit().await?;
    Ok(Imported {
        events: next - 1,
        head_hash: prev,
    })
}

/// One batch of rows to insert, as the arrays [`INSERT_ROWS`] takes.
#[derive(Default)]
struct ImportRows {
    positions: Vec<i64>,
    streams: Vec<String>,
    versions: Vec<i64>,
    ids: Vec<Uuid>,
    records: Vec<Vec<u8>>,
}

impl ImportRows {
    fn push(&mut self, event: &RecordedEvent, record: Vec<u8>) {
        self.positions.push(to_i64(event.position));
        self.streams.push(event.stream.as_str().to_owned());
        self.versions.push(to_i64(event.version));
        self.ids.push(event.id.0);
        self.records.push(record);
    }
}
