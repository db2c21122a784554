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

/// The stored bytes of a row. (bincode's own `serialize` walks the value twice:
/// once for the size, once to write.)
pub fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    // Transient (sled copies it): room for most rows at once.
    let mut out = Vec::with_capacity(512);
    options().serialize_into(&mut out, value).ok()?;
    Some(out)
}

/// Appends the stored bytes of a row to `out`.
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Option<()> {
    options().serialize_into(out, value).ok()
}

/// A row from its stored bytes.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoredValueError> {
    options()
        .deserialize(bytes)
        .map_err(|e| StoredValueError::new(key, e))
}

/// A value that borrows from its stored bytes (e.g. `&[u8]`).
pub fn decode_borrowed<'a, T: serde::Deserialize<'a>>(
    key: &[u8],
    bytes: &'a [u8],
) -> Result<T, StoredValueError> {
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
