//! The on-disk record, its hash chain, and the commit-group encoding.
//!
//! The format is written by hand, not by a serializer: these are the bytes the
//! hash chain covers, so they must never change with a library version. A record
//! stores its header as bytes (exactly what the hash covers), the digests of its
//! payload and PII section, the chain hashes, and the body. A future
//! pruning step drops the body and keeps everything else: the record keeps its
//! position and hash, and the chain still verifies end to end.

use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    EventId, LogError, StreamName, MAX_EVENT_TYPE_BYTES, MAX_PAYLOAD_BYTES, MAX_SEALED_PII_BYTES,
    MAX_STREAM_NAME_BYTES,
};
use crate::vault::{SealedPii, SubjectId, MAX_SUBJECT_BYTES, NONCE_BYTES};

/// A SHA-256 digest.
pub type Hash32 = [u8; 32];

/// The hash before the first record.
pub(crate) const GENESIS_HASH: Hash32 = [0; 32];
/// Separates this chain's hashes from any other use of SHA-256.
const CHAIN_DOMAIN: &[u8] = b"nexus-log-v1";
/// First byte of every commit-group value.
const GROUP_FORMAT_V1: u8 = 1;
const NO_PII_DIGEST: Hash32 = [0; 32];

/// The longest header (see [`Header`]): both ids present, names at their limits.
const MAX_HEADER_BYTES: usize =
    8 + 8 + 16 + 2 + 8 + 1 + 2 * 16 + 1 + MAX_STREAM_NAME_BYTES + 1 + MAX_EVENT_TYPE_BYTES;
/// The most bytes a record takes beyond its payload and ciphertext (see
/// [`encode_record`] and [`encode_pii`]).
pub(crate) const MAX_RECORD_FRAME_BYTES: usize =
    2 + MAX_HEADER_BYTES + 4 * 32 + 1 + 4 + 1 + 1 + MAX_SUBJECT_BYTES + NONCE_BYTES + 4;

// Lengths in the format are u8 (names, subject), u16 (header) and u32 (payload,
// ciphertext): each limit fits its length field.
const _: () = assert!(MAX_STREAM_NAME_BYTES <= u8::MAX as usize);
const _: () = assert!(MAX_EVENT_TYPE_BYTES <= u8::MAX as usize);
const _: () = assert!(MAX_SUBJECT_BYTES <= u8::MAX as usize);
const _: () = assert!(MAX_HEADER_BYTES <= u16::MAX as usize);
const _: () = assert!(MAX_PAYLOAD_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_SEALED_PII_BYTES <= u32::MAX as usize);

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

/// The hashed header. Its byte layout is part of the chain's format (v1), all
/// integers big-endian:
/// `position u64 | version u64 | event id 16 | schema u16 | recorded-at µs i64 |
///  flags u8 (1 = correlation, 2 = causation) | [correlation 16] | [causation 16] |
///  stream len u8 | stream | type len u8 | type`.
pub(crate) struct Header<'a> {
    pub position: u64,
    pub stream: &'a str,
    pub version: u64,
    pub event_id: [u8; 16],
    pub event_type: &'a str,
    pub schema_version: u16,
    pub recorded_at_micros: i64,
    pub correlation_id: Option<[u8; 16]>,
    pub causation_id: Option<[u8; 16]>,
}

const HAS_CORRELATION: u8 = 1;
const HAS_CAUSATION: u8 = 2;

