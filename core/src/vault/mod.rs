//! The PII vault: crypto-shredding of personal data.
//!
//! Personal fields in events are sealed with XChaCha20-Poly1305 under a per-subject
//! data key (a subject is an account, an anonymous order, a single SMS code). The
//! event id is the associated data, so a sealed section cannot be moved to another
//! event. Data keys live in their own sled tree, `vault`, wrapped (encrypted) by the
//! master key. Erasing a subject replaces its wrapped key by a tombstone and syncs, so
//! every sealed section of that subject reads back as [`Opened::Erased`] from then on,
//! including after a restart, while the events themselves stay untouched in the log.
//!
//! # Layout of the `vault` tree
//!
//! - `b"check"`: `nonce (24) || seal(master key, CHECK_PLAINTEXT)`, written when the
//!   vault is first opened. It tells a wrong master key from a corrupt record.
//! - `b"k/" + subject`: either `nonce (24) || wrap(master key, data key)` (72 bytes,
//!   the subject id bytes are the associated data, so a wrapped key cannot be moved
//!   to another subject), or the one-byte tombstone `[0]` once the subject is erased.
//!   A tombstone is never replaced: sealing for an erased subject is refused.
//!
//! # Limits of the shredding
//!
//! sled is log-structured: an overwritten value can survive in an old segment of the
//! data file until sled reclaims that segment. A wrapped key that lingers this way is
//! still encrypted under the master key, so erasure holds as long as the master key
//! is not disclosed together with an old copy of the database files.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::durable::{sled_to_io, DurableDb};

mod epoch;

use epoch::Epoch;

/// The largest plaintext [`Vault::seal`] accepts.
pub const MAX_PII_BYTES: usize = 16 * 1024;
/// The longest subject id, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 128;

const KEY_BYTES: usize = 32;
pub(crate) const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// The longest ciphertext [`Vault::seal`] produces: the plaintext and its tag.
pub(crate) const MAX_SEALED_BYTES: usize = MAX_PII_BYTES + TAG_BYTES;
/// `nonce || wrapped data key || tag`.
const WRAPPED_KEY_LEN: usize = NONCE_BYTES + KEY_BYTES + TAG_BYTES;
const EPOCH_NUMBER_BYTES: usize = 4;
/// A key record: `epoch number (4, LE) || nonce || wrapped data key || tag`.
const RECORD_LEN: usize = EPOCH_NUMBER_BYTES + WRAPPED_KEY_LEN;
/// A key record written before epochs: wrapped under the master key itself.
const LEGACY_RECORD_LEN: usize = WRAPPED_KEY_LEN;
/// The value of an erased subject's key record; never the length of a wrapped key.
const TOMBSTONE: &[u8] = &[0];
const _: () = assert!(TOMBSTONE.len() != RECORD_LEN && TOMBSTONE.len() != LEGACY_RECORD_LEN);
const _: () = assert!(RECORD_LEN != LEGACY_RECORD_LEN);
/// Present while an erasure happened since the last rotation: a random value per
/// erasure, so a rotation clears only the erasures it covered.
const ROTATION_DUE_KEY: &[u8] = b"rotation-due";
/// Present while lookup hashes may still be made under the master-derived key
/// of vaults from before epochs: set when such a vault is first opened,
/// removed by the first finished rotation.
const LEGACY_LOOKUP_KEY: &[u8] = b"lookup-legacy";
/// Present once lookup keys come from epochs.
const EPOCH_LOOKUP_KEY: &[u8] = b"lookup-epochs";
/// Epochs end at least this often, erasure or not.
pub const MAX_EPOCH_AGE_SECS: u64 = 7 * 24 * 3600;
/// An erasure makes a rotation due once the current epoch is this old: erasures
/// come in a steady stream (codes, accounts, anonymous buyers), and a rotation
/// re-wraps every live key, so they are batched. With the server's hourly check
/// an erased key is destroyed at most about 7 hours after the erasure.
pub const MIN_EPOCH_AGE_SECS: u64 = 6 * 3600;
const _: () = assert!(MIN_EPOCH_AGE_SECS < MAX_EPOCH_AGE_SECS);
/// How many times a rotation re-reads one record that changed under it (only an
/// erasure changes a live record, and a tombstone is final).
const MAX_REWRAP_ATTEMPTS: usize = 4;

const TREE_NAME: &[u8] = b"vault";
const CHECK_KEY: &[u8] = b"check";
const CHECK_PLAINTEXT: &[u8] = b"nexus vault master key check v1";
/// Contains a space, so it can never equal a subject id (the wrapping AD).
const CHECK_AD: &[u8] = b"nexus vault check";
const KEY_PREFIX: &[u8] = b"k/";
// The other records of the tree are not key records: their first two bytes differ.
const _: () = assert!(
    ROTATION_DUE_KEY[1] != KEY_PREFIX[1]
        && CHECK_KEY[1] != KEY_PREFIX[1]
        && LEGACY_LOOKUP_KEY[1] != KEY_PREFIX[1]
        && EPOCH_LOOKUP_KEY[1] != KEY_PREFIX[1]
);

/// Unwrapped data keys kept in memory; the cache is cleared when it is full.
const MAX_CACHED_KEYS: usize = 100_000;
/// 64 hex characters and a newline; anything longer is rejected unread.
const MAX_KEY_FILE_BYTES: usize = 2 * KEY_BYTES + 1;

/// The vault's master key: wraps every data key. Never printed.
pub struct MasterKey {
    bytes: [u8; KEY_BYTES],
}

impl MasterKey {
    fn generate() -> Result<Self, VaultError> {
        Ok(Self {
            bytes: random_array()?,
        })
    }

    /// Parses a key file's contents: 64 lowercase hex characters and an optional
    /// trailing newline. The error never contains any of the contents.
    fn parse(contents: &[u8]) -> Result<Self, &'static str> {
        let hex_part = match contents {
            [head @ .., b'\n'] => head,
            all => all,
        };
        if hex_part.len() != 2 * KEY_BYTES {
            return Err("expected 64 lowercase hex characters and an optional trailing newline");
        }
        if !hex_part
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err("expected lowercase hex characters only");
        }
        let mut bytes = [0u8; KEY_BYTES];
        if hex::decode_to_slice(hex_part, &mut bytes).is_err() {
            return Err("invalid hex");
        }
        Ok(Self { bytes })
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.bytes))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for MasterKey {}

/// Where the master key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A key file that must exist.
    File(PathBuf),
    /// The embedded default: load the file if it exists, else generate a key and
    /// write it there (mode 0600), but only for a new, empty vault.
    GenerateAt(PathBuf),
}

/// The subject whose data key seals a section: an account, an order, an SMS code.
///
/// 1 to 128 bytes of printable ASCII without spaces. Deserialising validates too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String")]
pub struct SubjectId(String);

impl SubjectId {
    pub fn new(id: impl Into<String>) -> Result<SubjectId, VaultError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= MAX_SUBJECT_BYTES
            && id.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(SubjectId(id))
        } else {
            Err(VaultError::BadSubject)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sled key of this subject's key record.
    fn record_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(KEY_PREFIX.len() + self.0.len());
        key.extend_from_slice(KEY_PREFIX);
        key.extend_from_slice(self.0.as_bytes());
        key
    }
}

impl TryFrom<String> for SubjectId {
    type Error = VaultError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        SubjectId::new(id)
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A personal field sealed under its subject's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPii {
    pub subject: SubjectId,
    pub nonce: [u8; NONCE_BYTES],
    /// Ciphertext followed by the 16-byte Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

/// The result of opening a sealed section.
#[derive(Clone, PartialEq, Eq)]
pub enum Opened {
    Plain(Vec<u8>),
    /// The subject was erased: the data is gone for good.
    Erased,
}

/// Shows the length of a plaintext, never its bytes.
impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Opened::Plain(bytes) => write!(f, "Plain(<{} bytes>)", bytes.len()),
            Opened::Erased => f.write_str("Erased"),
        }
    }
}

/// Vault errors. None of them carries key bytes or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "master key file {} does not exist (a master key is generated only for a new, empty vault)",
        path.display()
    )]
    MissingMasterKey { path: PathBuf },
    #[error("the master key does not match this vault")]
    WrongMasterKey,
    #[error("malformed master key file {}: {reason}", path.display())]
    BadMasterKeyFile { path: PathBuf, reason: &'static str },
    #[error("the subject was erased; nothing can be sealed for it any more")]
    SubjectErased,
    #[error("invalid subject id: expected 1 to 128 bytes of printable ASCII without spaces")]
    BadSubject,
    #[error("no data key exists for this subject")]
    UnknownSubject,
    #[error("personal data of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("sealed personal data failed authentication (modified, or moved to another event)")]
    Tampered,
    #[error("corrupt vault record: {what}")]
    Corrupt { what: String },
    #[error(
        "the vault's epoch key files are missing from {} (its data keys are wrapped under them)",
        dir.display()
    )]
    MissingEpochKeys { dir: PathBuf },
    /// The I/O error is in the message and not a `source` (said once in a
    /// report of the chain).
    #[error("vault I/O error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for VaultError {
    fn from(e: io::Error) -> Self {
        VaultError::Io(e)
    }
}

/// An unwrapped data key.
#[derive(Clone)]
struct DataKey([u8; KEY_BYTES]);

impl DataKey {
    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.0))
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for DataKey {}

struct KeyCache {
    keys: HashMap<SubjectId, DataKey>,
    /// Bumped by every erase. A key read from sled is cached only if no erase ran
    /// since the read started, so an erase never leaves its key behind in memory.
    generation: u64,
}

/// The state of a subject's key.
enum KeyState {
    Live(DataKey),
    Erased,
    Missing,
}

/// The epoch keys in use, oldest first; the last is the current one. Two are
/// present only while a rotation runs or after one was interrupted.
struct Epochs {
    list: Vec<Epoch>,
}

