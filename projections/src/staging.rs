//! Staged changes to one projection's tree, committed with the checkpoint in
//! one sled batch.
//!
//! A projection reads and writes rows through a [`Staging`]: typed values,
//! kept decoded in memory, so an event that updates a row pays neither for
//! decoding nor for encoding it. [`Staging::commit`] encodes every changed row
//! once and writes them with the new checkpoint in one atomic `sled::Batch`.
//! A crash therefore loses whole batches only, never half of one: after a
//! restart the projection resumes at its checkpoint with exactly the state
//! that checkpoint describes.
//!
//! Rows read from the tree stay cached (decoded) up to a number of entries. A
//! tree that was empty when staged (a rebuild) is cached *completely* until
//! that limit is reached, so a rebuild reads nothing back from sled.
//!
//! Several writes of one key between two commits are one sled write, and a key
//! written and deleted again before its first commit (an order that becomes
//! active and final within one window) costs no sled write at all.
//!
//! A value is stored as its type's encoding ([`crate::value`]); a key is always read and written
//! with the same type (a mismatch is a [`StoredValueError`]).

use std::any::Any;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApplyError, StorageError, StoredValueError};
use crate::keys::{CHECKPOINT_KEY, FORMAT_KEY, REBUILDING_KEY};

/// What can be stored in a projection's tree.
pub trait Row: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Row for T {}

/// One key's staged state.
struct Entry {
    /// The current value (`None`: absent or deleted).
    value: Option<Box<dyn Any + Send>>,
    /// Encodes `value` (its type's bincode).
    encode: fn(&(dyn Any + Send)) -> Option<Vec<u8>>,
    /// Changed since the last commit.
    dirty: bool,
    /// Whether the tree holds the key (`None`: not known).
    in_tree: Option<bool>,
    /// The period ([`Staging::write_idle_unbatched`]) it last changed in.
    touched: u64,
}

fn encode_as<T: Row>(value: &(dyn Any + Send)) -> Option<Vec<u8>> {
    value.downcast_ref::<T>().and_then(crate::value::encode)
}

/// A fast hash for the staging's keys (ids and tags, never attacker-chosen
/// beyond what the log already holds): FxHash's mixing.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        // The multiplications carry each byte's bits upwards only: fold the
        // high bits into the low ones, which pick the table's slot (keys that
        // differ only in their last bytes, such as bucket numbers, would
        // otherwise share slots).
        let x = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

type Entries = HashMap<Vec<u8>, Entry, BuildHasherDefault<KeyHasher>>;

/// A key to write: its new bytes, or `None` to remove it.
type Change<'a> = (&'a [u8], Option<Vec<u8>>);

/// The staged, uncommitted changes of one projection, and its cache of rows.
pub struct Staging {
    tree: sled::Tree,
    entries: Entries,
    dirty: usize,
    max_entries: usize,
    /// The entries hold every key of the tree: a miss means absent.
    complete: bool,
    /// The current period of [`Staging::write_idle_unbatched`].
    period: u64,
    /// A format version to write with the next commit.
    format_to_write: Option<u32>,
}

/// The keys of a tree that are not rows (never read through a staging).
const META_KEYS: [&[u8]; 3] = [CHECKPOINT_KEY, FORMAT_KEY, REBUILDING_KEY];

fn wrong_type(key: &[u8]) -> ApplyError {
    StoredValueError::new(key, "read with another type than it was written with").into()
}