impl<'a> Header<'a> {
    fn encode(&self, out: &mut Vec<u8>) {
        // A longer name would not fit its length byte and corrupt the chain.
        assert!(self.stream.len() <= MAX_STREAM_NAME_BYTES);
        assert!(self.event_type.len() <= MAX_EVENT_TYPE_BYTES);
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.event_id);
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.recorded_at_micros.to_be_bytes());
        let flags = self.correlation_id.map_or(0, |_| HAS_CORRELATION)
            | self.causation_id.map_or(0, |_| HAS_CAUSATION);
        out.push(flags);
        for id in [self.correlation_id, self.causation_id]
            .into_iter()
            .flatten()
        {
            out.extend_from_slice(&id);
        }
        out.push(self.stream.len() as u8);
        out.extend_from_slice(self.stream.as_bytes());
        out.push(self.event_type.len() as u8);
        out.extend_from_slice(self.event_type.as_bytes());
    }

    fn decode(bytes: &'a [u8]) -> Result<Self, &'static str> {
        let mut c = Cursor(bytes);
        let position = c.u64()?;
        let version = c.u64()?;
        let event_id = c.array::<16>()?;
        let schema_version = c.u16()?;
        let recorded_at_micros = c.u64()? as i64;
        let flags = c.u8()?;
        if flags & !(HAS_CORRELATION | HAS_CAUSATION) != 0 {
            return Err("unknown header flags");
        }
        let correlation_id = (flags & HAS_CORRELATION != 0)
            .then(|| c.array::<16>())
            .transpose()?;
        let causation_id = (flags & HAS_CAUSATION != 0)
            .then(|| c.array::<16>())
            .transpose()?;
        let stream_len = c.u8()? as usize;
        let stream = c.str(stream_len)?;
        let type_len = c.u8()? as usize;
        let event_type = c.str(type_len)?;
        if !c.0.is_empty() {
            return Err("trailing bytes after the header");
        }
        Ok(Self {
            position,
            stream,
            version,
            event_id,
            event_type,
            schema_version,
            recorded_at_micros,
            correlation_id,
            causation_id,
        })
    }
}

/// Reads big-endian fields off a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn str(&mut self, len: usize) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.take(len)?).map_err(|_| "a name is not UTF-8")
    }
}

/// A stored record, borrowed from the group value. Layout (v1):
/// `header len u16 | header | payload digest 32 | PII digest 32 | previous hash 32 |
///  hash 32 | body tag u8 (0 = pruned, 1 = present) | [payload len u32 | payload |
///  PII section (see `encode_pii`)]`.
struct RecordView<'a> {
    header_bytes: &'a [u8],
    payload_digest: Hash32,
    pii_digest: Hash32,
    prev_hash: Hash32,
    hash: Hash32,
    /// The payload and the encoded PII section; `None` once pruned.
    body: Option<(&'a [u8], &'a [u8])>,
}

impl<'a> RecordView<'a> {
    fn decode(bytes: &'a [u8]) -> Result<Self, &'static str> {
        let mut c = Cursor(bytes);
        let header_len = c.u16()? as usize;
        let header_bytes = c.take(header_len)?;
        let payload_digest = c.array()?;
        let pii_digest = c.array()?;
        let prev_hash = c.array()?;
        let hash = c.array()?;
        let body = match c.u8()? {
            0 => None,
            1 => {
                let payload_len = c.u32()? as usize;
                let payload = c.take(payload_len)?;
                Some((payload, c.0))
            }
            _ => return Err("unknown body tag"),
        };
        Ok(Self {
            header_bytes,
            payload_digest,
            pii_digest,
            prev_hash,
            hash,
            body,
        })
    }
}

/// The PII section: `0` for none, or `1 | subject len u8 | subject | nonce 24 |
/// ciphertext len u32 | ciphertext`.
fn encode_pii(pii: &Option<SealedPii>, out: &mut Vec<u8>) {
    match pii {
        None => out.push(0),
        Some(p) => {
            let subject = p.subject.as_str().as_bytes();
            assert!(subject.len() <= MAX_SUBJECT_BYTES);
            out.push(1);
            out.push(subject.len() as u8);
            out.extend_from_slice(subject);
            out.extend_from_slice(&p.nonce);
            out.extend_from_slice(&(p.ciphertext.len() as u32).to_be_bytes());
            out.extend_from_slice(&p.ciphertext);
        }
    }
}

fn decode_pii(bytes: &[u8]) -> Result<Option<SealedPii>, &'static str> {
    let mut c = Cursor(bytes);
    let pii = match c.u8()? {
        0 => None,
        1 => {
            let subject_len = c.u8()? as usize;
            let subject = c.str(subject_len)?;
            let subject = SubjectId::new(subject).map_err(|_| "invalid PII subject")?;
            let nonce = c.array::<24>()?;
            let len = c.u32()? as usize;
            let ciphertext = c.take(len)?.to_vec();
            Some(SealedPii {
                subject,
                nonce,
                ciphertext,
            })
        }
        _ => return Err("unknown PII tag"),
    };
    if !c.0.is_empty() {
        return Err("trailing bytes after the PII section");
    }
    Ok(pii)
}

