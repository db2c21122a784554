//! The on-disk record, its hash chain, and the commit-group encoding.
//!
//! A record stores its header as bytes (the exact bytes the hash covers), the
//! digests of its payload and PII section, the chain hashes, and the body. A future
//! pruning step drops the body and keeps everything else: the record keeps its
//! position and hash, and the chain still verifies end to end.

use chrono::{DateTime, TimeZone, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{EventId, LogError, StreamName};
use crate::vault::SealedPii;

/// A SHA-256 digest.
pub type Hash32 = [u8; 32];

/// The hash before the first record.
pub(crate) const GENESIS_HASH: Hash32 = [0; 32];
/// Separates this chain's hashes from any other use of SHA-256.
const CHAIN_DOMAIN: &[u8] = b"nexus-log-v1";
/// First byte of every commit-group value.
const GROUP_FORMAT_V1: u8 = 1;
const NO_PII_DIGEST: Hash32 = [0; 32];

/// An event as the log hands it out: the envelope and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: u64,
    pub stream: StreamName,
    pub version: u64,
    pub id: EventId,
    pub event_type: String,
    pub schema_version: u16,
    pub recorded_at: DateTime<Utc>,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// bincode of the domain event.
    pub payload: Vec<u8>,
    pub pii: Option<SealedPii>,
    pub prev_hash: Hash32,
    pub hash: Hash32,
}

impl RecordedEvent {
    /// Decodes the payload, refusing schema versions newer than this build knows.
    pub fn decode<T: DeserializeOwned>(
        &self,
        expected_type: &'static str,
        supported_schema: u16,
    ) -> Result<T, LogError> {
        if self.event_type != expected_type {
            return Err(LogError::WrongEventType {
                position: self.position,
                expected: expected_type,
                found: self.event_type.clone(),
            });
        }
        if self.schema_version == 0 || self.schema_version > supported_schema {
            return Err(LogError::UnknownSchemaVersion {
                event_type: self.event_type.clone(),
                found: self.schema_version,
                supported: supported_schema,
            });
        }
        bincode::deserialize(&self.payload).map_err(|e| LogError::Decode {
            position: self.position,
            reason: e.to_string(),
        })
    }
}

/// The hashed header. Field order is part of the format; reads borrow from the
/// stored bytes.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header<'a> {
    pub position: u64,
    #[serde(borrow)]
    pub stream: &'a str,
    pub version: u64,
    pub event_id: [u8; 16],
    #[serde(borrow)]
    pub event_type: &'a str,
    pub schema_version: u16,
    pub recorded_at_micros: i64,
    pub correlation_id: Option<[u8; 16]>,
    pub causation_id: Option<[u8; 16]>,
}

#[derive(Serialize, Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    payload: &'a [u8],
    pii: Option<SealedPii>,
}

#[derive(Serialize, Deserialize)]
struct StoredRecord<'a> {
    #[serde(borrow)]
    header: &'a [u8],
    payload_digest: Hash32,
    pii_digest: Hash32,
    prev_hash: Hash32,
    hash: Hash32,
    /// `None` once pruned.
    #[serde(borrow)]
    body: Option<Body<'a>>,
}

