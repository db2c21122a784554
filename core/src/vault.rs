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
/// The value of an erased subject's key record; never the length of a wrapped key.
const TOMBSTONE: &[u8] = &[0];
const _: () = assert!(TOMBSTONE.len() != WRAPPED_KEY_LEN);

const TREE_NAME: &[u8] = b"vault";
const CHECK_KEY: &[u8] = b"check";
const CHECK_PLAINTEXT: &[u8] = b"nexus vault master key check v1";
/// Contains a space, so it can never equal a subject id (the wrapping AD).
const CHECK_AD: &[u8] = b"nexus vault check";
const KEY_PREFIX: &[u8] = b"k/";

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
    #[error("vault I/O error: {0}")]
    Io(#[from] io::Error),
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
    epoch: u64,
}

/// The state of a subject's key.
enum KeyState {
    Live(DataKey),
    Erased,
    Missing,
}

/// The PII vault. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Vault {
    durable: Arc<DurableDb>,
    tree: sled::Tree,
    master: MasterKey,
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
    pub(crate) fn open(db: Arc<DurableDb>, source: &MasterKeySource) -> Result<Vault, VaultError> {
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
                epoch: 0,
            }),
            cache_limit: MAX_CACHED_KEYS,
            erasures: std::sync::atomic::AtomicU64::new(0),
        };
        match check {
            Some(record) => vault.verify_check(&record)?,
            None => vault.write_check()?,
        }
        Ok(vault)
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
            // before it sees a new epoch and does not cache the key.
            let mut cache = self.write_cache();
            cache.keys.remove(subject);
            cache.epoch = cache.epoch.wrapping_add(1);
        }
        self.erasures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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

    /// Whether the subject was erased (false for a subject that never had a key).
    pub fn is_erased(&self, subject: &SubjectId) -> Result<bool, VaultError> {
        match self.tree.get(subject.record_key()).map_err(sled_err)? {
            None => Ok(false),
            Some(value) if value.as_ref() == TOMBSTONE => Ok(true),
            Some(value) if value.len() == WRAPPED_KEY_LEN => Ok(false),
            Some(_) => Err(corrupt("key record of unexpected length")),
        }
    }

    fn read_cache(&self) -> RwLockReadGuard<'_, KeyCache> {
        // The cache holds no invariant a panicking holder could break.
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_cache(&self) -> RwLockWriteGuard<'_, KeyCache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache_insert(&self, subject: &SubjectId, key: &DataKey, epoch: u64) {
        let mut cache = self.write_cache();
        if cache.epoch != epoch || cache.keys.contains_key(subject) {
            return;
        }
        if cache.keys.len() >= self.cache_limit {
            cache.keys.clear();
        }
        cache.keys.insert(subject.clone(), key.clone());
    }

    fn key_state(&self, subject: &SubjectId) -> Result<KeyState, VaultError> {
        let epoch = {
            let cache = self.read_cache();
            if let Some(key) = cache.keys.get(subject) {
                return Ok(KeyState::Live(key.clone()));
            }
            cache.epoch
        };
        match self.tree.get(subject.record_key()).map_err(sled_err)? {
            None => Ok(KeyState::Missing),
            Some(record) => self.decode_record(subject, &record, epoch),
        }
    }

    /// Decodes a stored key record (never `Missing`), caching a live key.
    fn decode_record(
        &self,
        subject: &SubjectId,
        record: &[u8],
        epoch: u64,
    ) -> Result<KeyState, VaultError> {
        if record == TOMBSTONE {
            return Ok(KeyState::Erased);
        }
        let key = self.unwrap_key(subject, record)?;
        self.cache_insert(subject, &key, epoch);
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
        // Read before the swap: an erase after it bumps the epoch, so the key
        // is not cached.
        let epoch = self.read_cache().epoch;
        let key = DataKey(random_array()?);
        let wrapped = self.wrap_key(subject, &key)?;
        let record_key = subject.record_key();
        loop {
            match self
                .tree
                .compare_and_swap(&record_key, None::<&[u8]>, Some(wrapped.as_slice()))
                .map_err(sled_err)?
            {
                Ok(()) => {
                    self.cache_insert(subject, &key, epoch);
                    return Ok(key);
                }
                Err(lost) => match lost.current {
                    Some(current) => {
                        return match self.decode_record(subject, &current, epoch)? {
                            KeyState::Live(theirs) => Ok(theirs),
                            _ => Err(VaultError::SubjectErased),
                        }
                    }
                    // Records are never removed, but a swap can only lose to a
                    // present value; try again rather than assume.
                    None => continue,
                },
            }
        }
    }

    fn wrap_key(&self, subject: &SubjectId, key: &DataKey) -> Result<Vec<u8>, VaultError> {
        let nonce: [u8; NONCE_BYTES] = random_array()?;
        let wrapped = self
            .master
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &key.0,
                    aad: subject.as_str().as_bytes(),
                },
            )
            .map_err(|_| corrupt("key wrapping failed"))?;
        let mut record = Vec::with_capacity(WRAPPED_KEY_LEN);
        record.extend_from_slice(&nonce);
        record.extend_from_slice(&wrapped);
        Ok(record)
    }

    fn unwrap_key(&self, subject: &SubjectId, record: &[u8]) -> Result<DataKey, VaultError> {
        if record.len() != WRAPPED_KEY_LEN {
            return Err(corrupt("key record of unexpected length"));
        }
        let (nonce, wrapped) = record.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).map_err(|_| corrupt("key record nonce"))?;
        // The master key was verified against the check record at open, so a
        // failure here is a damaged (or moved) record.
        let plain = Zeroizing::new(
            self.master
                .cipher()
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
            if self.unwrap_key(&subject, &record).is_err() {
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
#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(not(unix))]
fn sync_parent_dir(_path: &Path) -> io::Result<()> {
    Ok(())
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
            Vault::open(self.db(), source)
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
        let copied = Vault::open(db, &MasterKeySource::File(env.key_path())).unwrap();
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

    #[test]
    fn corrupt_stored_records_are_corrupt_errors() {
        let env = Env::new();
        let vault = env.vault();
        let event = Uuid::new_v4();
        let a = subject("account:a");
        let sealed = vault.seal(&a, &event, b"pii").unwrap();
        let record = vault.tree.get(a.record_key()).unwrap().unwrap();
        assert_eq!(record.len(), WRAPPED_KEY_LEN);

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
            Vault::open(db, &MasterKeySource::GenerateAt(env.key_path())),
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