fn pii_digest(pii_section: &[u8]) -> Hash32 {
    if pii_section == [0] {
        NO_PII_DIGEST
    } else {
        sha256(pii_section)
    }
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

/// A record ready to be written, with what the writer needs to know about it.
pub(crate) struct EncodedRecord {
    pub bytes: Vec<u8>,
    pub hash: Hash32,
    pub payload_digest: Hash32,
}

/// Builds and hashes one record.
pub(crate) fn encode_record(
    header: &Header<'_>,
    payload: &[u8],
    pii: &Option<SealedPii>,
    prev_hash: &Hash32,
) -> EncodedRecord {
    let mut header_bytes = Vec::with_capacity(64 + header.stream.len() + header.event_type.len());
    header.encode(&mut header_bytes);
    let mut pii_section = Vec::new();
    encode_pii(pii, &mut pii_section);
    let payload_digest = sha256(payload);
    let pii_digest = pii_digest(&pii_section);
    let hash = chain_hash(prev_hash, &header_bytes, &payload_digest, &pii_digest);

    let mut bytes =
        Vec::with_capacity(2 + header_bytes.len() + 4 * 32 + 5 + payload.len() + pii_section.len());
    bytes.extend_from_slice(&(header_bytes.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&header_bytes);
    for digest in [&payload_digest, &pii_digest, prev_hash, &hash] {
        bytes.extend_from_slice(digest);
    }
    bytes.push(1);
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&pii_section);
    EncodedRecord {
        bytes,
        hash,
        payload_digest,
    }
}

/// The stored bytes of an event read back: the same bytes, hence the same
/// hash, as when it was appended (what copies a log to another backend).
pub(crate) fn encode_event(event: &RecordedEvent) -> EncodedRecord {
    let header = Header {
        position: event.position,
        stream: event.stream.as_str(),
        version: event.version,
        event_id: *event.id.0.as_bytes(),
        event_type: &event.event_type,
        schema_version: event.schema_version,
        recorded_at_micros: event.recorded_at.timestamp_micros(),
        correlation_id: event.correlation_id.map(|u| *u.as_bytes()),
        causation_id: event.causation_id.map(|u| *u.as_bytes()),
    };
    encode_record(&header, &event.payload, &event.pii, &event.prev_hash)
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
        self.record(i)?.event()
    }

    /// The stream, type, schema and payload digest of record `i`.
    pub(crate) fn identity(&self, i: usize) -> Result<EventIdentity, LogError> {
        self.record(i)?.identity()
    }

    /// The stream, version and id of record `i`: what the in-memory index needs.
    pub(crate) fn index_entry(&self, i: usize) -> Result<(StreamName, u64, EventId), LogError> {
        self.record(i)?.index_entry()
    }

    /// The hash stored with record `i`.
    pub(crate) fn hash(&self, i: usize) -> Result<Hash32, LogError> {
        self.record(i)?.hash()
    }

    /// The time of record `i`, in microseconds since the epoch.
    pub(crate) fn recorded_at_micros(&self, i: usize) -> Result<i64, LogError> {
        self.record(i)?.recorded_at_micros()
    }

    /// Recomputes record `i`'s hash from its parts; `Err(reason)` if it is broken.
    pub(crate) fn verify(&self, i: usize, prev: &Hash32) -> Result<Hash32, String> {
        self.record(i).map_err(|e| e.to_string())?.verify(prev)
    }

    fn record(&self, i: usize) -> Result<StoredRecord<'a>, LogError> {
        Ok(StoredRecord {
            position: self.first_position + i as u64,
            bytes: self.raw(i)?,
        })
    }
}