pub(crate) fn sha256(bytes: &[u8]) -> Hash32 {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

fn chain_hash(
    prev: &Hash32,
    header: &[u8],
    payload_digest: &Hash32,
    pii_digest: &Hash32,
) -> Hash32 {
    let mut h = Sha256::new();
    h.update(CHAIN_DOMAIN);
    h.update(prev);
    h.update((header.len() as u32).to_be_bytes());
    h.update(header);
    h.update(payload_digest);
    h.update(pii_digest);
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    out
}

fn pii_digest(pii: &Option<SealedPii>) -> Result<Hash32, LogError> {
    match pii {
        None => Ok(NO_PII_DIGEST),
        Some(p) => Ok(sha256(&bincode::serialize(p).map_err(encode_err)?)),
    }
}

fn encode_err(e: bincode::Error) -> LogError {
    LogError::Io(std::io::Error::other(format!("encoding a record: {e}")))
}

/// A record ready to be written, with what the writer needs to know about it.
pub(crate) struct EncodedRecord {
    pub bytes: Vec<u8>,
    pub hash: Hash32,
    pub payload_digest: Hash32,
}

/// Builds and hashes one record.
pub(crate) fn encode_record(
    header: &Header,
    payload: &[u8],
    pii: &Option<SealedPii>,
    prev_hash: &Hash32,
) -> Result<EncodedRecord, LogError> {
    let header_bytes = bincode::serialize(header).map_err(encode_err)?;
    let payload_digest = sha256(payload);
    let pii_digest = pii_digest(pii)?;
    let hash = chain_hash(prev_hash, &header_bytes, &payload_digest, &pii_digest);
    let stored = StoredRecord {
        header: &header_bytes,
        payload_digest,
        pii_digest,
        prev_hash: *prev_hash,
        hash,
        body: Some(Body {
            payload,
            pii: pii.clone(),
        }),
    };
    Ok(EncodedRecord {
        bytes: bincode::serialize(&stored).map_err(encode_err)?,
        hash,
        payload_digest,
    })
}

/// Packs encoded records into one commit-group value:
/// `[format u8][count u32][end offset u32 × count][records…]`, big-endian.
pub(crate) fn encode_group(records: &[EncodedRecord]) -> Vec<u8> {
    let body_len: usize = records.iter().map(|r| r.bytes.len()).sum();
    let mut out = Vec::with_capacity(5 + 4 * records.len() + body_len);
    out.push(GROUP_FORMAT_V1);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    let mut end = 0u32;
    for r in records {
        end += r.bytes.len() as u32;
        out.extend_from_slice(&end.to_be_bytes());
    }
    for r in records {
        out.extend_from_slice(&r.bytes);
    }
    out
}

/// A commit-group value, read lazily: records decode one at a time.
pub(crate) struct GroupView<'a> {
    first_position: u64,
    count: usize,
    offsets: &'a [u8],
    body: &'a [u8],
}

impl<'a> GroupView<'a> {
    pub(crate) fn parse(first_position: u64, bytes: &'a [u8]) -> Result<Self, LogError> {
        let corrupt = |reason: &str| LogError::Corrupt {
            position: first_position,
            reason: format!("commit group: {reason}"),
        };
        if bytes.len() < 5 || bytes[0] != GROUP_FORMAT_V1 {
            return Err(corrupt("unknown format or truncated"));
        }
        let count = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
        let table_end = 5usize
            .checked_add(count.checked_mul(4).ok_or_else(|| corrupt("count"))?)
            .ok_or_else(|| corrupt("count"))?;
        if count == 0 || bytes.len() < table_end {
            return Err(corrupt("offset table"));
        }
        let view = Self {
            first_position,
            count,
            offsets: &bytes[5..table_end],
            body: &bytes[table_end..],
        };
        if view.end_offset(count - 1) != view.body.len() {
            return Err(corrupt("length does not match its offsets"));
        }
        Ok(view)
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    pub(crate) fn last_position(&self) -> u64 {
        self.first_position + self.count as u64 - 1
    }

    fn end_offset(&self, i: usize) -> usize {
        u32::from_be_bytes(self.offsets[i * 4..i * 4 + 4].try_into().expect("4 bytes")) as usize
    }

    fn raw(&self, i: usize) -> Result<&'a [u8], LogError> {
        let start = if i == 0 { 0 } else { self.end_offset(i - 1) };
        let end = self.end_offset(i);
        self.body.get(start..end).ok_or_else(|| LogError::Corrupt {
            position: self.first_position + i as u64,
            reason: "record offsets out of range".into(),
        })
    }

    /// Decodes record `i` into an event, checking that it sits where it says.
    pub(crate) fn event(&self, i: usize) -> Result<RecordedEvent, LogError> {
        let position = self.first_position + i as u64;
        let (stored, header) = self.decode(i)?;
        let body = stored.body.ok_or_else(|| LogError::Corrupt {
            position,
            reason: "record was pruned".into(),
        })?;
        into_event(position, header, body, stored.prev_hash, stored.hash)
    }