impl Epochs {
    fn current(&self) -> &Epoch {
        let current = self.list.last();
        assert!(current.is_some(), "a vault always has a current epoch");
        current.unwrap_or_else(|| unreachable!())
    }

    fn get(&self, number: u32) -> Option<&Epoch> {
        self.list.iter().find(|e| e.number == number)
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The new current epoch.
    pub epoch: u32,
    /// Live data keys wrapped anew under it.
    pub rewrapped_keys: u64,
    /// Epoch key files destroyed.
    pub destroyed_epochs: usize,
}

/// The first half of a rotation, to pass to [`Vault::finish_rotation`].
#[derive(Debug)]
#[must_use = "a rotation is complete only once finished"]
pub struct RotationBegun {
    /// The new current epoch.
    pub epoch: u32,
    /// Live data keys wrapped anew under it.
    pub rewrapped_keys: u64,
    /// The rotation-due marker this rotation covers.
    covered: Option<sled::IVec>,
}

/// The PII vault. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Vault {
    durable: Arc<DurableDb>,
    tree: sled::Tree,
    master: MasterKey,
    epochs: RwLock<Epochs>,
    epochs_dir: PathBuf,
    /// One rotation at a time.
    rotating: std::sync::Mutex<()>,
    cache: RwLock<KeyCache>,
    cache_limit: usize,
    /// Subjects erased since open: caches of opened data compare it to know
    /// they hold nothing erased since they were filled.
    erasures: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("cached_keys", &self.read_cache().keys.len())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault tree of `db` and loads (or, for a new vault and
    /// [`MasterKeySource::GenerateAt`], creates) the master key.
    /// The epoch key files live in `epochs_dir` (created owner-only if missing).
    pub(crate) fn open(
        db: Arc<DurableDb>,
        source: &MasterKeySource,
        epochs_dir: &Path,
    ) -> Result<Vault, VaultError> {
        let tree = db.db().open_tree(TREE_NAME).map_err(sled_err)?;
        let check = tree.get(CHECK_KEY).map_err(sled_err)?;
        let master = match source {
            MasterKeySource::File(path) => read_key_file(path)?
                .ok_or_else(|| VaultError::MissingMasterKey { path: path.clone() })?,
            MasterKeySource::GenerateAt(path) => match read_key_file(path)? {
                Some(key) => key,
                // Never generate a key for a vault that already holds data: every
                // sealed section would become unreadable.
                None if check.is_some() || !tree.is_empty() => {
                    return Err(VaultError::MissingMasterKey { path: path.clone() })
                }
                None => create_key_file(path)?,
            },
        };
        let vault = Vault {
            durable: db,
            tree,
            master,
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                generation: 0,
            }),
            cache_limit: MAX_CACHED_KEYS,
            erasures: std::sync::atomic::AtomicU64::new(0),
            epochs: RwLock::new(Epochs { list: Vec::new() }),
            epochs_dir: epochs_dir.to_path_buf(),
            rotating: std::sync::Mutex::new(()),
        };
        // The master key first: a wrong one is told apart from a bad epoch file.
        if let Some(record) = &check {
            vault.verify_check(record)?;
        }
        vault.load_epochs(check.is_some())?;
        vault.mark_lookup_keys(check.is_some())?;
        if check.is_none() {
            vault.write_check()?;
        }
        Ok(vault)
    }

    /// Loads the epoch key files, or begins epoch 1 for a vault that has none.
    fn load_epochs(&self, master_verified: bool) -> Result<(), VaultError> {
        epoch::ensure_dir(&self.epochs_dir)?;
        let mut list = epoch::load_all(&self.epochs_dir, &self.master, master_verified)?;
        if list.is_empty() {
            match self.first_live_record()? {
                Some(len) if len == RECORD_LEN => {
                    return Err(VaultError::MissingEpochKeys {
                        dir: self.epochs_dir.clone(),
                    })
                }
                // Keys wrapped before epochs: the first rotation moves them under
                // an epoch key, so it is due now.
                Some(_) => self.mark_rotation_due()?,
                None => {}
            }
            list.push(epoch::create(
                &self.epochs_dir,
                1,
                unix_now_s(),
                &self.master,
            )?);
        }
        self.write_epochs().list = list;
        Ok(())
    }

    /// The length of the first live key record, if any.
    fn first_live_record(&self) -> Result<Option<usize>, VaultError> {
        for entry in self.tree.scan_prefix(KEY_PREFIX) {
            let (_, record) = entry.map_err(sled_err)?;
            if record.as_ref() != TOMBSTONE {
                return Ok(Some(record.len()));
            }
        }
        Ok(None)
    }

    /// On the first open by a version with epoch lookup keys, a vault that held
    /// data keeps the master-derived lookup key until its first rotation.
    fn mark_lookup_keys(&self, existing: bool) -> Result<(), VaultError> {
        if self.tree.contains_key(EPOCH_LOOKUP_KEY).map_err(sled_err)? {
            return Ok(());
        }
        if existing {
            self.tree
                .insert(LEGACY_LOOKUP_KEY, &[1u8][..])
                .map_err(sled_err)?;
        }
        self.tree
            .insert(EPOCH_LOOKUP_KEY, &[1u8][..])
            .map_err(sled_err)?;
        self.durable.sync()?;
        Ok(())
    }

    fn mark_rotation_due(&self) -> Result<(), VaultError> {
        let marker: [u8; 8] = random_array()?;
        self.tree
            .insert(ROTATION_DUE_KEY, &marker)
            .map_err(sled_err)?;
        Ok(())
    }

    /// Seals `plaintext` for `subject`, creating the subject's data key on first use.
    /// `event_id` (16 bytes, uuid::Uuid::as_bytes) is the AEAD associated data, so a
    /// sealed section cannot be moved to another event.
    pub fn seal(
        &self,
        subject: &SubjectId,
        event_id: &uuid::Uuid,
        plaintext: &[u8],
    ) -> Result<SealedPii, VaultError> {
        if plaintext.len() > MAX_PII_BYTES {
            return Err(VaultError::TooLarge {
                len: plaintext.len(),
                max: MAX_PII_BYTES,
            });
        }
        let key = match self.key_state(subject)? {
            KeyState::Live(key) => key,
            KeyState::Erased => return Err(VaultError::SubjectErased),
            KeyState::Missing => self.create_data_key(subject)?,
        };
        let nonce: [u8; NONCE_BYTES] = random_array()?;
        let ciphertext = key
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: event_id.as_bytes(),
                },
            )
            .map_err(|_| corrupt("encryption failed"))?;
        Ok(SealedPii {
            subject: subject.clone(),
            nonce,
            ciphertext,
        })
    }

    /// Opens a sealed section: [`Opened::Erased`] once its subject is erased,
    /// [`VaultError::Tampered`] if it was modified or sealed for another event.
    pub fn open_sealed(
        &self,
        sealed: &SealedPii,
        event_id: &uuid::Uuid,
    ) -> Result<Opened, VaultError> {
        let key = match self.key_state(&sealed.subject)? {
            KeyState::Live(key) => key,
            KeyState::Erased => return Ok(Opened::Erased),
            KeyState::Missing => return Err(VaultError::UnknownSubject),
        };
        // `seal` never produces more; spare the copy and the work.
        if sealed.ciphertext.len() > MAX_SEALED_BYTES {
            return Err(VaultError::Tampered);
        }
        key.cipher()
            .decrypt(
                &XNonce::from(sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: event_id.as_bytes(),
                },
            )
            .map(Opened::Plain)
            .map_err(|_| VaultError::Tampered)
    }

    /// How many erasures happened since open. Read it before opening sealed
    /// data to cache: if it changed since, the cached plaintext may be erased.
    pub fn erasures(&self) -> u64 {
        self.erasures.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Deletes the subject's key durably (calls DurableDb::sync). Returns true if a key existed.
    ///
    /// A tombstone takes the key's place, so the subject can never get a new key:
    /// a later `seal` fails with [`VaultError::SubjectErased`]. Erasing a subject that
    /// never had a key still writes the tombstone (and returns false).
    pub fn erase(&self, subject: &SubjectId) -> Result<bool, VaultError> {
        let previous = self
            .tree
            .insert(subject.record_key(), TOMBSTONE)
            .map_err(sled_err)?;
        {
            // After the tombstone is in sled: a lookup that read the old record
            // before it sees a new generation and does not cache the key.
            let mut cache = self.write_cache();
            cache.keys.remove(subject);
            cache.generation = cache.generation.wrapping_add(1);
        }
        self.erasures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // The erased key may linger in an old segment, wrapped under the current
        // epoch key: a rotation destroys that key (within a day, see `rotation_due`).
        self.mark_rotation_due()?;
        self.durable.sync()?;
        let existed = matches!(previous, Some(value) if value.as_ref() != TOMBSTONE);
        tracing::info!(subject = %subject, existed, "vault: subject erased");
        Ok(existed)
    }

    /// A 256-bit key for `purpose` (e.g. `"email-lookup"`), derived from the master
    /// key with HMAC-SHA256: stable across restarts, never stored, different per
    /// purpose. Used for keyed lookup hashes.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.master.bytes)
            .expect("HMAC takes a key of any length");
        mac.update(b"nexus-derive-v1\n");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether a rotation is due: an erasure since the last one in an epoch at
    /// least [`MIN_EPOCH_AGE_SECS`] old, a rotation left unfinished, or a
    /// current epoch older than [`MAX_EPOCH_AGE_SECS`].
    pub fn rotation_due(&self, now_unix_s: u64) -> Result<bool, VaultError> {
        let erased = self.erasures_pending()?;
        let epochs = self.read_epochs();
        let age_s = now_unix_s.saturating_sub(epochs.current().created_unix_s);
        Ok((erased && age_s >= MIN_EPOCH_AGE_SECS)
            || epochs.list.len() > 1
            || age_s >= MAX_EPOCH_AGE_SECS)
    }

    /// Whether a subject was erased (or keys from before epochs exist) since the
    /// last rotation: until the next one, a copy of the data directory and the
    /// master key could still unwrap that key from an old segment.
    pub fn erasures_pending(&self) -> Result<bool, VaultError> {
        self.tree.contains_key(ROTATION_DUE_KEY).map_err(sled_err)
    }

    /// Begins a new epoch and destroys every older one in one call, for tests
    /// of the vault alone: a store with lookup hashes rotates through
    /// `Accounts::rotate_keys`, which moves them between [`Vault::begin_rotation`]
    /// and [`Vault::finish_rotation`].
    #[cfg(test)]
    pub(crate) fn rotate(&self, now_unix_s: u64) -> Result<Rotation, VaultError> {
        let begun = self.begin_rotation(now_unix_s)?;
        self.finish_rotation(begun)
    }

    /// The first half of a rotation: a new epoch key is written (unless an
    /// interrupted rotation left one, which is then completed instead) and every
    /// live data key is wrapped under it and synced. Older epochs stay usable,
    /// and their lookup keys stay in [`Vault::lookup_keys`], until
    /// [`Vault::finish_rotation`]. Sealing and erasing go on meanwhile.
    pub fn begin_rotation(&self, now_unix_s: u64) -> Result<RotationBegun, VaultError> {
        let _one = self.rotating.lock().unwrap_or_else(PoisonError::into_inner);
        let covered = self.tree.get(ROTATION_DUE_KEY).map_err(sled_err)?;
        let number = {
            let epochs = self.read_epochs();
            if epochs.list.len() > 1 {
                epochs.current().number
            } else {
                epochs
                    .current()
                    .number
                    .checked_add(1)
                    .ok_or_else(|| corrupt("epoch numbers are exhausted"))?
            }
        };
        if self.read_epochs().get(number).is_none() {
            let next = epoch::create(&self.epochs_dir, number, now_unix_s, &self.master)?;
            // From here on new data keys are wrapped under the new epoch.
            self.write_epochs().list.push(next);
        }
        let rewrapped_keys = self.rewrap_all(number)?;
        self.durable.sync()?;
        Ok(RotationBegun {
            epoch: number,
            rewrapped_keys,
            covered,
        })
    }

    /// The second half of a rotation: the epoch key files older than the one
    /// [`Vault::begin_rotation`] began are overwritten, synced and removed, and
    /// the lookup key derived from the master key (from before epochs) is given
    /// up. From then on no copy of a key record wrapped before (an old sled
    /// segment, a copy of the data directory taken now) can be unwrapped, and no
    /// lookup hash made before can be recomputed, so an erased subject's data
    /// and address are gone for good.
    ///
    /// Interrupted, it leaves two epochs, both usable; the next rotation (due at
    /// once, see [`Vault::rotation_due`]) finishes the work.
    pub fn finish_rotation(&self, begun: RotationBegun) -> Result<Rotation, VaultError> {
        let _one = self.rotating.lock().unwrap_or_else(PoisonError::into_inner);
        let number = begun.epoch;
        assert_eq!(
            self.read_epochs().current().number,
            number,
            "a rotation finishes the epoch it began"
        );
        // Keys sealed between the halves were wrapped under the new epoch already;
        // this pass only catches a record an erase or seal raced with.
        self.rewrap_all(number)?;
        self.durable.sync()?;
        let retired: Vec<Epoch> = {
            let mut epochs = self.write_epochs();
            let keep = epochs.list.len() - 1;
            epochs.list.drain(..keep).collect()
        };
        for old in &retired {
            epoch::destroy(&old.path)?;
        }
        self.tree.remove(LEGACY_LOOKUP_KEY).map_err(sled_err)?;
        // Clear the marker only if no erasure came after the rotation read it:
        // such a key may have been wrapped under the new epoch first.
        if let Some(marker) = begun.covered {
            let _ = self
                .tree
                .compare_and_swap(ROTATION_DUE_KEY, Some(marker), None::<&[u8]>)
                .map_err(sled_err)?;
        }
        self.durable.sync()?;
        tracing::info!(
            epoch = number,
            rewrapped_keys = begun.rewrapped_keys,
            destroyed = retired.len(),
            "vault: key epoch rotated"
        );
        Ok(Rotation {
            epoch: number,
            rewrapped_keys: begun.rewrapped_keys,
            destroyed_epochs: retired.len(),
        })
    }

    /// The keys of keyed lookup hashes for `purpose` (e.g. `"email-lookup"`),
    /// newest first: one per live epoch, derived from the epoch key with
    /// HMAC-SHA256, and last the key derived from the master key while the vault
    /// still has lookups from before epochs. Hashes are made with the first;
    /// a lookup tries each. A rotation destroys all but the first, so a hash
    /// made under a destroyed key can no longer be recomputed from anything on
    /// the machine.
    pub fn lookup_keys(&self, purpose: &str) -> Result<Vec<[u8; 32]>, VaultError> {
        let mut keys: Vec<[u8; 32]> = self
            .read_epochs()
            .list
            .iter()
            .rev()
            .map(|e| e.key.derive(purpose))
            .collect();
        if self
            .tree
            .contains_key(LEGACY_LOOKUP_KEY)
            .map_err(sled_err)?
        {
            keys.push(self.derive_key(purpose));
        }
        Ok(keys)
    }

    /// Wraps every live data key not yet under epoch `number` under it.
    fn rewrap_all(&self, number: u32) -> Result<u64, VaultError> {
        let mut rewrapped = 0u64;
        for entry in self.tree.scan_prefix(KEY_PREFIX) {
            let (record_key, mut record) = entry.map_err(sled_err)?;
            let subject = std::str::from_utf8(&record_key[KEY_PREFIX.len()..])
                .ok()
                .and_then(|s| SubjectId::new(s).ok())
                .ok_or_else(|| corrupt("key record with an invalid subject id"))?;
            let mut attempts = 0;
            loop {
                let current_epoch = record.len() == RECORD_LEN
                    && record[..EPOCH_NUMBER_BYTES] == number.to_le_bytes();
                if record.as_ref() == TOMBSTONE || current_epoch {
                    break;
                }
                attempts += 1;
                if attempts > MAX_REWRAP_ATTEMPTS {
                    return Err(corrupt("a key record kept changing during a rotation"));
                }
                let fresh = {
                    let epochs = self.read_epochs();
                    let key = self.unwrap_key(&epochs, &subject, &record)?;
                    let target = epochs
                        .get(number)
                        .ok_or_else(|| corrupt("the new epoch vanished"))?;
                    wrap_key(target, &subject, &key)?
                };
                match self
                    .tree
                    .compare_and_swap(&record_key, Some(&record), Some(fresh))
                    .map_err(sled_err)?
                {
                    Ok(()) => {
                        rewrapped += 1;
                        break;
                    }
                    Err(lost) => match lost.current {
                        Some(current) => record = current,
                        None => return Err(corrupt("a key record vanished")),
                    },
                }
            }
        }
        Ok(rewrapped)
    }

    /// Whether the subject was erased (false for a subject that never had a key).
    pub fn is_erased(&self, subject: &SubjectId) -> Result<bool, VaultError> {
        match self.tree.get(subject.record_key()).map_err(sled_err)? {
            None => Ok(false),
            Some(value) if value.as_ref() == TOMBSTONE => Ok(true),
            Some(value) if value.len() == RECORD_LEN || value.len() == LEGACY_RECORD_LEN => {
                Ok(false)
            }
            Some(_) => Err(corrupt("key record of unexpected length")),
        }
    }

    fn read_epochs(&self) -> RwLockReadGuard<'_, Epochs> {
        // Epochs change only under the write guard, in steps that each leave a
        // usable list; a panicking holder cannot break that.
        self.epochs.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_epochs(&self) -> RwLockWriteGuard<'_, Epochs> {
        self.epochs.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_cache(&self) -> RwLockReadGuard<'_, KeyCache> {
        // The cache holds no invariant a panicking holder could break.
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_cache(&self) -> RwLockWriteGuard<'_, KeyCache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache_insert(&self, subject: &SubjectId, key: &DataKey, generation: u64) {
        let mut cache = self.write_cache();
        if cache.generation != generation || cache.keys.contains_key(subject) {
            return;
        }
        if cache.keys.len() >= self.cache_limit {
            cache.keys.clear();
        }
        cache.keys.insert(subject.clone(), key.clone());
    }

    fn key_state(&self, subject: &SubjectId) -> Result<KeyState, VaultError> {
        let generation = {
            let cache = self.read_cache();
            if let Some(key) = cache.keys.get(subject) {
                return Ok(KeyState::Live(key.clone()));
            }
            cache.generation
        };
        match self.tree.get(subject.record_key()).map_err(sled_err)? {
            None => Ok(KeyState::Missing),
            Some(record) => self.decode_record(subject, &record, generation),
        }
    }

    /// Decodes a stored key record (never `Missing`), caching a live key.
    fn decode_record(
        &self,
        subject: &SubjectId,
        record: &[u8],
        generation: u64,
    ) -> Result<KeyState, VaultError> {
        if record == TOMBSTONE {
            return Ok(KeyState::Erased);
        }
        let key = self.unwrap_key(&self.read_epochs(), subject, record)?;
        self.cache_insert(subject, &key, generation);
        Ok(KeyState::Live(key))
    }

    /// Creates the subject's data key, or takes the one a concurrent first seal
    /// stored before us (compare-and-swap: every sealer ends up with one key).
    ///
    /// The key is inserted without a sync: it becomes durable with the next log
    /// group commit. The log shares this `DurableDb` and syncs the whole database
    /// before acknowledging any append, and an event referencing the key is always
    /// appended after the seal, so no durable event refers to a lost key.
    fn create_data_key(&self, subject: &SubjectId) -> Result<DataKey, VaultError> {
        // Read before the swap: an erase after it bumps the generation, so the
        // key is not cached.
        let generation = self.read_cache().generation;
        let key = DataKey(random_array()?);
        let record_key = subject.record_key();
        let lost = {
            // Wrapped and stored under one read guard: a rotation switches the
            // current epoch only between two creations, so it re-wraps every
            // key stored under the epoch it retires.
            let epochs = self.read_epochs();
            let wrapped = wrap_key(epochs.current(), subject, &key)?;
            self.tree
                .compare_and_swap(&record_key, None::<&[u8]>, Some(wrapped.as_slice()))
                .map_err(sled_err)?
        };
        match lost {
            Ok(()) => {
                self.cache_insert(subject, &key, generation);
                Ok(key)
            }
            // Records are never removed, so a lost swap saw a present value.
            Err(lost) => match lost.current {
                Some(current) => match self.decode_record(subject, &current, generation)? {
                    KeyState::Live(theirs) => Ok(theirs),
                    _ => Err(VaultError::SubjectErased),
                },
                None => Err(corrupt("a key record vanished")),
            },
        }
    }

    /// Unwraps a stored data key: a record of the current format under the epoch
    /// key it names, a record written before epochs under the master key.
    fn unwrap_key(
        &self,
        epochs: &Epochs,
        subject: &SubjectId,
        record: &[u8],
    ) -> Result<DataKey, VaultError> {
        let (cipher, wrapped) = match record.len() {
            LEGACY_RECORD_LEN => (self.master.cipher(), record),
            RECORD_LEN => {
                let (number, wrapped) = record.split_at(EPOCH_NUMBER_BYTES);
                let number = u32::from_le_bytes(number.try_into().map_err(|_| corrupt("epoch"))?);
                let epoch = epochs
                    .get(number)
                    .ok_or_else(|| corrupt("key record of a destroyed epoch"))?;
                (epoch.key.cipher(), wrapped)
            }
            _ => return Err(corrupt("key record of unexpected length")),
        };
        let (nonce, wrapped) = wrapped.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).map_err(|_| corrupt("key record nonce"))?;
        // The master key was verified against the check record at open and the
        // epoch keys authenticated, so a failure here is a damaged (or moved) record.
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &nonce,
                    Payload {
                        msg: wrapped,
                        aad: subject.as_str().as_bytes(),
                    },
                )
                .map_err(|_| corrupt("wrapped data key failed authentication"))?,
        );
        if plain.len() != KEY_BYTES {
            return Err(corrupt("wrapped data key of unexpected length"));
        }
        let mut key = DataKey([0u8; KEY_BYTES]);
        key.0.copy_from_slice(&plain);
        Ok(key)
    }

    fn seal_check(&self) -> Result<Vec<u8>, VaultError> {
        let nonce: [u8; NONCE_BYTES] = random_array()?;
        let sealed = self
            .master
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: CHECK_PLAINTEXT,
                    aad: CHECK_AD,
                },
            )
            .map_err(|_| corrupt("check record encryption failed"))?;
        let mut record = nonce.to_vec();
        record.extend_from_slice(&sealed);
        Ok(record)
    }

    fn verify_check(&self, record: &[u8]) -> Result<(), VaultError> {
        if record.len() != NONCE_BYTES + CHECK_PLAINTEXT.len() + TAG_BYTES {
            return Err(corrupt("check record of unexpected length"));
        }
        let (nonce, sealed) = record.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).map_err(|_| corrupt("check record nonce"))?;
        match self.master.cipher().decrypt(
            &nonce,
            Payload {
                msg: sealed,
                aad: CHECK_AD,
            },
        ) {
            Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
            _ => Err(VaultError::WrongMasterKey),
        }
    }

    /// Writes the check record of a vault that has none, and syncs.
    fn write_check(&self) -> Result<(), VaultError> {
        // Keys without a check record (only if someone removed it): the first
        // live key must unwrap, or this is the wrong master key.
        for entry in self.tree.scan_prefix(KEY_PREFIX) {
            let (record_key, record) = entry.map_err(sled_err)?;
            if record.as_ref() == TOMBSTONE {
                continue;
            }
            let subject = std::str::from_utf8(&record_key[KEY_PREFIX.len()..])
                .ok()
                .and_then(|s| SubjectId::new(s).ok())
                .ok_or_else(|| corrupt("key record with an invalid subject id"))?;
            if self
                .unwrap_key(&self.read_epochs(), &subject, &record)
                .is_err()
            {
                return Err(VaultError::WrongMasterKey);
            }
            break;
        }
        let record = self.seal_check()?;
        if let Err(lost) = self
            .tree
            .compare_and_swap(CHECK_KEY, None::<&[u8]>, Some(record))
            .map_err(sled_err)?
        {
            // Another opener wrote one first: it must match our key.
            match lost.current {
                Some(current) => self.verify_check(&current)?,
                None => return Err(corrupt("check record vanished")),
            }
        }
        self.durable.sync()?;
        Ok(())
    }
}

