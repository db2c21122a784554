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
    pub sealed: SealedPii,
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
