//! Personal data in read models: the event's sealed section, kept as it is in
//! the log and opened with the vault on read. Once its subject is erased it
//! opens as `Erased`, in every read model and after any rebuild alike.

use nexus_core::domain::codec::Personal;
use nexus_core::log::RecordedEvent;
use nexus_core::vault::{Opened, SealedPii, SubjectId, Vault};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::QueryError;

/// A sealed personal section and the id of the event it was sealed for (the
/// AEAD's associated data, needed to open it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPii {
    pub event_id: Uuid,
    #[serde(with = "sealed_as_bytes")]
    pub sealed: SealedPii,
}

/// `SealedPii` in the bytes its derived serde writes with bincode, but with
/// the ciphertext written and read as one byte string instead of byte by byte
/// (a sequence of `u8` and a byte string are the same bytes in bincode).
mod sealed_as_bytes {
    use nexus_core::vault::{SealedPii, SubjectId};
    use serde::ser::SerializeStruct;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct ByteBuf(Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<ByteBuf, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                    while let Some(byte) = seq.next_element()? {
                        out.push(byte);
                    }
                    Ok(ByteBuf(out))
                }
            }
            d.deserialize_byte_buf(Visitor)
        }
    }

    /// The fields of `SealedPii`, in its order.
    #[derive(Deserialize)]
    struct Fields {
        subject: String,
        nonce: [u8; 24],
        ciphertext: ByteBuf,
    }

    pub fn serialize<S: Serializer>(sealed: &SealedPii, s: S) -> Result<S::Ok, S::Error> {
        let mut fields = s.serialize_struct("SealedPii", 3)?;
        fields.serialize_field("subject", sealed.subject.as_str())?;
        fields.serialize_field("nonce", &sealed.nonce)?;
        fields.serialize_field("ciphertext", &Bytes(&sealed.ciphertext))?;
        fields.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SealedPii, D::Error> {
        let fields = Fields::deserialize(d)?;
        Ok(SealedPii {
            subject: SubjectId::new(fields.subject).map_err(serde::de::Error::custom)?,
            nonce: fields.nonce,
            ciphertext: fields.ciphertext.0,
        })
    }
}

impl StoredPii {
    /// The record's sealed section, if it has one.
    pub fn of(record: &RecordedEvent) -> Option<StoredPii> {
        record.pii.as_ref().map(|sealed| StoredPii {
            event_id: record.id.0,
            sealed: sealed.clone(),
        })
    }

    pub fn subject(&self) -> &SubjectId {
        &self.sealed.subject
    }

    /// Opens the section and decodes it as the event's personal struct `T`.
    pub fn open<T: DeserializeOwned>(&self, vault: &Vault) -> Result<Personal<T>, QueryError> {
        match vault.open_sealed(&self.sealed, &self.event_id)? {
            Opened::Erased => Ok(Personal::Erased),
            Opened::Plain(bytes) => bincode::deserialize(&bytes)
                .map(Personal::Plain)
                .map_err(|e| QueryError::Sealed(e.to_string())),
        }
    }
}

/// Opens an optional section: `Unopened` when the log had none to give.
pub fn open_optional<T: DeserializeOwned>(
    stored: Option<&StoredPii>,
    vault: &Vault,
) -> Result<Personal<T>, QueryError> {
    match stored {
        Some(stored) => stored.open(vault),
        None => Ok(Personal::Unopened),
    }
}

/// Maps opened personal data.
pub fn map_personal<T, U>(p: Personal<T>, f: impl FnOnce(T) -> U) -> Personal<U> {
    match p {
        Personal::Plain(t) => Personal::Plain(f(t)),
        Personal::Erased => Personal::Erased,
        Personal::Unopened => Personal::Unopened,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived encoding of the same fields, for comparison.
    #[derive(Serialize)]
    struct Derived<'a> {
        event_id: Uuid,
        sealed: &'a SealedPii,
    }

    #[test]
    fn stored_sections_keep_the_derived_bytes_and_round_trip() {
        for len in [0usize, 17, 250, 251, 300, 70_000] {
            let stored = StoredPii {
                event_id: Uuid::now_v7(),
                sealed: SealedPii {
                    subject: SubjectId::new("account:0123456789abcdef").unwrap(),
                    nonce: [7; 24],
                    ciphertext: (0..len).map(|i| i as u8).collect(),
                },
            };
            let bytes = crate::value::encode(&stored).unwrap();
            let derived = crate::value::encode(&Derived {
                event_id: stored.event_id,
                sealed: &stored.sealed,
            })
            .unwrap();
            assert_eq!(bytes, derived, "{len} bytes of ciphertext");
            let back: StoredPii = crate::value::decode(b"k", &bytes).unwrap();
            assert_eq!(back, stored);
            // A truncated section is an error, not a panic.
            assert!(crate::value::decode::<StoredPii>(b"k", &bytes[..bytes.len() - 1]).is_err());
        }
    }
}
