//! A commit group under construction, and the one decision every backend makes
//! for each append in it: idempotency by event id, expected versions, positions,
//! versions and the hash chain. A backend supplies what is already committed
//! ([`Committed`]) and writes the group however it stores records.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::record::{encode_record, EncodedRecord, EventIdentity, Hash32, Header};
use super::{AppendOutcome, AppendRequest, Appended, EventId, LogError, StreamName};

/// Appends waiting for a backend's writer; senders wait (asynchronously)
/// beyond this.
pub(crate) const MAX_QUEUED_APPENDS: usize = 16 * 1024;
/// A writer stops adding appends to a group past these.
pub(crate) const MAX_GROUP_EVENTS: usize = 8 * 1024;
pub(crate) const MAX_GROUP_BYTES: usize = 1024 * 1024;

/// An append waiting for a backend's writer, and where its answer goes.
pub(crate) struct Job {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<AppendOutcome, LogError>>,
}

/// Queues a validated append for the writer and waits for its answer.
pub(crate) async fn submit(
    jobs: Option<&mpsc::Sender<Job>>,
    request: AppendRequest,
) -> Result<AppendOutcome, LogError> {
    let jobs = jobs.ok_or(LogError::Closed)?;
    let (reply, answer) = oneshot::channel();
    jobs.send(Job { request, reply })
        .await
        .map_err(|_| LogError::Closed)?;
    answer.await.map_err(|_| LogError::Closed)?
}

/// The first job and whatever else is queued, up to the group limits (the
/// last append taken may overshoot them by itself).
pub(crate) fn take_group(first: Job, jobs: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut events = first.request.event_count();
    let mut bytes = first.request.body_bytes();
    let mut group = vec![first];
    while events < MAX_GROUP_EVENTS && bytes < MAX_GROUP_BYTES {
        match jobs.try_recv() {
            Ok(job) => {
                events += job.request.event_count();
                bytes += job.request.body_bytes();
                group.push(job);
            }
            Err(_) => break,
        }
    }
    group
}

/// What the log held before this group: the backend's view at decision time.
pub(crate) trait Committed {
    /// The position of an event id already in the log.
    fn position_of(&self, id: &EventId) -> Result<Option<u64>, LogError>;
    /// What makes the event at `position` the same event if appended again.
    fn identity_at(&self, position: u64) -> Result<EventIdentity, LogError>;
    /// A stream's version (0 for none).
    fn version_of(&self, stream: &StreamName) -> Result<u64, LogError>;
}

/// One commit group: records from `first_position` on, chained from the hash of
/// the record before it.
pub(crate) struct Group {
    pub first_position: u64,
    pub last_hash: Hash32,
    pub records: Vec<EncodedRecord>,
    pub identities: Vec<EventIdentity>,
    /// (stream, version, position) of each record.
    pub entries: Vec<(StreamName, u64, u64)>,
    pub ids: Vec<EventId>,
    versions: HashMap<StreamName, u64>,
    id_positions: HashMap<EventId, u64>,
}

impl Group {
    /// An empty group after a log whose head is `head` with hash `head_hash`.
    pub fn after(head: u64, head_hash: Hash32) -> Self {
        Self {
            first_position: head + 1,
            last_hash: head_hash,
            records: Vec::new(),
            identities: Vec::new(),
            entries: Vec::new(),
            ids: Vec::new(),
            versions: HashMap::new(),
            id_positions: HashMap::new(),
        }
    }

    pub fn next_position(&self) -> u64 {
        self.first_position + self.records.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Decides one append against the log plus the group so far; on success its
    /// records are in the group, on failure the group is unchanged.
    pub fn decide(
        &mut self,
        log: &impl Committed,
        request: &AppendRequest,
        now_micros: i64,
    ) -> Result<AppendOutcome, LogError> {
        if let Some(outcome) = self.duplicate(log, request)? {
            return Ok(outcome);
        }
        let mut currents = Vec::with_capacity(request.writes.len());
        for write in &request.writes {
            let current = match self.versions.get(&write.stream) {
                Some(version) => *version,
                None => log.version_of(&write.stream)?,
            };
            if !write.expected.admits(current) {
                return Err(LogError::WrongExpectedVersion {
                    stream: write.stream.clone(),
                    expected: write.expected,
                    found: current,
                });
            }
            currents.push(current);
        }

        let mut appended = Vec::with_capacity(request.event_count());
        for (write, current) in request.writes.iter().zip(currents) {
            for (k, event) in write.events.iter().enumerate() {
                let position = self.next_position();
                let version = current + k as u64 + 1;
                let header = Header {
                    position,
                    stream: write.stream.as_str(),
                    version,
                    event_id: *event.id.0.as_bytes(),
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    recorded_at_micros: now_micros,
                    correlation_id: request.correlation_id.map(|u| *u.as_bytes()),
                    causation_id: request.causation_id.map(|u| *u.as_bytes()),
                };
                let record = encode_record(&header, &event.payload, &event.pii, &self.last_hash);
                self.identities.push(EventIdentity {
                    stream: header.stream.to_owned(),
                    version,
                    event_type: header.event_type.to_owned(),
                    schema_version: header.schema_version,
                    payload_digest: record.payload_digest,
                });
                self.last_hash = record.hash;
                self.records.push(record);
                self.versions.insert(write.stream.clone(), version);
                self.id_positions.insert(event.id, position);
                self.entries.push((write.stream.clone(), version, position));
                self.ids.push(event.id);
                appended.push(Appended { position, version });
            }
        }
        Ok(AppendOutcome {
            events: appended,
            duplicate: false,
        })
    }

    /// `Some` when every event of the request is already in the log (or this
    /// group) with the same body: the original positions. An id reused for
    /// another body is an error, and so is a retry of only part of an append.
    fn duplicate(
        &self,
        log: &impl Committed,
        request: &AppendRequest,
    ) -> Result<Option<AppendOutcome>, LogError> {
        let mut found = Vec::new();
        let mut missing = None;
        for write in &request.writes {
            for event in &write.events {
                let position = match self.id_positions.get(&event.id) {
                    Some(position) => Some(*position),
                    None => log.position_of(&event.id)?,
                };
                match position {
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
            let identity = if position >= self.first_position {
                self.identities[(position - self.first_position) as usize].clone()
            } else {
                log.identity_at(position)?
            };
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
}