impl Staging {
    /// Stages changes to `tree`, keeping up to `max_entries` rows in memory
    /// (beyond, committed rows are dropped and read again from the tree).
    pub fn new(tree: sled::Tree, max_entries: usize) -> Result<Self, StorageError> {
        // No row yet (a new tree, or one being rebuilt: it holds only the
        // mark, never read through a staging): every row will pass through
        // the cache, so a miss means absent.
        let mut complete = max_entries > 0;
        for key in tree.iter().keys().take(META_KEYS.len() + 1) {
            if !META_KEYS.contains(&key?.as_ref()) {
                complete = false;
                break;
            }
        }
        Ok(Self {
            tree,
            entries: Entries::default(),
            dirty: 0,
            max_entries,
            complete,
            period: 0,
            format_to_write: None,
        })
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The last position committed to the tree (0: none).
    pub fn checkpoint(&self) -> Result<u64, StorageError> {
        read_checkpoint(&self.tree)
    }

    /// Records the format `version` of the rows in the same batch as the next
    /// commit (see [`crate::keys::FORMAT_KEY`]).
    pub fn write_format_with_next_commit(&mut self, version: u32) {
        self.format_to_write = Some(version);
    }

    /// Keys changed since the last commit.
    pub fn dirty_len(&self) -> usize {
        self.dirty
    }

    /// The entry of `key`, loaded from the tree as a `T` if not staged yet.
    fn entry<T: Row>(&mut self, key: &[u8]) -> Result<&mut Entry, ApplyError> {
        entry_in::<T>(&mut self.entries, &self.tree, self.complete, key)
    }

    /// The current value of `key`.
    pub fn get<T: Row>(&mut self, key: &[u8]) -> Result<Option<&T>, ApplyError> {
        match &self.entry::<T>(key)?.value {
            None => Ok(None),
            Some(value) => value
                .downcast_ref()
                .map(Some)
                .ok_or_else(|| wrong_type(key)),
        }
    }

    /// The current value of `key`, to change in place (it will be written).
    pub fn get_mut<T: Row>(&mut self, key: &[u8]) -> Result<Option<&mut T>, ApplyError> {
        let entry = entry_in::<T>(&mut self.entries, &self.tree, self.complete, key)?;
        let Some(value) = entry.value.as_mut() else {
            return Ok(None);
        };
        entry.touched = self.period;
        if !entry.dirty {
            entry.dirty = true;
            self.dirty += 1;
        }
        value
            .downcast_mut()
            .map(Some)
            .ok_or_else(|| wrong_type(key))
    }

    /// The value of `key`, created with `default` if absent, to change in place.
    pub fn get_or_insert_with<T: Row>(
        &mut self,
        key: &[u8],
        default: impl FnOnce() -> T,
    ) -> Result<&mut T, ApplyError> {
        let entry = entry_in::<T>(&mut self.entries, &self.tree, self.complete, key)?;
        if entry.value.is_none() {
            entry.value = Some(Box::new(default()));
            entry.encode = encode_as::<T>;
        }
        entry.touched = self.period;
        if !entry.dirty {
            entry.dirty = true;
            self.dirty += 1;
        }
        entry
            .value
            .as_mut()
            .and_then(|v| v.downcast_mut())
            .ok_or_else(|| wrong_type(key))
    }

    /// Removes `key` and returns its value.
    pub fn take<T: Row>(&mut self, key: &[u8]) -> Result<Option<T>, ApplyError> {
        let period = self.period;
        let entry = self.entry::<T>(key)?;
        let Some(value) = entry.value.take() else {
            return Ok(None);
        };
        entry.touched = period;
        if !entry.dirty {
            entry.dirty = true;
            self.dirty += 1;
        }
        value
            .downcast::<T>()
            .map(|v| Some(*v))
            .map_err(|_| wrong_type(key))
    }

    /// Sets `key` to `value`.
    pub fn put<T: Row>(&mut self, key: Vec<u8>, value: T) {
        let dirty = &mut self.dirty;
        // With a complete cache, a key not staged is not in the tree either.
        let in_tree = if self.complete { Some(false) } else { None };
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            value: None,
            encode: encode_as::<T>,
            dirty: false,
            in_tree,
            touched: 0,
        });
        entry.value = Some(Box::new(value));
        entry.encode = encode_as::<T>;
        entry.touched = self.period;
        if !entry.dirty {
            entry.dirty = true;
            *dirty += 1;
        }
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &[u8]) {
        let complete = self.complete;
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.value = None;
                entry.touched = self.period;
                if !entry.dirty {
                    entry.dirty = true;
                    self.dirty += 1;
                }
            }
            None => {
                self.entries.insert(
                    key.to_vec(),
                    Entry {
                        value: None,
                        encode: encode_as::<()>,
                        dirty: true,
                        in_tree: if complete { Some(false) } else { None },
                        touched: self.period,
                    },
                );
                self.dirty += 1;
            }
        }
    }

    /// Forgets every change since the last commit (after a failed event; the
    /// caller applies again what came before it).
    pub fn discard_uncommitted(&mut self) {
        self.entries.retain(|_, e| !e.dirty);
        self.dirty = 0;
        // A discarded key may exist in the tree: misses must read it again.
        self.complete = false;
    }

    /// The changes to write, in key order (sled writes sorted keys faster:
    /// consecutive keys land in the same node). `None`: remove the key.
    fn changes(&self, wanted: impl Fn(&Entry) -> bool) -> Result<Vec<Change<'_>>, StorageError> {
        let mut changes = Vec::with_capacity(self.dirty);
        for (key, entry) in self.entries.iter().filter(|(_, e)| e.dirty && wanted(e)) {
            match &entry.value {
                Some(value) => {
                    let bytes = (entry.encode)(value.as_ref())
                        .ok_or_else(|| StoredValueError::new(key, "does not encode"))?;
                    changes.push((key.as_slice(), Some(bytes)));
                }
                None => {
                    let in_tree = match entry.in_tree {
                        Some(known) => known,
                        None => self.tree.contains_key(key)?,
                    };
                    if in_tree {
                        changes.push((key.as_slice(), None));
                    }
                }
            }
        }
        changes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Ok(changes)
    }

    /// Writes every change and `checkpoint` in one atomic sled batch.
    pub fn commit(&mut self, checkpoint: u64) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (key, value) in self.changes(|_| true)? {
            match value {
                Some(bytes) => batch.insert(key, bytes),
                None => batch.remove(key),
            }
        }
        batch.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes());
        if let Some(version) = self.format_to_write {
            batch.insert(FORMAT_KEY, &version.to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        self.format_to_write = None;
        self.written(|_| true);
        Ok(())
    }

    /// Writes every change with plain sled inserts and removes, in key order,
    /// without a checkpoint. Not atomic, and sled's batch lock is not taken (it
    /// is process-wide: no other tree's writes, and no log append, wait for
    /// these). Only for a tree marked as being rebuilt, which reads as unbuilt
    /// until the rebuild ends ([`crate::rebuild()`]).
    pub(crate) fn write_unbatched(&mut self) -> Result<(), StorageError> {
        self.write_unbatched_where(|_| true)
    }

    /// [`Staging::write_unbatched`] of the rows no event changed since the
    /// last call (rows whose events are likely over: an order settled, a
    /// customer gone quiet), so that each is written about once while the
    /// events still come; then a new period begins.
    pub(crate) fn write_idle_unbatched(&mut self) -> Result<(), StorageError> {
        let period = self.period;
        self.write_unbatched_where(|e| e.touched < period)?;
        self.period += 1;
        Ok(())
    }

    fn write_unbatched_where(
        &mut self,
        wanted: impl Fn(&Entry) -> bool,
    ) -> Result<(), StorageError> {
        for (key, value) in self.changes(&wanted)? {
            match value {
                Some(bytes) => self.tree.insert(key, bytes)?,
                None => self.tree.remove(key)?,
            };
        }
        self.written(wanted);
        Ok(())
    }

    /// After a write of the `wanted` changes: they are not dirty any more, and
    /// the cache knows what the tree holds for them.
    fn written(&mut self, wanted: impl Fn(&Entry) -> bool) {
        let mut written = 0;
        for entry in self.entries.values_mut() {
            if entry.dirty && wanted(entry) {
                entry.dirty = false;
                entry.in_tree = Some(entry.value.is_some());
                written += 1;
            }
        }
        self.dirty -= written;
        if self.complete {
            // A complete cache needs no record of what is absent.
            self.entries.retain(|_, e| e.value.is_some() || e.dirty);
        }
        if self.entries.len() > self.max_entries {
            self.entries.retain(|_, e| e.dirty);
            self.complete = false;
        }
    }
}