    /// The stream, type, schema and payload digest of record `i`: what makes two
    /// appends of one event id the same event.
    pub(crate) fn identity(&self, i: usize) -> Result<EventIdentity, LogError> {
        let (stored, header) = self.decode(i)?;
        Ok(EventIdentity {
            stream: header.stream.to_owned(),
            version: header.version,
            event_type: header.event_type.to_owned(),
            schema_version: header.schema_version,
            payload_digest: stored.payload_digest,
        })
    }

    /// Recomputes record `i`'s hash from its parts; `Err(reason)` if it is broken.
    pub(crate) fn verify(&self, i: usize, prev: &Hash32) -> Result<Hash32, String> {
        let position = self.first_position + i as u64;
        let (stored, header) = self.decode(i).map_err(|e| e.to_string())?;
        if stored.prev_hash != *prev {
            return Err("previous hash does not match the record before".into());
        }
        if header.position != position {
            return Err(format!("header says position {}", header.position));
        }
        if let Some(body) = &stored.body {
            if sha256(body.payload) != stored.payload_digest {
                return Err("payload does not match its digest".into());
            }
            let pii = pii_digest(&body.pii).map_err(|e| e.to_string())?;
            if pii != stored.pii_digest {
                return Err("PII section does not match its digest".into());
            }
        }
        let hash = chain_hash(
            prev,
            stored.header,
            &stored.payload_digest,
            &stored.pii_digest,
        );
        if hash != stored.hash {
            return Err("hash does not match the record".into());
        }
        Ok(hash)
    }

    /// The stream, version and id of record `i`: what the in-memory index needs.
    pub(crate) fn index_entry(&self, i: usize) -> Result<(StreamName, u64, EventId), LogError> {
        let (_, header) = self.decode(i)?;
        Ok((
            StreamName::trusted(header.stream),
            header.version,
            EventId(Uuid::from_bytes(header.event_id)),
        ))
    }

    fn decode(&self, i: usize) -> Result<(StoredRecord<'a>, Header<'a>), LogError> {
        let position = self.first_position + i as u64;
        let corrupt = |what: &str, e: bincode::Error| LogError::Corrupt {
            position,
            reason: format!("{what}: {e}"),
        };
        let stored: StoredRecord =
            bincode::deserialize(self.raw(i)?).map_err(|e| corrupt("record", e))?;
        let header: Header =
            bincode::deserialize(stored.header).map_err(|e| corrupt("header", e))?;
        if header.position != position {
            return Err(LogError::Corrupt {
                position,
                reason: format!("header says position {}", header.position),
            });
        }
        Ok((stored, header))
    }
}

/// What must match when an event id is appended again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventIdentity {
    pub stream: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: u16,
    pub payload_digest: Hash32,
}

fn into_event(
    position: u64,
    header: Header<'_>,
    body: Body<'_>,
    prev_hash: Hash32,
    hash: Hash32,
) -> Result<RecordedEvent, LogError> {
    let recorded_at = Utc
        .timestamp_micros(header.recorded_at_micros)
        .single()
        .ok_or_else(|| LogError::Corrupt {
            position,
            reason: "recorded-at out of range".into(),
        })?;
    Ok(RecordedEvent {
        position,
        // Checked when it was appended; the hash chain covers it since.
        stream: StreamName::trusted(header.stream),
        version: header.version,
        id: EventId(Uuid::from_bytes(header.event_id)),
        event_type: header.event_type.to_owned(),
        schema_version: header.schema_version,
        recorded_at,
        correlation_id: header.correlation_id.map(Uuid::from_bytes),
        causation_id: header.causation_id.map(Uuid::from_bytes),
        payload: body.payload.to_vec(),
        pii: body.pii,
        prev_hash,
        hash,
    })
}
