//! Idempotency keys of money-moving commands (stream `idem-<digest>`): the first
//! use of a key records the request's fingerprint and its result, in the same
//! atomic append as the command's events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::aggregate::Aggregate;
use super::codec::EventBody;
use super::ids::{DepositId, OrderId};
use crate::domain_events;
use crate::log::StreamName;

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// What a keyed command produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdempotentResult {
    Order(OrderId),
    Deposit(DepositId),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKeyUsed {
    /// SHA-256 of the request's canonical form.
    pub fingerprint: [u8; 32],
    pub result: IdempotentResult,
    pub at: DateTime<Utc>,
}

impl EventBody for IdempotencyKeyUsed {}

domain_events! {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum IdempotencyEvent {
        IdempotencyKeyUsed(IdempotencyKeyUsed) = 1,
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub used: Option<IdempotencyKeyUsed>,
}

impl Aggregate for IdempotencyRecord {
    type Event = IdempotencyEvent;

    fn apply(&mut self, event: &IdempotencyEvent) {
        let IdempotencyEvent::IdempotencyKeyUsed(e) = event;
        // The first use wins; the stream is appended with NoStream only.
        self.used.get_or_insert_with(|| e.clone());
    }
}

/// A client's idempotency key, checked, scoped to whoever sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    stream: StreamName,
}

impl IdempotencyKey {
    /// `scope` is the caller (an account's stream name); keys of two callers never
    /// meet. Keys are 1–255 printable ASCII characters.
    pub fn new(scope: &str, key: &str) -> Option<IdempotencyKey> {
        if key.is_empty()
            || key.len() > MAX_IDEMPOTENCY_KEY_BYTES
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return None;
        }
        let digest = Sha256::digest(format!("{scope}\n{key}").as_bytes());
        let stream = StreamName::new(format!("idem-{}", hex::encode(digest)))
            .expect("hex digits make a valid stream name");
        Some(IdempotencyKey { stream })
    }

    pub fn stream(&self) -> &StreamName {
        &self.stream
    }
}

/// The fingerprint of a request: SHA-256 over its fields, each length-prefixed.
/// A key used for another request than the one it first went with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this idempotency key was used for another request")]
pub struct KeyReused;

/// What a key's record says of a request with `fingerprint`: unused (`None`),
/// the same request again (`Some`: its first result, nothing new to do), or
/// another request ([`KeyReused`]).
pub fn replay(
    record: &IdempotencyRecord,
    fingerprint: &[u8; 32],
) -> Result<Option<IdempotentResult>, KeyReused> {
    match &record.used {
        None => Ok(None),
        Some(used) if used.fingerprint == *fingerprint => Ok(Some(used.result)),
        Some(_) => Err(KeyReused),
    }
}

/// Records the first use of a key, beside the command's own events.
pub fn record_use(
    fingerprint: [u8; 32],
    result: IdempotentResult,
    at: DateTime<Utc>,
) -> Vec<IdempotencyEvent> {
    vec![IdempotencyEvent::IdempotencyKeyUsed(IdempotencyKeyUsed {
        fingerprint,
        result,
        at,
    })]
}

pub fn fingerprint(fields: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for field in fields {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.finalize().into()
}