fn corrupt(what: &str) -> VaultError {
    VaultError::Corrupt {
        what: what.to_owned(),
    }
}

fn sled_err(e: sled::Error) -> VaultError {
    match e {
        sled::Error::Corruption { .. } => corrupt("sled reported corruption"),
        other => VaultError::Io(sled_to_io(other)),
    }
}

fn random_array<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| {
        VaultError::Io(io::Error::other(format!(
            "operating system random number generator failed: {e}"
        )))
    })?;
    Ok(out)
}

/// Reads a master key file; `None` if it does not exist.
fn read_key_file(path: &Path) -> Result<Option<MasterKey>, VaultError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    warn_if_readable_by_others(&file, path);
    // One byte more than a valid file can hold, to detect a longer one.
    let mut buf = Zeroizing::new([0u8; MAX_KEY_FILE_BYTES + 1]);
    let mut len = 0;
    let read = loop {
        if len == buf.len() {
            break Ok(());
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break Ok(()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let parsed = read.map(|()| MasterKey::parse(&buf[..len]));
    drop(buf);
    match parsed? {
        Ok(key) => Ok(Some(key)),
        Err(reason) => Err(VaultError::BadMasterKeyFile {
            path: path.to_path_buf(),
            reason,
        }),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &File, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = file.metadata() {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "vault: master key file is accessible to group or others; expected mode 0600"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_file: &File, _path: &Path) {}

/// Generates a master key and writes it to a new file (mode 0600), durably. If
/// the file appeared meanwhile, loads that one instead.
fn create_key_file(path: &Path) -> Result<MasterKey, VaultError> {
    let key = MasterKey::generate()?;
    let mut options = File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return read_key_file(path)?.ok_or_else(|| VaultError::MissingMasterKey {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let mut contents = Zeroizing::new([0u8; MAX_KEY_FILE_BYTES]);
    let written = hex::encode_to_slice(key.bytes, &mut contents[..2 * KEY_BYTES])
        .map_err(|_| corrupt("master key encoding failed"))
        .and_then(|()| {
            contents[2 * KEY_BYTES] = b'\n';
            file.write_all(&contents[..])?;
            file.sync_all()?;
            Ok(())
        });
    drop(contents);
    if let Err(e) = written {
        // A partial file would make every later open fail as malformed.
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    sync_parent_dir(path)?;
    tracing::info!(path = %path.display(), "vault: generated a new master key");
    Ok(key)
}

/// Makes the creation of `path` durable.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Makes the creation or removal of entries of `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Seconds since the Unix epoch by the system clock (0 if it is before 1970).
fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Wraps a data key under an epoch key, the subject id as associated data.
fn wrap_key(epoch: &Epoch, subject: &SubjectId, key: &DataKey) -> Result<Vec<u8>, VaultError> {
    let nonce: [u8; NONCE_BYTES] = random_array()?;
    let wrapped = epoch
        .key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &key.0,
                aad: subject.as_str().as_bytes(),
            },
        )
        .map_err(|_| corrupt("key wrapping failed"))?;
    let mut record = Vec::with_capacity(RECORD_LEN);
    record.extend_from_slice(&epoch.number.to_le_bytes());
    record.extend_from_slice(&nonce);
    record.extend_from_slice(&wrapped);
    assert_eq!(record.len(), RECORD_LEN);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use tempfile::TempDir;
    use uuid::Uuid;

    const DB_CACHE: u64 = 64 << 20;

    /// A db directory and a key file path side by side in one temp dir.
    struct Env {
        dir: TempDir,
    }

    impl Env {
        fn new() -> Env {
            Env {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn db_dir(&self) -> PathBuf {
            self.dir.path().join("db")
        }

        fn key_path(&self) -> PathBuf {
            self.dir.path().join("master.key")
        }

        fn db(&self) -> Arc<DurableDb> {
            Arc::new(open_db_retrying(&self.db_dir()))
        }

        fn try_vault(&self, source: &MasterKeySource) -> Result<Vault, VaultError> {
            Vault::open(self.db(), source, &self.epochs_dir())
        }

        fn epochs_dir(&self) -> PathBuf {
            self.dir.path().join("epochs")
        }

        /// The default: GenerateAt the env's key path.
        fn vault(&self) -> Vault {
            self.try_vault(&MasterKeySource::GenerateAt(self.key_path()))
                .unwrap()
        }
    }

    /// `DurableDb::open` itself waits out sled's lock release on a quick reopen.
    fn open_db_retrying(dir: &Path) -> DurableDb {
        DurableDb::open(dir, DB_CACHE).expect("open the test db")
    }

    fn subject(s: &str) -> SubjectId {
        SubjectId::new(s).unwrap()
    }

    fn write_random_key_file(path: &Path) {
        let bytes: [u8; 32] = random_array().unwrap();
        std::fs::write(path, format!("{}\n", hex::encode(bytes))).unwrap();
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    /// Whether `needle` occurs in any file under `dir`, read as raw bytes.
    fn raw_files_contain(dir: &Path, needle: &[u8]) -> bool {
        files_under(dir).iter().any(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
    }

    #[test]
    fn seal_open_round_trip() {
        let env = Env::new();
        let vault = env.vault();
        let alice = subject("account:alice");
        let event = Uuid::new_v4();
        for plaintext in [&b""[..], b"+15551234567", &[0xffu8; MAX_PII_BYTES]] {
            let sealed = vault.seal(&alice, &event, plaintext).unwrap();
            assert_eq!(sealed.subject, alice);
            assert_eq!(sealed.ciphertext.len(), plaintext.len() + TAG_BYTES);
            assert_eq!(
                vault.open_sealed(&sealed, &event).unwrap(),
                Opened::Plain(plaintext.to_vec())
            );
        }
        // Fresh nonces: the same plaintext seals differently each time.
        let a = vault.seal(&alice, &event, b"same").unwrap();
        let b = vault.seal(&alice, &event, b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn wrong_event_id_is_tampered() {
        let env = Env::new();
        let vault = env.vault();
        let sealed = vault
            .seal(&subject("account:a"), &Uuid::new_v4(), b"phone")
            .unwrap();
        assert!(matches!(
            vault.open_sealed(&sealed, &Uuid::new_v4()),
            Err(VaultError::Tampered)
        ));
    }

    #[test]
    fn modified_ciphertext_is_tampered() {
        let env = Env::new();
        let vault = env.vault();
        let event = Uuid::new_v4();
        let sealed = vault
            .seal(&subject("account:a"), &event, b"+15551234567")
            .unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 0x01;
            assert!(matches!(
                vault.open_sealed(&bad, &event),
                Err(VaultError::Tampered)
            ));
        }
        let mut bad = sealed.clone();
        bad.nonce[0] ^= 0x80;
        assert!(matches!(
            vault.open_sealed(&bad, &event),
            Err(VaultError::Tampered)
        ));
        for len in [0, 5, TAG_BYTES, sealed.ciphertext.len() - 1] {
            let mut bad = sealed.clone();
            bad.ciphertext.truncate(len);
            assert!(matches!(
                vault.open_sealed(&bad, &event),
                Err(VaultError::Tampered)
            ));
        }
        let mut bad = sealed.clone();
        bad.ciphertext = vec![0; MAX_PII_BYTES + TAG_BYTES + 1];
        assert!(matches!(
            vault.open_sealed(&bad, &event),
            Err(VaultError::Tampered)
        ));
        assert_eq!(
            vault.open_sealed(&sealed, &event).unwrap(),
            Opened::Plain(b"+15551234567".to_vec())
        );
    }

    #[test]
    fn section_moved_to_another_subject_is_tampered() {
        let env = Env::new();
        let vault = env.vault();
        let event = Uuid::new_v4();
        vault.seal(&subject("account:b"), &event, b"x").unwrap();
        let mut sealed = vault
            .seal(&subject("account:a"), &event, b"secret")
            .unwrap();
        sealed.subject = subject("account:b");
        assert!(matches!(
            vault.open_sealed(&sealed, &event),
            Err(VaultError::Tampered)
        ));
    }

    #[test]
    fn open_for_a_subject_without_key_is_unknown_subject() {
        let env = Env::new();
        let vault = env.vault();
        let sealed = SealedPii {
            subject: subject("account:ghost"),
            nonce: [0; NONCE_BYTES],
            ciphertext: vec![0; 20],
        };
        assert!(matches!(
            vault.open_sealed(&sealed, &Uuid::new_v4()),
            Err(VaultError::UnknownSubject)
        ));
        // Opening never creates a key.
        assert!(vault
            .tree
            .get(subject("account:ghost").record_key())
            .unwrap()
            .is_none());
    }

    #[test]
    fn erase_makes_sealed_sections_erased() {
        let env = Env::new();
        let vault = env.vault();
        let alice = subject("account:alice");
        let sections: Vec<(Uuid, SealedPii)> = (0..5)
            .map(|i| {
                let event = Uuid::new_v4();
                let sealed = vault
                    .seal(&alice, &event, format!("pii {i}").as_bytes())
                    .unwrap();
                (event, sealed)
            })
            .collect();
        assert!(!vault.is_erased(&alice).unwrap());
        let syncs_before = vault.durable.sync_count();
        assert!(vault.erase(&alice).unwrap());
        assert!(vault.durable.sync_count() > syncs_before, "erase must sync");
        assert!(vault.is_erased(&alice).unwrap());
        for (event, sealed) in &sections {
            assert_eq!(vault.open_sealed(sealed, event).unwrap(), Opened::Erased);
        }
        // Erasing again is harmless and reports that no key was left.
        assert!(!vault.erase(&alice).unwrap());
    }

    #[test]
    fn erase_survives_reopen() {
        let env = Env::new();
        let alice = subject("account:alice");
        let event = Uuid::new_v4();
        let sealed = {
            let vault = env.vault();
            let sealed = vault.seal(&alice, &event, b"alice@example.com").unwrap();
            assert!(vault.erase(&alice).unwrap());
            sealed
        };
        let vault = env.vault();
        assert!(vault.is_erased(&alice).unwrap());
        assert_eq!(vault.open_sealed(&sealed, &event).unwrap(), Opened::Erased);
        assert!(matches!(
            vault.seal(&alice, &event, b"again"),
            Err(VaultError::SubjectErased)
        ));
    }

    #[test]
    fn erase_is_on_disk_when_it_returns() {
        // Copy the files while the db is still open (what a crash right after
        // `erase` returned would leave behind) and open the copy.
        let env = Env::new();
        let alice = subject("account:alice");
        let event = Uuid::new_v4();
        let vault = env.vault();
        let sealed = vault.seal(&alice, &event, b"alice@example.com").unwrap();
        vault.durable.sync().unwrap(); // the log's group commit of the event
        assert!(vault.erase(&alice).unwrap());

        let copy = tempfile::tempdir().unwrap();
        for file in files_under(&env.db_dir()) {
            let rel = file.strip_prefix(env.db_dir()).unwrap();
            let target = copy.path().join(rel);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&file, &target).unwrap();
        }
        let db = Arc::new(DurableDb::open(copy.path(), DB_CACHE).unwrap());
        let copied = Vault::open(
            db,
            &MasterKeySource::File(env.key_path()),
            &env.epochs_dir(),
        )
        .unwrap();
        assert!(copied.is_erased(&alice).unwrap());
        assert_eq!(copied.open_sealed(&sealed, &event).unwrap(), Opened::Erased);
        drop(vault);
    }

    #[test]
    fn seal_after_erase_is_subject_erased() {
        let env = Env::new();
        let vault = env.vault();
        let alice = subject("account:alice");
        let event = Uuid::new_v4();
        vault.seal(&alice, &event, b"before").unwrap();
        vault.erase(&alice).unwrap();
        assert!(matches!(
            vault.seal(&alice, &event, b"after"),
            Err(VaultError::SubjectErased)
        ));
        // The tombstone is still in place: no new key was created.
        assert!(vault.is_erased(&alice).unwrap());
    }

    #[test]
    fn erasing_a_subject_that_never_had_a_key() {
        let env = Env::new();
        let vault = env.vault();
        let sms = subject("sms:0190f3c2");
        assert!(!vault.is_erased(&sms).unwrap());
        assert!(!vault.erase(&sms).unwrap());
        assert!(vault.is_erased(&sms).unwrap());
        assert!(matches!(
            vault.seal(&sms, &Uuid::new_v4(), b"123456"),
            Err(VaultError::SubjectErased)
        ));
    }

    #[test]
    fn erasing_one_subject_does_not_affect_another() {
        let env = Env::new();
        let alice = subject("account:alice");
        let bob = subject("account:bob");
        let event = Uuid::new_v4();
        let (a, b) = {
            let vault = env.vault();
            let a = vault.seal(&alice, &event, b"alice pii").unwrap();
            let b = vault.seal(&bob, &event, b"bob pii").unwrap();
            vault.erase(&alice).unwrap();
            assert_eq!(vault.open_sealed(&a, &event).unwrap(), Opened::Erased);
            assert_eq!(
                vault.open_sealed(&b, &event).unwrap(),
                Opened::Plain(b"bob pii".to_vec())
            );
            (a, b)
        };
        let vault = env.vault();
        assert_eq!(vault.open_sealed(&a, &event).unwrap(), Opened::Erased);
        assert_eq!(
            vault.open_sealed(&b, &event).unwrap(),
            Opened::Plain(b"bob pii".to_vec())
        );
        assert!(!vault.is_erased(&bob).unwrap());
        vault.seal(&bob, &event, b"more").unwrap();
    }

    #[test]
    fn generate_at_creates_a_0600_key_file_and_reuses_it() {
        use std::os::unix::fs::PermissionsExt;
        let env = Env::new();
        assert!(!env.key_path().exists());
        let alice = subject("account:alice");
        let event = Uuid::new_v4();
        let sealed = {
            let vault = env.vault();
            vault.seal(&alice, &event, b"pii").unwrap()
        };
        let meta = std::fs::metadata(env.key_path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let contents = std::fs::read_to_string(env.key_path()).unwrap();
        assert_eq!(contents.len(), 65);
        assert!(contents.ends_with('\n'));
        assert!(contents[..64]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));

        // Reopen: the same key is loaded, not regenerated.
        let vault = env.vault();
        assert_eq!(std::fs::read_to_string(env.key_path()).unwrap(), contents);
        assert_eq!(
            vault.open_sealed(&sealed, &event).unwrap(),
            Opened::Plain(b"pii".to_vec())
        );
        drop(vault);
        // And File() works with the generated file.
        let vault = env
            .try_vault(&MasterKeySource::File(env.key_path()))
            .unwrap();
        assert_eq!(
            vault.open_sealed(&sealed, &event).unwrap(),
            Opened::Plain(b"pii".to_vec())
        );
    }

    #[test]
    fn reopen_with_a_different_key_file_is_wrong_master_key() {
        let env = Env::new();
        drop(env.vault());
        let other = env.dir.path().join("other.key");
        write_random_key_file(&other);
        assert!(matches!(
            env.try_vault(&MasterKeySource::File(other.clone())),
            Err(VaultError::WrongMasterKey)
        ));
        assert!(matches!(
            env.try_vault(&MasterKeySource::GenerateAt(other)),
            Err(VaultError::WrongMasterKey)
        ));
    }

    #[test]
    fn wrong_key_is_detected_even_without_check_record() {
        let env = Env::new();
        {
            let vault = env.vault();
            vault
                .seal(&subject("account:a"), &Uuid::new_v4(), b"x")
                .unwrap();
            vault.tree.remove(CHECK_KEY).unwrap();
            vault.durable.sync().unwrap();
        }
        let other = env.dir.path().join("other.key");
        write_random_key_file(&other);
        assert!(matches!(
            env.try_vault(&MasterKeySource::File(other)),
            Err(VaultError::WrongMasterKey)
        ));
        // The right key rewrites the check record.
        let vault = env.vault();
        assert!(vault.tree.get(CHECK_KEY).unwrap().is_some());
    }

    #[test]
    fn generate_at_never_replaces_the_key_of_an_existing_vault() {
        let env = Env::new();
        drop(env.vault());
        std::fs::remove_file(env.key_path()).unwrap();
        assert!(matches!(
            env.try_vault(&MasterKeySource::GenerateAt(env.key_path())),
            Err(VaultError::MissingMasterKey { .. })
        ));
        assert!(
            !env.key_path().exists(),
            "no new key file may be left behind"
        );
    }

    #[test]
    fn missing_file_source_is_missing_master_key() {
        let env = Env::new();
        assert!(matches!(
            env.try_vault(&MasterKeySource::File(env.key_path())),
            Err(VaultError::MissingMasterKey { .. })
        ));
        assert!(!env.key_path().exists());
    }

    #[test]
    fn malformed_key_files_are_bad_master_key_file() {
        let secretish = "0123456789abcdef".repeat(4);
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\n".to_vec(),
            secretish.as_bytes()[..63].to_vec(),
            format!("{secretish}0").into_bytes(),
            secretish.to_uppercase().into_bytes(),
            format!("{secretish}\n\n").into_bytes(),
            format!("{secretish}\r\n").into_bytes(),
            format!(" {secretish}").into_bytes(),
            format!("{}zz", &secretish[..62]).into_bytes(),
            vec![0xff; 64],
            vec![b'a'; 10_000],
        ];
        for contents in cases {
            let env = Env::new();
            std::fs::write(env.key_path(), &contents).unwrap();
            for source in [
                MasterKeySource::File(env.key_path()),
                MasterKeySource::GenerateAt(env.key_path()),
            ] {
                let err = env.try_vault(&source).unwrap_err();
                assert!(
                    matches!(err, VaultError::BadMasterKeyFile { .. }),
                    "{contents:?}: {err:?}"
                );
                let shown = format!("{err} {err:?}");
                assert!(!shown.contains(&secretish[..16]), "{shown}");
            }
            // The malformed file is left alone.
            assert_eq!(std::fs::read(env.key_path()).unwrap(), contents);
        }
    }

    #[test]
    fn key_file_with_or_without_trailing_newline_loads() {
        for newline in ["", "\n"] {
            let env = Env::new();
            let hex_key = hex::encode(random_array::<32>().unwrap());
            std::fs::write(env.key_path(), format!("{hex_key}{newline}")).unwrap();
            let vault = env
                .try_vault(&MasterKeySource::File(env.key_path()))
                .unwrap();
            let event = Uuid::new_v4();
            let sealed = vault.seal(&subject("a"), &event, b"pii").unwrap();
            assert_eq!(
                vault.open_sealed(&sealed, &event).unwrap(),
                Opened::Plain(b"pii".to_vec())
            );
        }
    }

    #[test]
    fn raw_files_never_contain_sealed_plaintext() {
        const EMAIL: &[u8] = b"alice.sealed@example.com";
        let env = Env::new();
        let first_ciphertext = {
            let db = env.db();
            let vault = Vault::open(
                Arc::clone(&db),
                &MasterKeySource::GenerateAt(env.key_path()),
                &env.epochs_dir(),
            )
            .unwrap();
            // Stand-in for the log: the sealed sections go into another tree.
            let events = db.db().open_tree("events").unwrap();
            let mut first = None;
            for i in 0..200 {
                let event = Uuid::new_v4();
                let sealed = vault
                    .seal(&subject(&format!("account:{i}")), &event, EMAIL)
                    .unwrap();
                first.get_or_insert_with(|| sealed.ciphertext.clone());
                events
                    .insert(event.as_bytes(), bincode::serialize(&sealed).unwrap())
                    .unwrap();
            }
            db.sync().unwrap();
            first.unwrap()
        };
        let master_hex = std::fs::read_to_string(env.key_path()).unwrap();
        let master_raw = hex::decode(master_hex.trim_end()).unwrap();

        assert!(!files_under(&env.db_dir()).is_empty());
        assert!(
            raw_files_contain(&env.db_dir(), &first_ciphertext),
            "the sealed sections must have reached the files"
        );
        assert!(!raw_files_contain(&env.db_dir(), EMAIL));
        assert!(!raw_files_contain(&env.db_dir(), &master_raw));
        assert!(!raw_files_contain(
            &env.db_dir(),
            master_hex.trim_end().as_bytes()
        ));

        // The same helper finds a plain value written the same way.
        let plain = tempfile::tempdir().unwrap();
        {
            let db = DurableDb::open(plain.path(), DB_CACHE).unwrap();
            let tree = db.db().open_tree("plain").unwrap();
            tree.insert(b"e", EMAIL).unwrap();
            db.sync().unwrap();
        }
        assert!(raw_files_contain(plain.path(), EMAIL));
    }

    #[test]
    fn concurrent_first_seals_agree_on_one_key() {
        const THREADS: usize = 8;
        let env = Env::new();
        let order = subject("order:0190f3c2-race");
        let sealed: Vec<(Uuid, SealedPii)> = {
            let vault = Arc::new(env.vault());
            let barrier = Arc::new(Barrier::new(THREADS));
            let handles: Vec<_> = (0..THREADS)
                .map(|i| {
                    let vault = Arc::clone(&vault);
                    let barrier = Arc::clone(&barrier);
                    let order = order.clone();
                    std::thread::spawn(move || {
                        let event = Uuid::new_v4();
                        barrier.wait();
                        let sealed = vault
                            .seal(&order, &event, format!("pii {i}").as_bytes())
                            .unwrap();
                        (event, sealed)
                    })
                })
                .collect();
            let sealed: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            for (i, (event, s)) in sealed.iter().enumerate() {
                assert_eq!(
                    vault.open_sealed(s, event).unwrap(),
                    Opened::Plain(format!("pii {i}").into_bytes())
                );
            }
            vault.durable.sync().unwrap();
            sealed
        };
        // After a restart (empty cache) the stored key opens every section.
        let vault = env.vault();
        for (i, (event, s)) in sealed.iter().enumerate() {
            assert_eq!(
                vault.open_sealed(s, event).unwrap(),
                Opened::Plain(format!("pii {i}").into_bytes())
            );
        }
        assert_eq!(vault.tree.scan_prefix(KEY_PREFIX).count(), 1);
    }

    #[test]
    fn concurrent_seal_and_erase_leave_no_usable_key() {
        for round in 0..20 {
            let env = Env::new();
            let vault = Arc::new(env.vault());
            let s = subject(&format!("account:{round}"));
            let barrier = Arc::new(Barrier::new(2));
            let sealer = {
                let (vault, barrier, s) = (Arc::clone(&vault), Arc::clone(&barrier), s.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..50)
                        .map(|_| {
                            let event = Uuid::new_v4();
                            (event, vault.seal(&s, &event, b"pii"))
                        })
                        .collect::<Vec<_>>()
                })
            };
            barrier.wait();
            vault.erase(&s).unwrap();
            let results = sealer.join().unwrap();
            for (event, result) in results {
                match result {
                    Ok(sealed) => {
                        assert_eq!(vault.open_sealed(&sealed, &event).unwrap(), Opened::Erased)
                    }
                    Err(e) => assert!(matches!(e, VaultError::SubjectErased)),
                }
            }
            assert!(!vault.read_cache().keys.contains_key(&s));
        }
    }

    #[test]
    fn subject_id_validation() {
        assert_eq!(subject("a").as_str(), "a");
        assert_eq!(
            subject("order:01J-x_y/z~!").to_string(),
            "order:01J-x_y/z~!"
        );
        SubjectId::new("x".repeat(MAX_SUBJECT_BYTES)).unwrap();
        for bad in [
            String::new(),
            "x".repeat(MAX_SUBJECT_BYTES + 1),
            "has space".to_owned(),
            "tab\there".to_owned(),
            "new\nline".to_owned(),
            "nul\0".to_owned(),
            "caf\u{e9}".to_owned(),
            "\u{7f}".to_owned(),
        ] {
            assert!(matches!(SubjectId::new(bad), Err(VaultError::BadSubject)));
        }
    }

    #[test]
    fn sealed_pii_serde_round_trip_validates_subject() {
        let env = Env::new();
        let vault = env.vault();
        let event = Uuid::new_v4();
        let sealed = vault.seal(&subject("account:a"), &event, b"pii").unwrap();
        let bytes = bincode::serialize(&sealed).unwrap();
        let back: SealedPii = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, sealed);
        assert_eq!(
            vault.open_sealed(&back, &event).unwrap(),
            Opened::Plain(b"pii".to_vec())
        );
        // A subject id is serialised as a plain string; a bad one is refused.
        assert_eq!(
            bincode::serialize(&subject("ab")).unwrap(),
            bincode::serialize("ab").unwrap()
        );
        let bad = bincode::serialize("bad subject").unwrap();
        assert!(bincode::deserialize::<SubjectId>(&bad).is_err());
        assert!(bincode::deserialize::<SealedPii>(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn too_large_plaintext_is_rejected() {
        let env = Env::new();
        let vault = env.vault();
        let s = subject("account:a");
        let err = vault
            .seal(&s, &Uuid::new_v4(), &vec![1; MAX_PII_BYTES + 1])
            .unwrap_err();
        assert!(matches!(
            err,
            VaultError::TooLarge {
                len,
                max: MAX_PII_BYTES
            } if len == MAX_PII_BYTES + 1
        ));
        // Rejected before a key is created.
        assert!(vault.tree.get(s.record_key()).unwrap().is_none());
    }

    #[test]
    fn debug_and_errors_show_no_secrets() {
        let env = Env::new();
        let vault = env.vault();
        let master_hex = std::fs::read_to_string(env.key_path()).unwrap();
        assert_eq!(format!("{:?}", vault.master), "MasterKey(..)");
        let shown = format!("{vault:?}");
        assert!(!shown.contains(master_hex.trim_end()), "{shown}");
        assert!(shown.starts_with("Vault"));

        let event = Uuid::new_v4();
        let sealed = vault
            .seal(&subject("a"), &event, b"alice.debug@example.com")
            .unwrap();
        let opened = vault.open_sealed(&sealed, &event).unwrap();
        let shown = format!("{opened:?}");
        assert_eq!(shown, "Plain(<23 bytes>)");
        assert_eq!(format!("{:?}", Opened::Erased), "Erased");

        for err in [
            VaultError::WrongMasterKey,
            VaultError::Tampered,
            VaultError::SubjectErased,
            VaultError::MissingMasterKey {
                path: env.key_path(),
            },
        ] {
            assert!(!format!("{err} {err:?}").contains(master_hex.trim_end()));
        }
    }

    fn epoch_files(env: &Env) -> Vec<PathBuf> {
        files_under(&env.epochs_dir())
    }

    #[test]
    fn rotation_keeps_live_subjects_and_destroys_the_old_epoch() {
        let env = Env::new();
        let (alice, bob) = (subject("account:alice"), subject("account:bob"));
        let (ea, eb) = (Uuid::new_v4(), Uuid::new_v4());
        let vault = env.vault();
        let now = unix_now_s();
        assert!(
            !vault.rotation_due(now).unwrap(),
            "a new vault needs no rotation"
        );
        let sa = vault.seal(&alice, &ea, b"alice@example.com").unwrap();
        let sb = vault.seal(&bob, &eb, b"bob@example.com").unwrap();
        let first = epoch_files(&env);
        assert_eq!(first.len(), 1);
        assert!(vault.erase(&bob).unwrap());
        assert!(vault.erasures_pending().unwrap());
        assert!(!vault.rotation_due(now).unwrap(), "erasures are batched");
        assert!(
            vault.rotation_due(now + MIN_EPOCH_AGE_SECS).unwrap(),
            "an erasure makes a rotation due once the epoch is old enough"
        );

        let rotation = vault.rotate(now).unwrap();
        assert_eq!(
            rotation,
            Rotation {
                epoch: 2,
                rewrapped_keys: 1,
                destroyed_epochs: 1
            }
        );
        assert!(!first[0].exists(), "the old epoch's file is gone");
        assert_eq!(epoch_files(&env).len(), 1);
        assert!(!vault.erasures_pending().unwrap());
        assert!(!vault.rotation_due(now + MIN_EPOCH_AGE_SECS).unwrap());
        assert!(
            vault.rotation_due(now + MAX_EPOCH_AGE_SECS).unwrap(),
            "epochs age out"
        );
        assert_eq!(
            vault.open_sealed(&sa, &ea).unwrap(),
            Opened::Plain(b"alice@example.com".to_vec())
        );
        drop(vault);

        let vault = env.vault();
        let record = vault.tree.get(alice.record_key()).unwrap().unwrap();
        assert_eq!(&record[..EPOCH_NUMBER_BYTES], &2u32.to_le_bytes());
        assert_eq!(
            vault.open_sealed(&sa, &ea).unwrap(),
            Opened::Plain(b"alice@example.com".to_vec())
        );
        assert_eq!(vault.open_sealed(&sb, &eb).unwrap(), Opened::Erased);
        // New keys go under the new epoch too.
        let carol = subject("account:carol");
        let ec = Uuid::new_v4();
        let sc = vault.seal(&carol, &ec, b"carol").unwrap();
        assert_eq!(vault.rotate(now).unwrap().rewrapped_keys, 2);
        assert_eq!(
            vault.open_sealed(&sc, &ec).unwrap(),
            Opened::Plain(b"carol".to_vec())
        );
    }

    #[test]
    fn lookup_keys_follow_the_epochs_and_a_vault_from_before_epochs_keeps_its_own_until_a_rotation()
    {
        // A new vault derives its lookup keys from its epoch only.
        let env = Env::new();
        let vault = env.vault();
        let first = vault.lookup_keys("email-lookup").unwrap();
        assert_eq!(first.len(), 1);
        assert_ne!(first[0], vault.derive_key("email-lookup"));
        assert_ne!(first[0], vault.lookup_keys("another-purpose").unwrap()[0]);
        // Mid-rotation: the new key first, the old one still tried.
        let begun = vault.begin_rotation(unix_now_s()).unwrap();
        let during = vault.lookup_keys("email-lookup").unwrap();
        assert_eq!(during.len(), 2);
        assert_eq!(during[1], first[0]);
        vault.finish_rotation(begun).unwrap();
        let after = vault.lookup_keys("email-lookup").unwrap();
        assert_eq!(after, vec![during[0]], "the old lookup key is gone");
        drop(vault);

        // A vault written before epoch lookup keys (no marker) that holds data
        // keeps the master-derived key, last, until its first rotation.
        let env = Env::new();
        let vault = env.vault();
        vault
            .seal(&subject("account:old"), &Uuid::new_v4(), b"x")
            .unwrap();
        vault.tree.remove(EPOCH_LOOKUP_KEY).unwrap();
        drop(vault);
        let vault = env.vault();
        let legacy = vault.lookup_keys("email-lookup").unwrap();
        assert_eq!(legacy.len(), 2);
        assert_eq!(legacy[1], vault.derive_key("email-lookup"));
        drop(vault);
        let vault = env.vault();
        assert_eq!(
            vault.lookup_keys("email-lookup").unwrap(),
            legacy,
            "kept across opens"
        );
        vault.rotate(unix_now_s()).unwrap();
        let rotated = vault.lookup_keys("email-lookup").unwrap();
        assert_eq!(rotated.len(), 1);
        assert!(!legacy.contains(&rotated[0]));
        drop(vault);
        assert_eq!(env.vault().lookup_keys("email-lookup").unwrap(), rotated);
    }

    /// Every candidate key an attacker holding the directory has: the master key
    /// and every epoch key that opens under it, from the epoch files and from any
    /// window of any file shaped like one (a lingering copy).
    fn key_material(dir: &Path, master: &MasterKey) -> Vec<XChaCha20Poly1305> {
        let mut keys = vec![master.cipher()];
        for path in files_under(dir) {
            let bytes = std::fs::read(&path).unwrap();
            for window in bytes.windows(WRAPPED_KEY_LEN) {
                if window[..8] == [0u8; 8] {
                    continue; // never one of our random nonces
                }
                let (nonce, sealed) = window.split_at(NONCE_BYTES);
                // The test's vault reaches epoch 2; an attacker would try more.
                for number in 1..=3u32 {
                    let ad = format!("nexus vault epoch {number}");
                    let opened = master.cipher().decrypt(
                        &XNonce::try_from(nonce).unwrap(),
                        Payload {
                            msg: sealed,
                            aad: ad.as_bytes(),
                        },
                    );
                    if let Ok(key) = opened {
                        keys.push(XChaCha20Poly1305::new(
                            &Key::try_from(key.as_slice()).unwrap(),
                        ));
                    }
                }
            }
        }
        keys
    }

    /// How many windows of the files under `dir` unwrap as `subject`'s data key
    /// under any of `keys`.
    fn wrapped_keys_found(dir: &Path, keys: &[XChaCha20Poly1305], subject: &SubjectId) -> usize {
        let mut found = 0;
        for path in files_under(dir) {
            let bytes = std::fs::read(&path).unwrap();
            for window in bytes.windows(WRAPPED_KEY_LEN) {
                if window[..8] == [0u8; 8] {
                    continue;
                }
                let (nonce, wrapped) = window.split_at(NONCE_BYTES);
                found += keys
                    .iter()
                    .filter(|cipher| {
                        cipher
                            .decrypt(
                                &XNonce::try_from(nonce).unwrap(),
                                Payload {
                                    msg: wrapped,
                                    aad: subject.as_str().as_bytes(),
                                },
                            )
                            .is_ok()
                    })
                    .count();
            }
        }
        found
    }

    #[test]
    fn after_erasure_and_rotation_nothing_in_the_directory_unwraps_the_erased_key() {
        let env = Env::new();
        let target = subject("account:target");
        let event = Uuid::new_v4();
        let vault = env.vault();
        let sealed = vault.seal(&target, &event, b"target@example.com").unwrap();
        for i in 0..50 {
            vault
                .seal(&subject(&format!("account:{i}")), &Uuid::new_v4(), b"x")
                .unwrap();
        }
        vault.durable.sync().unwrap();
        let master = read_key_file(&env.key_path()).unwrap().unwrap();
        // The search works: before the erasure it finds the live key.
        let keys = key_material(env.dir.path(), &master);
        assert_eq!(keys.len(), 2, "the master key and one epoch key");
        assert!(wrapped_keys_found(env.dir.path(), &keys, &target) >= 1);

        assert!(vault.erase(&target).unwrap());
        // Churn, so sled writes new segments while old copies may linger.
        for i in 50..150 {
            vault
                .seal(&subject(&format!("account:{i}")), &Uuid::new_v4(), b"y")
                .unwrap();
        }
        vault.rotate(unix_now_s()).unwrap();
        vault.durable.sync().unwrap();
        assert_eq!(vault.open_sealed(&sealed, &event).unwrap(), Opened::Erased);
        drop(vault);

        let keys = key_material(env.dir.path(), &master);
        assert_eq!(keys.len(), 2, "the master key and only the new epoch key");
        assert_eq!(wrapped_keys_found(env.dir.path(), &keys, &target), 0);
        // Every other subject still opens through the directory's key material.
        assert!(wrapped_keys_found(env.dir.path(), &keys, &subject("account:0")) >= 1);
    }

    #[test]
    fn keys_wrapped_before_epochs_open_and_move_under_an_epoch_at_the_first_rotation() {
        let env = Env::new();
        let alice = subject("account:alice");
        let event = Uuid::new_v4();
        let (sealed, legacy) = {
            let vault = env.vault();
            let sealed = vault.seal(&alice, &event, b"legacy").unwrap();
            // Rewrite the record as a vault without epochs wrote it.
            let key = vault
                .unwrap_key(
                    &vault.read_epochs(),
                    &alice,
                    &vault.tree.get(alice.record_key()).unwrap().unwrap(),
                )
                .unwrap();
            let nonce: [u8; NONCE_BYTES] = random_array().unwrap();
            let wrapped = vault
                .master
                .cipher()
                .encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &key.0,
                        aad: alice.as_str().as_bytes(),
                    },
                )
                .unwrap();
            let legacy = [nonce.to_vec(), wrapped].concat();
            vault
                .tree
                .insert(alice.record_key(), legacy.clone())
                .unwrap();
            vault.durable.sync().unwrap();
            (sealed, legacy)
        };
        assert_eq!(legacy.len(), LEGACY_RECORD_LEN);
        // A vault from before epochs has no epoch files at all.
        std::fs::remove_dir_all(env.epochs_dir()).unwrap();
        let vault = env.vault();
        assert!(
            vault.erasures_pending().unwrap(),
            "legacy keys make a rotation due"
        );
        assert_eq!(
            vault.open_sealed(&sealed, &event).unwrap(),
            Opened::Plain(b"legacy".to_vec())
        );
        assert_eq!(vault.rotate(unix_now_s()).unwrap().rewrapped_keys, 1);
        let record = vault.tree.get(alice.record_key()).unwrap().unwrap();
        assert_eq!(record.len(), RECORD_LEN);
        drop(vault);
        let vault = env.vault();
        assert_eq!(
            vault.open_sealed(&sealed, &event).unwrap(),
            Opened::Plain(b"legacy".to_vec())
        );
    }

    #[test]
    fn missing_epoch_files_stop_the_open_with_a_clear_error() {
        let env = Env::new();
        drop(
            env.vault()
                .seal(&subject("account:a"), &Uuid::new_v4(), b"x")
                .unwrap(),
        );
        std::fs::remove_dir_all(env.epochs_dir()).unwrap();
        let err = env
            .try_vault(&MasterKeySource::GenerateAt(env.key_path()))
            .unwrap_err();
        assert!(matches!(err, VaultError::MissingEpochKeys { .. }), "{err}");
    }

    #[test]
    fn an_interrupted_rotation_is_finished_by_the_next() {
        let env = Env::new();
        let alice = subject("account:alice");
        let event = Uuid::new_v4();
        let sealed = env.vault().seal(&alice, &event, b"a").unwrap();
        // A crash after the new epoch's file was written, before any re-wrap.
        let master = read_key_file(&env.key_path()).unwrap().unwrap();
        epoch::create(&env.epochs_dir(), 2, unix_now_s(), &master).unwrap();
        let vault = env.vault();
        assert_eq!(epoch_files(&env).len(), 2);
        assert!(vault.rotation_due(unix_now_s()).unwrap());
        assert_eq!(
            vault.open_sealed(&sealed, &event).unwrap(),
            Opened::Plain(b"a".to_vec())
        );
        // The next rotation completes epoch 2 rather than beginning a third.
        let rotation = vault.rotate(unix_now_s()).unwrap();
        assert_eq!((rotation.epoch, rotation.destroyed_epochs), (2, 1));
        assert_eq!(epoch_files(&env).len(), 1);
        assert_eq!(
            vault.open_sealed(&sealed, &event).unwrap(),
            Opened::Plain(b"a".to_vec())
        );
    }

    #[test]
    fn sealing_and_erasing_during_a_rotation_leave_no_key_under_the_old_epoch() {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 100;
        let env = Env::new();
        let vault = Arc::new(env.vault());
        for i in 0..200 {
            vault
                .seal(&subject(&format!("before:{i}")), &Uuid::new_v4(), b"x")
                .unwrap();
        }
        let barrier = Arc::new(Barrier::new(THREADS + 1));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (vault, barrier) = (vault.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut live = Vec::new();
                    for i in 0..PER_THREAD {
                        let s = subject(&format!("during:{t}:{i}"));
                        let event = Uuid::new_v4();
                        let sealed = vault.seal(&s, &event, b"z").unwrap();
                        if i % 3 == 0 {
                            vault
                                .erase(&subject(&format!("before:{}", t * 50 + i / 3)))
                                .unwrap();
                        }
                        live.push((sealed, event));
                    }
                    live
                })
            })
            .collect();
        barrier.wait();
        let rotation = vault.rotate(unix_now_s()).unwrap();
        let live: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert_eq!(rotation.epoch, 2);
        for entry in vault.tree.scan_prefix(KEY_PREFIX) {
            let (_, record) = entry.unwrap();
            assert!(
                record.as_ref() == TOMBSTONE || record[..EPOCH_NUMBER_BYTES] == 2u32.to_le_bytes(),
                "a record outside the current epoch"
            );
        }
        for (sealed, event) in &live {
            assert_eq!(
                vault.open_sealed(sealed, event).unwrap(),
                Opened::Plain(b"z".to_vec())
            );
        }
    }

    #[test]
    fn corrupt_stored_records_are_corrupt_errors() {
        let env = Env::new();
        let vault = env.vault();
        let event = Uuid::new_v4();
        let a = subject("account:a");
        let sealed = vault.seal(&a, &event, b"pii").unwrap();
        let record = vault.tree.get(a.record_key()).unwrap().unwrap();
        assert_eq!(record.len(), RECORD_LEN);

        // A wrong-length record.
        let b = subject("account:b");
        vault.tree.insert(b.record_key(), &[1, 2, 3][..]).unwrap();
        assert!(matches!(
            vault.seal(&b, &event, b"x"),
            Err(VaultError::Corrupt { .. })
        ));
        assert!(matches!(
            vault.is_erased(&b),
            Err(VaultError::Corrupt { .. })
        ));

        // A damaged wrapped key (read fresh: empty cache after reopen).
        drop(vault);
        let vault = env.vault();
        let mut damaged = record.to_vec();
        damaged[WRAPPED_KEY_LEN - 1] ^= 1;
        vault.tree.insert(a.record_key(), damaged).unwrap();
        assert!(matches!(
            vault.open_sealed(&sealed, &event),
            Err(VaultError::Corrupt { .. })
        ));
        // A record moved to another subject does not unwrap either.
        let c = subject("account:c");
        vault.tree.insert(c.record_key(), record.clone()).unwrap();
        assert!(matches!(
            vault.seal(&c, &event, b"x"),
            Err(VaultError::Corrupt { .. })
        ));
        drop(vault);

        // A damaged check record.
        let db = env.db();
        db.db()
            .open_tree(TREE_NAME)
            .unwrap()
            .insert(CHECK_KEY, &[7u8; 5][..])
            .unwrap();
        assert!(matches!(
            Vault::open(
                db,
                &MasterKeySource::GenerateAt(env.key_path()),
                &env.epochs_dir()
            ),
            Err(VaultError::Corrupt { .. })
        ));
    }

    #[test]
    fn key_cache_is_bounded_and_forgets_erased_keys() {
        let env = Env::new();
        let mut vault = env.vault();
        vault.cache_limit = 4;
        let event = Uuid::new_v4();
        let sealed: Vec<_> = (0..10)
            .map(|i| {
                let s = subject(&format!("account:{i}"));
                (s.clone(), vault.seal(&s, &event, b"pii").unwrap())
            })
            .collect();
        assert!(vault.read_cache().keys.len() <= 4);
        for (_, s) in &sealed {
            assert_eq!(
                vault.open_sealed(s, &event).unwrap(),
                Opened::Plain(b"pii".to_vec())
            );
            assert!(vault.read_cache().keys.len() <= 4);
        }
        let (last, last_sealed) = sealed.last().unwrap();
        assert!(vault.read_cache().keys.contains_key(last));
        vault.erase(last).unwrap();
        assert!(!vault.read_cache().keys.contains_key(last));
        assert_eq!(
            vault.open_sealed(last_sealed, &event).unwrap(),
            Opened::Erased
        );
    }

    #[test]
    fn proptest_round_trip_and_bit_flips() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let env = Env::new();
        let vault = env.vault();
        let mut runner = TestRunner::new(Config::with_cases(64));
        let strategy = (
            proptest::collection::vec(any::<u8>(), 0..2048),
            0u8..8,
            any::<usize>(),
            any::<u8>(),
        );
        runner
            .run(&strategy, |(plaintext, bit, pos, subj)| {
                let s = subject(&format!("account:{subj}"));
                let event = Uuid::new_v4();
                let sealed = vault.seal(&s, &event, &plaintext).unwrap();
                prop_assert_eq!(
                    vault.open_sealed(&sealed, &event).unwrap(),
                    Opened::Plain(plaintext.clone())
                );
                let mut bad = sealed.clone();
                let i = pos % bad.ciphertext.len();
                bad.ciphertext[i] ^= 1 << bit;
                prop_assert!(matches!(
                    vault.open_sealed(&bad, &event),
                    Err(VaultError::Tampered)
                ));
                Ok(())
            })
            .unwrap();
    }
}