/// One record's bytes (as [`encode_record`] made them) and the position it is
/// stored at: a group's record, or a row of a backend that keeps one per record.
#[derive(Clone, Copy)]
pub(crate) struct StoredRecord<'a> {
    pub position: u64,
    pub bytes: &'a [u8],
}

impl<'a> StoredRecord<'a> {
    /// Decodes the record into an event, checking that it sits where it says.
    pub(crate) fn event(&self) -> Result<RecordedEvent, LogError> {
        let position = self.position;
        let (record, header) = self.decode()?;
        let corrupt = |reason: &str| LogError::Corrupt {
            position,
            reason: reason.into(),
        };
        let (payload, pii_section) = record.body.ok_or_else(|| corrupt("record was pruned"))?;
        let pii = decode_pii(pii_section).map_err(corrupt)?;
        let recorded_at = Utc
            .timestamp_micros(header.recorded_at_micros)
            .single()
            .ok_or_else(|| corrupt("recorded-at out of range"))?;
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
            payload: payload.to_vec(),
            pii,
            prev_hash: record.prev_hash,
            hash: record.hash,
        })
    }

    /// The stream, type, schema and payload digest: what makes two appends of one
    /// event id the same event.
    pub(crate) fn identity(&self) -> Result<EventIdentity, LogError> {
        let (record, header) = self.decode()?;
        Ok(EventIdentity {
            stream: header.stream.to_owned(),
            version: header.version,
            event_type: header.event_type.to_owned(),
            schema_version: header.schema_version,
            payload_digest: record.payload_digest,
        })
    }

    /// The stream, version and id.
    pub(crate) fn index_entry(&self) -> Result<(StreamName, u64, EventId), LogError> {
        let (_, header) = self.decode()?;
        Ok((
            StreamName::trusted(header.stream),
            header.version,
            EventId(Uuid::from_bytes(header.event_id)),
        ))
    }

    /// The hash stored with the record.
    pub(crate) fn hash(&self) -> Result<Hash32, LogError> {
        Ok(self.decode()?.0.hash)
    }

    /// The record's time, in microseconds since the epoch.
    pub(crate) fn recorded_at_micros(&self) -> Result<i64, LogError> {
        Ok(self.decode()?.1.recorded_at_micros)
    }

    /// Recomputes the hash from the record's parts; `Err(reason)` if it is broken.
    pub(crate) fn verify(&self, prev: &Hash32) -> Result<Hash32, String> {
        let (record, _) = self.decode().map_err(|e| e.to_string())?;
        if record.prev_hash != *prev {
            return Err("previous hash does not match the record before".into());
        }
        if let Some((payload, pii_section)) = record.body {
            if sha256(payload) != record.payload_digest {
                return Err("payload does not match its digest".into());
            }
            decode_pii(pii_section).map_err(|e| format!("PII section: {e}"))?;
            if pii_digest(pii_section) != record.pii_digest {
                return Err("PII section does not match its digest".into());
            }
        }
        let hash = chain_hash(
            prev,
            record.header_bytes,
            &record.payload_digest,
            &record.pii_digest,
        );
        if hash != record.hash {
            return Err("hash does not match the record".into());
        }
        Ok(hash)
    }

    fn decode(&self) -> Result<(RecordView<'a>, Header<'a>), LogError> {
        let position = self.position;
        let corrupt = |what: &str, reason: &str| LogError::Corrupt {
            position,
            reason: format!("{what}: {reason}"),
        };
        let record = RecordView::decode(self.bytes).map_err(|e| corrupt("record", e))?;
        let header = Header::decode(record.header_bytes).map_err(|e| corrupt("header", e))?;
        if header.position != position {
            return Err(LogError::Corrupt {
                position,
                reason: format!("header says position {}", header.position),
            });
        }
        Ok((record, header))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header<'a>(stream: &'a str, event_type: &'a str) -> Header<'a> {
        Header {
            position: 7,
            stream,
            version: 3,
            event_id: [0x11; 16],
            event_type,
            schema_version: 2,
            recorded_at_micros: 1_764_000_000_000_000,
            correlation_id: Some([0x22; 16]),
            causation_id: None,
        }
    }

    /// The v1 format is pinned: this hash must never change, or every existing
    /// chain stops verifying. It was computed independently of this code from the
    /// layout in the doc comments (header 79 bytes; SHA-256 over the domain tag,
    /// previous hash, header length and header, payload digest, zero PII digest).
    #[test]
    fn the_v1_record_format_is_stable() {
        let record = encode_record(
            &header("order-1", "OrderPlaced"),
            b"payload",
            &None,
            &[0x33; 32],
        );
        assert_eq!(
            hex::encode(record.hash),
            "4bc685f1170825afd4949115f0d42a8e3408f46aa699c1bad7a6321d6a158e4b"
        );
        assert_eq!(record.bytes.len(), 2 + 79 + 128 + 1 + 4 + 7 + 1);
    }

    #[test]
    fn records_decode_back_and_verify() {
        let sealed = SealedPii {
            subject: SubjectId::new("account-1").unwrap(),
            nonce: [9; 24],
            ciphertext: vec![1, 2, 3],
        };
        let prev = [0x44; 32];
        let h = header("wallet-1", "Deposited");
        let record = encode_record(&h, b"body", &Some(sealed.clone()), &prev);
        let group_bytes = encode_group(&[record]);
        let group = GroupView::parse(7, &group_bytes).unwrap();
        let event = group.event(0).unwrap();
        assert_eq!(event.stream.as_str(), "wallet-1");
        assert_eq!((event.version, event.schema_version), (3, 2));
        assert_eq!(event.pii, Some(sealed));
        assert_eq!(event.correlation_id, Some(Uuid::from_bytes([0x22; 16])));
        assert_eq!(event.causation_id, None);
        assert_eq!(group.verify(0, &prev), Ok(event.hash));
        assert!(
            group.verify(0, &[0; 32]).is_err(),
            "another previous hash breaks the chain"
        );
        // A group read at the wrong position is caught.
        assert!(matches!(
            GroupView::parse(8, &group_bytes).unwrap().event(0),
            Err(LogError::Corrupt { position: 8, .. })
        ));
    }

    proptest! {
        #[test]
        fn any_header_round_trips(
            stream in "[!-~]{1,128}",
            event_type in "[!-~]{1,64}",
            position in 1u64..,
            version in 1u64..,
            id in any::<[u8; 16]>(),
            schema in 1u16..,
            micros in any::<i64>(),
            correlation in any::<Option<[u8; 16]>>(),
            causation in any::<Option<[u8; 16]>>(),
        ) {
            let h = Header { position, stream: &stream, version, event_id: id, event_type: &event_type,
                schema_version: schema, recorded_at_micros: micros, correlation_id: correlation, causation_id: causation };
            let mut bytes = Vec::new();
            h.encode(&mut bytes);
            let back = Header::decode(&bytes).unwrap();
            prop_assert_eq!(back.position, position);
            prop_assert_eq!(back.stream, stream.as_str());
            prop_assert_eq!(back.version, version);
            prop_assert_eq!(back.event_id, id);
            prop_assert_eq!(back.event_type, event_type.as_str());
            prop_assert_eq!(back.schema_version, schema);
            prop_assert_eq!(back.recorded_at_micros, micros);
            prop_assert_eq!(back.correlation_id, correlation);
            prop_assert_eq!(back.causation_id, causation);
        }

        #[test]
        fn garbage_never_panics_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Header::decode(&bytes);
            let _ = RecordView::decode(&bytes);
            let _ = decode_pii(&bytes);
            if let Ok(group) = GroupView::parse(1, &bytes) {
                for i in 0..group.count().min(8) {
                    let _ = group.event(i);
                    let _ = group.verify(i, &[0; 32]);
                }
            }
        }
    }
}