/// The entry of `key` in `entries`, loaded from `tree` as a `T` if not there
/// yet (`complete`: the entries hold every key of the tree).
fn entry_in<'a, T: Row>(
    entries: &'a mut Entries,
    tree: &sled::Tree,
    complete: bool,
    key: &[u8],
) -> Result<&'a mut Entry, ApplyError> {
    if !entries.contains_key(key) {
        let value = if complete {
            None
        } else {
            match tree.get(key)? {
                None => None,
                Some(bytes) => {
                    let value: T = crate::value::decode(key, &bytes)?;
                    Some(Box::new(value) as Box<dyn Any + Send>)
                }
            }
        };
        let in_tree = value.is_some();
        entries.insert(
            key.to_vec(),
            Entry {
                value,
                encode: encode_as::<T>,
                dirty: false,
                in_tree: Some(in_tree),
                touched: 0,
            },
        );
    }
    entries.get_mut(key).ok_or_else(|| wrong_type(key))
}

/// The checkpoint stored in a projection's tree (0: none, or a rebuild of the
/// tree did not end).
pub fn read_checkpoint(tree: &sled::Tree) -> Result<u64, StorageError> {
    if is_rebuilding(tree)? {
        return Ok(0);
    }
    match tree.get(CHECKPOINT_KEY)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 8] = bytes
                .as_ref()
                .try_into()
                .map_err(|_| StoredValueError::new(CHECKPOINT_KEY, "not 8 bytes"))?;
            Ok(u64::from_be_bytes(raw))
        }
    }
}

/// The format version the tree's rows were written with (`None`: not
/// recorded: an empty tree, or one written before versions were recorded).
pub fn read_format(tree: &sled::Tree) -> Result<Option<u32>, StorageError> {
    match tree.get(FORMAT_KEY)? {
        None => Ok(None),
        Some(bytes) => {
            let raw: [u8; 4] = bytes
                .as_ref()
                .try_into()
                .map_err(|_| StoredValueError::new(FORMAT_KEY, "not 4 bytes"))?;
            Ok(Some(u32::from_be_bytes(raw)))
        }
    }
}

