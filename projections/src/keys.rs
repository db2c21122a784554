//! Byte encodings shared by the read models' keys. Fixed-width big-endian parts,
//! so sled's byte order is the order the queries want.

use chrono::{DateTime, Utc};
use nexus_core::domain::ids::{AccountId, AnonymousId};
use nexus_core::domain::ledger::Owner;
use uuid::Uuid;

/// The checkpoint's key in every projection's tree. Every other key starts
/// with an ASCII letter, so it can never collide with this one.
pub const CHECKPOINT_KEY: &[u8] = b"\0checkpoint";
/// The format version of the tree's rows (u32 BE), written with the first
/// commit (and at the end of a rebuild). A tree holding another version, or
/// rows and no version (written before versions were recorded), is rebuilt
/// from position 0 by [`crate::Runner`].
pub const FORMAT_KEY: &[u8] = b"\0format";
/// Present while a rebuild writes the tree (without sled batches): a tree
/// holding it is incomplete, whatever else it holds, and reads as unbuilt.
pub const REBUILDING_KEY: &[u8] = b"\0rebuilding";

/// An owner in 17 bytes: `a` (account) or `n` (anonymous) and the id's bytes.
pub const OWNER_BYTES: usize = 17;

pub fn owner(owner: &Owner) -> [u8; OWNER_BYTES] {
    let (tag, id) = match owner {
        Owner::Account(id) => (b'a', id.0),
        Owner::Anonymous(id) => (b'n', id.0),
    };
    let mut out = [0u8; OWNER_BYTES];
    out[0] = tag;
    out[1..].copy_from_slice(id.as_bytes());
    out
}

/// A key: a one-letter tag followed by its parts.
pub fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut key = Vec::with_capacity(len);
    key.push(tag);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

/// A time in 8 bytes that sort like the times: milliseconds since the epoch,
/// sign bit flipped, big-endian.
pub fn time(at: DateTime<Utc>) -> [u8; 8] {
    ((at.timestamp_millis() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`time`].
pub fn time_from(bytes: &[u8]) -> Option<DateTime<Utc>> {
    let raw = u64::from_be_bytes(bytes.try_into().ok()?);
    DateTime::from_timestamp_millis((raw ^ (1 << 63)) as i64)
}

pub fn uuid_from(bytes: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(bytes).ok()
}

pub fn owner_from(bytes: &[u8]) -> Option<Owner> {
    let (tag, id) = bytes.split_first()?;
    let id = uuid_from(id)?;
    match tag {
        b'a' => Some(Owner::Account(AccountId(id))),
        b'n' => Some(Owner::Anonymous(AnonymousId(id))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_bytes_and_round_trip() {
        let times = [-86_400_000i64, -1, 0, 1, 1_764_000_000_000];
        let encoded: Vec<[u8; 8]> = times
            .iter()
            .map(|ms| time(DateTime::from_timestamp_millis(*ms).unwrap()))
            .collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]));
        for (ms, bytes) in times.iter().zip(&encoded) {
            assert_eq!(time_from(bytes).unwrap().timestamp_millis(), *ms);
        }
    }

    #[test]
    fn owners_round_trip() {
        for o in [
            Owner::Account(AccountId::new()),
            Owner::Anonymous(AnonymousId::new()),
        ] {
            assert_eq!(owner_from(&owner(&o)), Some(o));
        }
        assert_eq!(owner_from(b"x0123456789abcdef"), None);
    }
}

/// Serde for times in stored rows: seconds and nanoseconds as integers. chrono's
/// own serde writes an RFC 3339 string, whose formatting and parsing cost more
/// than everything else a projection does with a row.
pub mod ts {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        (at.timestamp(), at.timestamp_subsec_nanos()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
        DateTime::from_timestamp(secs, nanos)
            .ok_or_else(|| serde::de::Error::custom("time out of range"))
    }

    /// The same for `Option<DateTime<Utc>>`.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            at.map(|at| (at.timestamp(), at.timestamp_subsec_nanos()))
                .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match <Option<(i64, u32)>>::deserialize(d)? {
                None => Ok(None),
                Some((secs, nanos)) => DateTime::from_timestamp(secs, nanos)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom("time out of range")),
            }
        }
    }
}
