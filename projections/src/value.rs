//! How rows are stored: bincode with variable-length integers (lengths,
//! amounts and times take the bytes they need: sled's cost per key written
//! grows with the value's size).

use serde::de::DeserializeOwned;
use serde::Serialize;

use bincode::Options;

use crate::error::{QueryError, StoredValueError};

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// The stored bytes of a row.
pub fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    options().serialize(value).ok()
}

/// A row from its stored bytes.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoredValueError> {
    options()
        .deserialize(bytes)
        .map_err(|e| StoredValueError::new(key, e))
}

/// The row under `key`, if any (queries).
pub fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, QueryError> {
    match tree.get(key)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(decode(key, &bytes)?)),
    }
}