/// Whether the tree is marked as being rebuilt: its contents are incomplete
/// (a rebuild that did not end); the projection must start again from 0.
pub fn is_rebuilding(tree: &sled::Tree) -> Result<bool, StorageError> {
    Ok(tree.contains_key(REBUILDING_KEY)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        (dir, tree)
    }

    #[test]
    fn reads_see_staged_writes_and_commit_is_atomic_with_the_checkpoint() {
        let (_dir, tree) = tree();
        for max_entries in [0, 1 << 20] {
            tree.clear().unwrap();
            let mut s = Staging::new(tree.clone(), max_entries).unwrap();
            s.put(b"a".to_vec(), 1u32);
            assert_eq!(s.get::<u32>(b"a").unwrap(), Some(&1));
            *s.get_mut::<u32>(b"a").unwrap().unwrap() += 1;
            assert!(
                tree.get(b"a").unwrap().is_none(),
                "nothing before the commit"
            );
            s.commit(7).unwrap();
            let stored = tree.get(b"a").unwrap().unwrap();
            assert_eq!(crate::value::decode::<u32>(b"a", &stored).unwrap(), 2);
            assert_eq!(s.checkpoint().unwrap(), 7);
            s.delete(b"a");
            assert_eq!(s.get::<u32>(b"a").unwrap(), None);
            s.commit(8).unwrap();
            assert!(tree.get(b"a").unwrap().is_none());
            let mut fresh = Staging::new(tree.clone(), max_entries).unwrap();
            assert_eq!(fresh.get::<u32>(b"a").unwrap(), None);
        }
    }

    #[test]
    fn discarded_changes_leave_the_committed_state() {
        let (_dir, tree) = tree();
        let mut s = Staging::new(tree.clone(), 100).unwrap();
        s.put(b"a".to_vec(), 1u32);
        s.commit(1).unwrap();
        *s.get_mut::<u32>(b"a").unwrap().unwrap() = 5;
        s.put(b"b".to_vec(), 9u32);
        s.discard_uncommitted();
        assert_eq!(s.get::<u32>(b"a").unwrap(), Some(&1));
        assert_eq!(s.get::<u32>(b"b").unwrap(), None);
        assert_eq!(s.dirty_len(), 0);
    }

    #[test]
    fn a_key_created_and_deleted_before_its_commit_costs_nothing() {
        let (_dir, tree) = tree();
        let mut s = Staging::new(tree.clone(), 100).unwrap();
        s.put(b"x".to_vec(), ());
        s.delete(b"x");
        s.delete(b"never");
        s.commit(1).unwrap();
        assert_eq!(tree.len(), 1, "the checkpoint only");
    }

    #[test]
    fn a_small_cache_drops_rows_and_reads_fall_back_to_the_tree() {
        let (_dir, tree) = tree();
        let mut s = Staging::new(tree.clone(), 3).unwrap();
        for i in 0u8..20 {
            s.put(vec![b'k', i], u64::from(i));
            s.commit(u64::from(i) + 1).unwrap();
        }
        for i in 0u8..20 {
            assert_eq!(s.get::<u64>(&[b'k', i]).unwrap(), Some(&u64::from(i)));
        }
    }

    #[test]
    fn only_a_tree_without_rows_starts_with_a_complete_cache() {
        let (_dir, tree) = tree();
        assert!(Staging::new(tree.clone(), 10).unwrap().complete);
        tree.insert(REBUILDING_KEY, &[]).unwrap();
        tree.insert(FORMAT_KEY, &1u32.to_be_bytes()).unwrap();
        tree.insert(CHECKPOINT_KEY, &7u64.to_be_bytes()).unwrap();
        assert!(
            Staging::new(tree.clone(), 10).unwrap().complete,
            "the mark, the format and the checkpoint are not rows"
        );
        tree.insert([0u8, 1], &[]).unwrap();
        let mut s = Staging::new(tree.clone(), 10).unwrap();
        assert!(!s.complete, "a row, whatever its key");
        assert_eq!(s.get::<()>(&[0u8, 1]).unwrap(), Some(&()));
        assert!(!Staging::new(tree, 0).unwrap().complete, "no cache");
    }

    #[test]
    fn a_key_read_with_another_type_is_an_error() {
        let (_dir, tree) = tree();
        let mut s = Staging::new(tree, 100).unwrap();
        s.put(b"a".to_vec(), 1u32);
        assert!(s.get::<String>(b"a").is_err());
    }
}
