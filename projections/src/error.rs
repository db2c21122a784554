//! Typed errors of projections and their queries. None carries personal data:
//! keys are shown in hex, and the only values named are positions and ids.

use nexus_core::domain::codec::CodecError;
use nexus_core::vault::VaultError;

/// Why one event could not be applied. The projection stops at that event.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("event {event_type} does not decode: {source}")]
    Decode {
        event_type: String,
        #[source]
        source: CodecError,
    },
    #[error("stream {stream} is not a well-formed {category} stream: {reason}")]
    BadStream {
        stream: String,
        category: &'static str,
        reason: &'static str,
    },
    #[error("{event_type} names {what} {id}, which this projection has not seen")]
    Missing {
        event_type: String,
        what: &'static str,
        id: String,
    },
    #[error("{event_type} carries no sealed personal section, but needs one")]
    MissingPersonalSection { event_type: String },
    #[error("an amount overflowed while applying {event_type}")]
    Overflow { event_type: String },
    #[error(transparent)]
    Stored(#[from] StoredValueError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    #[error("read model storage: {0}")]
    Storage(#[from] sled::Error),
}

/// A value in a read-model tree that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("stored value under key {key} is corrupt: {reason}")]
pub struct StoredValueError {
    /// The key, hex.
    pub key: String,
    pub reason: String,
}

impl StoredValueError {
    pub(crate) fn new(key: &[u8], reason: impl std::fmt::Display) -> Self {
        Self {
            key: hex::encode(key),
            reason: reason.to_string(),
        }
    }
}

/// The read models' database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("read model storage: {0}")]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Stored(#[from] StoredValueError),
    #[error("no projection is named {0:?}")]
    UnknownProjection(String),
}

/// Why a read-model query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("read model storage: {0}")]
    Storage(#[from] sled::Error),
    #[error(transparent)]
    Stored(#[from] StoredValueError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    #[error("a sealed section does not decode: {0}")]
    Sealed(String),
}
