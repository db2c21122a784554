//! The durable, sealed mail spool: one file per accepted mail, so a crash
//! loses nothing, and a short record of delivered mail ids, so a mail asked
//! for twice is sent once.
//!
//! # Layout (under the spool folder, `<data-dir>/mail/spool/` by default)
//!
//! - `queued/<id>.mail`: a mail accepted and not delivered yet.
//! - `failed/<id>.mail`: a mail that exhausted its attempts; moved back to
//!   `queued/` (and tried again) at the next start.
//! - `unreadable/<name>`: a file found in `queued/` or `failed/` that is not a
//!   spooled mail of this vault (corrupt, truncated, foreign, too large). It is
//!   moved here, counted and logged by name, never sent and never deleted: an
//!   operator looks at it and removes it.
//! - `delivered.log`: one line `<id> <unix seconds>` per delivered mail. Ids
//!   are hashes of what caused the mail: no personal data.
//!
//! Every file is written atomically: a temporary file (mode 0600), written,
//! fsynced, renamed into place, then the folder is fsynced.
//!
//! # Sealing
//!
//! A spooled mail holds an address and often a token: its contents (the
//! envelope recipient, the token, the rendered RFC 5322 message) are sealed
//! with the vault under the recipient account's subject key, in chunks of at
//! most [`nexus_core::vault::MAX_PII_BYTES`]; each chunk's associated data
//! binds the mail id, its kind, its index and the chunk count, so chunks can
//! be neither swapped nor moved to another mail. Only the id, the kind, the
//! account's subject id and the time it was queued are plain. Erasing the
//! account deletes its key: its spooled mails then open as erased and are
//! dropped (counted), never sent.
//!
//! # Limits
//!
//! - [`MAX_MESSAGE_BYTES`]: a rendered mail and its envelope, sealed; a larger
//!   one is refused with [`MailError::TooLarge`].
//! - [`MAX_SPOOL_FILE_BYTES`]: a spool file larger than this is unreadable.
//! - The number of files: the mailer's `queue_capacity` (queued) plus its
//!   `failed_capacity` (failed); `send` refuses beyond them.
//! - [`MAX_DELIVERED_IDS`] ids delivered in the last
//!   [`DELIVERED_RETENTION_DAYS`] days are remembered; older ones are pruned,
//!   and past the count the oldest go first. The journal is compacted when it
//!   holds twice the live ids (and at every start).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use nexus_core::vault::{Opened, SealedPii, SubjectId, Vault, VaultError, MAX_PII_BYTES};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{MailError, MailKind};

/// The largest sealed contents of one mail (envelope, token and the rendered
/// message), in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The largest spool file read back, in bytes (hex doubles the sealed bytes).
pub const MAX_SPOOL_FILE_BYTES: u64 = 256 * 1024;
/// How long a delivered mail's id is remembered, so a repeat is not sent.
pub const DELIVERED_RETENTION_DAYS: i64 = 7;
/// Delivered ids remembered at most.
pub const MAX_DELIVERED_IDS: usize = 100_000;
/// Bytes of one line of the delivered journal, at most (a longer one is corrupt).
const MAX_JOURNAL_LINE_BYTES: usize = 64;

/// The spool file format.
const FORMAT: u32 = 1;
const MAIL_EXTENSION: &str = "mail";
const JOURNAL: &str = "delivered.log";

/// A mail's id: derived from what caused the mail, so asking twice for the
/// same mail gives the same id. 128 bits of a SHA-256 over a domain tag and
/// the parts; shown as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailId(uuid::Uuid);

impl MailId {
    /// The id of the mail made by one cause, named by `parts`.
    pub fn derive(parts: &[&[u8]]) -> MailId {
        let mut hash = Sha256::new();
        hash.update(b"nexus-mail-id-v1");
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let digest = hash.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        MailId(uuid::Uuid::from_bytes(bytes))
    }

    /// The mail of `kind` caused by one event (a deposit credited, a deletion
    /// requested).
    pub fn for_event(kind: MailKind, event_id: uuid::Uuid) -> MailId {
        MailId::derive(&[kind.as_str().as_bytes(), event_id.as_bytes()])
    }

    /// One policy-change notice: the announcement and the account.
    pub fn for_policy_notice(announcement: &str, account: uuid::Uuid) -> MailId {
        MailId::derive(&[
            MailKind::PolicyChange.as_str().as_bytes(),
            announcement.as_bytes(),
            account.as_bytes(),
        ])
    }

    /// A verification mail: the token it carries (one mail per token issued).
    /// The id is a hash: the token cannot be read back from it.
    pub fn for_verification(token: &str) -> MailId {
        MailId::derive(&[MailKind::Verification.as_str().as_bytes(), token.as_bytes()])
    }

    /// A mail that carries a token (a password reset, the undo of an e-mail
    /// change): one mail per token issued. The token cannot be read back.
    pub fn for_token(kind: MailKind, token: &str) -> MailId {
        MailId::derive(&[kind.as_str().as_bytes(), token.as_bytes()])
    }

    /// The notice of a registration attempt on `account`'s address: at most
    /// one per account and `period` (a number of the caller's choosing, e.g.
    /// the hour), so repeated attempts do not flood the holder.
    pub fn for_registration_attempt(account: uuid::Uuid, period: i64) -> MailId {
        MailId::derive(&[
            MailKind::RegistrationAttempt.as_str().as_bytes(),
            account.as_bytes(),
            &period.to_be_bytes(),
        ])
    }

    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Option<MailId> {
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| uuid::Uuid::try_parse(text).ok().map(MailId))
            .flatten()
    }

    fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl std::fmt::Display for MailId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

impl MailKind {
    fn parse(text: &str) -> Option<MailKind> {
        [
            MailKind::Verification,
            MailKind::DepositConfirmation,
            MailKind::DeletionScheduled,
            MailKind::DeletionDone,
            MailKind::PolicyChange,
            MailKind::PasswordReset,
            MailKind::EmailChanged,
            MailKind::RegistrationAttempt,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// What a spool file holds in plain, and the sealed chunks.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolFile {
    format: u32,
    id: String,
    kind: String,
    subject: SubjectId,
    queued_at: DateTime<Utc>,
    chunks: Vec<SealedChunk>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedChunk {
    /// 24 bytes, hex.
    nonce: String,
    /// Hex.
    ciphertext: String,
}

/// The sealed contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    /// The envelope recipient.
    to: String,
    /// A token in the message, to scrub from server errors.
    token: Option<String>,
    /// The rendered RFC 5322 message (ASCII, CRLF).
    message: String,
}

/// A mail to spool.
pub(crate) struct Outgoing<'a> {
    pub id: MailId,
    pub kind: MailKind,
    pub subject: SubjectId,
    pub to: &'a str,
    pub token: Option<&'a str>,
    pub message: &'a [u8],
}

/// A spooled mail, opened for a delivery attempt.
pub(crate) struct Letter {
    pub to: lettre::Address,
    /// The full address and the token, to scrub from errors.
    pub secrets: Vec<String>,
    pub message: Vec<u8>,
}

/// What a delivery attempt finds in the spool.
pub(crate) enum Loaded {
    Letter(Letter),
    /// The recipient's account was erased: the mail is gone for good.
    Erased,
    /// No file: it was delivered (or dropped) already.
    Missing,
}

/// Why a spool file could not be used. Holds no personal data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreadable {
    #[error("over {MAX_SPOOL_FILE_BYTES} bytes")]
    TooLarge,
    #[error("not a spool file of this format: {0}")]
    Format(String),
    #[error("its id does not match its name")]
    WrongId,
    #[error("the seal does not open: {0}")]
    Seal(String),
    #[error("read: {0}")]
    Io(io::ErrorKind),
}

/// A mail found in the spool at start.
pub(crate) struct Restored {
    pub id: MailId,
    pub kind: MailKind,
    /// Redacted.
    pub recipient: String,
}

/// What the start-up scan found.
#[derive(Default)]
pub(crate) struct Recovery {
    pub restored: Vec<Restored>,
    pub dropped_erased: u64,
    pub unreadable: u64,
    /// Files whose mail was delivered already (a crash before their removal).
    pub already_delivered: u64,
}

/// Whether a mail id is new.
pub(crate) enum Reserved {
    New,
    Duplicate,
}

struct Index {
    queued: HashSet<MailId>,
    failed: HashSet<MailId>,
    delivered: HashMap<MailId, i64>,
    /// Delivered ids, oldest first.
    delivered_order: VecDeque<(i64, MailId)>,
    journal: File,
    journal_lines: usize,
}

pub(crate) struct Spool {
    queued: PathBuf,
    failed: PathBuf,
    unreadable: PathBuf,
    journal_path: PathBuf,
    vault: Arc<Vault>,
    index: Mutex<Index>,
}

fn spool_io(what: &str, error: &io::Error) -> MailError {
    MailError::Spool(format!("{what}: {}", error.kind()))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically: a temporary file (0600), synced,
/// renamed, then the folder synced.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn file_name(id: MailId) -> String {
    format!("{id}.{MAIL_EXTENSION}")
}

/// The associated data of chunk `index` of `count`.
fn chunk_ad(id: MailId, kind: MailKind, index: usize, count: usize) -> uuid::Uuid {
    let index = (index as u64).to_be_bytes();
    let count = (count as u64).to_be_bytes();
    *MailId::derive(&[
        b"chunk",
        id.as_uuid().as_bytes(),
        kind.as_str().as_bytes(),
        &index,
        &count,
    ])
    .as_uuid()
}

impl Spool {
    /// Opens (creating) the spool in `root`; moves failed mails back to the
    /// queue, loads the delivered journal (pruned at `now`) and scans the
    /// queue.
    pub fn open(
        root: &Path,
        vault: Arc<Vault>,
        now: DateTime<Utc>,
    ) -> Result<(Spool, Recovery), MailError> {
        let queued = root.join("queued");
        let failed = root.join("failed");
        let unreadable = root.join("unreadable");
        for dir in [root, &queued, &failed, &unreadable] {
            create_private_dir(dir).map_err(|e| spool_io("creating the spool folders", &e))?;
        }
        let journal_path = root.join(JOURNAL);
        let (delivered, delivered_order) =
            read_journal(&journal_path, now).map_err(|e| spool_io("the delivered record", &e))?;
        let journal = rewrite_journal(root, &journal_path, &delivered_order)
            .map_err(|e| spool_io("the delivered record", &e))?;
        let spool = Spool {
            queued,
            failed,
            unreadable,
            journal_path,
            vault,
            index: Mutex::new(Index {
                queued: HashSet::new(),
                failed: HashSet::new(),
                journal_lines: delivered_order.len(),
                delivered,
                delivered_order,
                journal,
            }),
        };
        let recovery = spool
            .recover()
            .map_err(|e| spool_io("scanning the spool", &e))?;
        Ok((spool, recovery))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recover(&self) -> io::Result<Recovery> {
        // Failed mails are tried again: back to the queue.
        for entry in std::fs::read_dir(&self.failed)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            std::fs::rename(entry.path(), self.queued.join(&name))?;
        }
        sync_dir(&self.failed)?;
        sync_dir(&self.queued)?;
        let mut recovery = Recovery::default();
        let mut names: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&self.queued)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write cut by a crash: never acknowledged.
                let _ = std::fs::remove_file(self.queued.join(&name));
            } else {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let id = name
                .strip_suffix(&format!(".{MAIL_EXTENSION}"))
                .and_then(MailId::parse);
            let Some(id) = id else {
                self.quarantine(&name, &Unreadable::Format("not a mail file name".into()));
                recovery.unreadable += 1;
                continue;
            };
            if self.lock().delivered.contains_key(&id) {
                let _ = std::fs::remove_file(self.queued.join(&name));
                recovery.already_delivered += 1;
                continue;
            }
            match self.read(id) {
                Ok((kind, Loaded::Letter(letter))) => {
                    self.lock().queued.insert(id);
                    recovery.restored.push(Restored {
                        id,
                        kind,
                        recipient: super::redact_address(letter.to.as_ref()),
                    });
                }
                Ok((_, Loaded::Erased)) => {
                    let _ = std::fs::remove_file(self.queued.join(&name));
                    recovery.dropped_erased += 1;
                }
                Ok((_, Loaded::Missing)) => {}
                Err(why) => {
                    self.quarantine(&name, &why);
                    recovery.unreadable += 1;
                }
            }
        }
        sync_dir(&self.queued)?;
        Ok(recovery)
    }

    /// Moves a queued file aside, logging its name and why (no contents).
    fn quarantine(&self, name: &str, why: &Unreadable) {
        tracing::warn!(
            file = name,
            reason = %why,
            "mail spool: unreadable file moved to unreadable/; it is not sent"
        );
        let target = self.unreadable.join(name);
        if let Err(e) = std::fs::rename(self.queued.join(name), &target) {
            tracing::warn!(file = name, error = %e.kind(), "mail spool: cannot move an unreadable file");
        }
        let _ = sync_dir(&self.unreadable);
        let _ = sync_dir(&self.queued);
    }

    /// Takes the id for a new mail, or says it is queued, failed or delivered
    /// already.
    pub fn reserve(&self, id: MailId) -> Reserved {
        let mut index = self.lock();
        if index.queued.contains(&id)
            || index.failed.contains(&id)
            || index.delivered.contains_key(&id)
        {
            return Reserved::Duplicate;
        }
        index.queued.insert(id);
        Reserved::New
    }

    /// Gives back an id reserved for a mail that was not spooled.
    pub fn unreserve(&self, id: MailId) {
        self.lock().queued.remove(&id);
    }

    /// Mails in the failed part.
    pub fn failed_count(&self) -> usize {
        self.lock().failed.len()
    }

    /// Seals and writes a reserved mail durably.
    pub fn write(&self, mail: &Outgoing<'_>, now: DateTime<Utc>) -> Result<(), MailError> {
        let message = std::str::from_utf8(mail.message)
            .map_err(|_| MailError::Render("the rendered message is not text".into()))?;
        let contents = serde_json::to_vec(&Contents {
            to: mail.to.to_owned(),
            token: mail.token.map(str::to_owned),
            message: message.to_owned(),
        })
        .map_err(|e| MailError::Render(e.to_string()))?;
        if contents.len() > MAX_MESSAGE_BYTES {
            return Err(MailError::TooLarge {
                len: contents.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let pieces: Vec<&[u8]> = contents.chunks(MAX_PII_BYTES).collect();
        let count = pieces.len();
        let mut chunks = Vec::with_capacity(count);
        for (index, piece) in pieces.into_iter().enumerate() {
            let ad = chunk_ad(mail.id, mail.kind, index, count);
            let sealed = self
                .vault
                .seal(&mail.subject, &ad, piece)
                .map_err(|e| match e {
                    VaultError::SubjectErased => MailError::RecipientErased,
                    other => MailError::Spool(format!("sealing: {other}")),
                })?;
            chunks.push(SealedChunk {
                nonce: hex::encode(sealed.nonce),
                ciphertext: hex::encode(&sealed.ciphertext),
            });
        }
        let file = SpoolFile {
            format: FORMAT,
            id: mail.id.to_string(),
            kind: mail.kind.as_str().to_owned(),
            subject: mail.subject.clone(),
            queued_at: now,
            chunks,
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| MailError::Render(e.to_string()))?;
        write_atomically(&self.queued, &file_name(mail.id), &bytes)
            .map_err(|e| spool_io("writing the spool file", &e))
    }

    /// Reads and opens a queued mail for an attempt.
    pub fn load(&self, id: MailId) -> Result<Loaded, Unreadable> {
        self.read(id).map(|(_, loaded)| loaded)
    }

    fn read(&self, id: MailId) -> Result<(MailKind, Loaded), Unreadable> {
        let path = self.queued.join(file_name(id));
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((MailKind::Verification, Loaded::Missing))
            }
            Err(e) => return Err(Unreadable::Io(e.kind())),
        };
        let mut bytes = Vec::new();
        file.take(MAX_SPOOL_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Unreadable::Io(e.kind()))?;
        if bytes.len() as u64 > MAX_SPOOL_FILE_BYTES {
            return Err(Unreadable::TooLarge);
        }
        // The error says where the JSON broke, never what it holds.
        let spooled: SpoolFile = serde_json::from_slice(&bytes)
            .map_err(|e| Unreadable::Format(format!("line {} column {}", e.line(), e.column())))?;
        if spooled.format != FORMAT {
            return Err(Unreadable::Format(format!("format {}", spooled.format)));
        }
        if MailId::parse(&spooled.id) != Some(id) {
            return Err(Unreadable::WrongId);
        }
        let kind = MailKind::parse(&spooled.kind)
            .ok_or_else(|| Unreadable::Format("unknown kind".into()))?;
        let count = spooled.chunks.len();
        if count == 0 || count > MAX_MESSAGE_BYTES.div_ceil(MAX_PII_BYTES) {
            return Err(Unreadable::Format("chunk count".into()));
        }
        let mut contents = Vec::new();
        for (index, chunk) in spooled.chunks.iter().enumerate() {
            let mut nonce = [0u8; 24];
            hex::decode_to_slice(&chunk.nonce, &mut nonce)
                .map_err(|_| Unreadable::Format("nonce".into()))?;
            let ciphertext = hex::decode(&chunk.ciphertext)
                .map_err(|_| Unreadable::Format("ciphertext".into()))?;
            let sealed = SealedPii {
                subject: spooled.subject.clone(),
                nonce,
                ciphertext,
            };
            match self
                .vault
                .open_sealed(&sealed, &chunk_ad(id, kind, index, count))
            {
                Ok(Opened::Plain(piece)) => contents.extend_from_slice(&piece),
                Ok(Opened::Erased) => return Ok((kind, Loaded::Erased)),
                Err(e) => return Err(Unreadable::Seal(e.to_string())),
            }
        }
        let contents: Contents = serde_json::from_slice(&contents)
            .map_err(|_| Unreadable::Format("sealed contents".into()))?;
        let to: lettre::Address = contents
            .to
            .parse()
            .map_err(|_| Unreadable::Format("recipient".into()))?;
        let mut secrets = vec![contents.to];
        secrets.extend(contents.token);
        Ok((
            kind,
            Loaded::Letter(Letter {
                to,
                secrets,
                message: contents.message.into_bytes(),
            }),
        ))
    }

    /// Records the mail as delivered (durably), then removes its file.
    pub fn delivered(&self, id: MailId, now: DateTime<Utc>) -> Result<(), MailError> {
        let at = now.timestamp();
        {
            let mut index = self.lock();
            let line = format!("{id} {at}\n");
            index
                .journal
                .write_all(line.as_bytes())
                .and_then(|_| index.journal.sync_data())
                .map_err(|e| spool_io("recording a delivery", &e))?;
            index.journal_lines += 1;
            index.queued.remove(&id);
            index.delivered.insert(id, at);
            index.delivered_order.push_back((at, id));
            prune(&mut index, now);
            if index.journal_lines > 2 * index.delivered_order.len() + 1_024 {
                let root = self.journal_path.parent().unwrap_or(Path::new("."));
                match rewrite_journal(root, &self.journal_path, &index.delivered_order) {
                    Ok(journal) => {
                        index.journal = journal;
                        index.journal_lines = index.delivered_order.len();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.kind(), "mail spool: compacting the delivered record")
                    }
                }
            }
        }
        self.remove_queued(id)
    }

    /// Removes a queued mail that is not to be sent (its account was erased).
    pub fn drop_erased(&self, id: MailId) -> Result<(), MailError> {
        self.lock().queued.remove(&id);
        self.remove_queued(id)
    }

    fn remove_queued(&self, id: MailId) -> Result<(), MailError> {
        match std::fs::remove_file(self.queued.join(file_name(id))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(spool_io("removing a spool file", &e)),
        }
    }

    /// Moves a mail that exhausted its attempts to the failed part.
    pub fn fail(&self, id: MailId) -> Result<(), MailError> {
        let name = file_name(id);
        {
            let mut index = self.lock();
            index.queued.remove(&id);
            index.failed.insert(id);
        }
        std::fs::rename(self.queued.join(&name), self.failed.join(&name))
            .and_then(|_| sync_dir(&self.failed))
            .and_then(|_| sync_dir(&self.queued))
            .map_err(|e| spool_io("moving a mail to failed/", &e))
    }

    /// Moves an unreadable queued mail aside.
    pub fn set_aside(&self, id: MailId, why: &Unreadable) {
        self.lock().queued.remove(&id);
        self.quarantine(&file_name(id), why);
    }
}

/// Drops delivered ids older than the retention, and the oldest past the count.
fn prune(index: &mut Index, now: DateTime<Utc>) {
    let oldest = now.timestamp() - DELIVERED_RETENTION_DAYS * 86_400;
    while let Some(&(at, id)) = index.delivered_order.front() {
        if at >= oldest && index.delivered_order.len() <= MAX_DELIVERED_IDS {
            break;
        }
        index.delivered_order.pop_front();
        if index.delivered.get(&id) == Some(&at) {
            index.delivered.remove(&id);
        }
    }
}

type Delivered = (HashMap<MailId, i64>, VecDeque<(i64, MailId)>);

/// Reads the journal, skipping malformed lines, keeping what is recent.
fn read_journal(path: &Path, now: DateTime<Utc>) -> io::Result<Delivered> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e),
    };
    let oldest = now.timestamp() - DELIVERED_RETENTION_DAYS * 86_400;
    let mut entries: Vec<(i64, MailId)> = Vec::new();
    let mut malformed = 0u64;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_JOURNAL_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') && read > MAX_JOURNAL_LINE_BYTES {
            // An overlong line: skip to its end.
            malformed += 1;
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let parsed = text
            .trim_end()
            .split_once(' ')
            .and_then(|(id, at)| Some((at.parse::<i64>().ok()?, MailId::parse(id)?)));
        match parsed {
            Some((at, id)) if at >= oldest => entries.push((at, id)),
            Some(_) => {}
            // A torn last line (a crash mid-append) lands here too.
            None => malformed += 1,
        }
        if entries.len() > 2 * MAX_DELIVERED_IDS {
            entries.sort();
            entries.drain(..entries.len() - MAX_DELIVERED_IDS);
        }
    }
    if malformed > 0 {
        tracing::warn!(
            lines = malformed,
            "mail spool: malformed lines in the delivered record skipped"
        );
    }
    entries.sort();
    if entries.len() > MAX_DELIVERED_IDS {
        entries.drain(..entries.len() - MAX_DELIVERED_IDS);
    }
    let mut delivered = HashMap::with_capacity(entries.len());
    for &(at, id) in &entries {
        delivered.insert(id, at);
    }
    Ok((delivered, entries.into_iter().collect()))
}

/// Writes the live entries as the new journal (atomically) and opens it for
/// appending.
fn rewrite_journal(
    root: &Path,
    path: &Path,
    entries: &VecDeque<(i64, MailId)>,
) -> io::Result<File> {
    let mut text = String::with_capacity(entries.len() * 50);
    for (at, id) in entries {
        text.push_str(&format!("{id} {at}\n"));
    }
    write_atomically(root, JOURNAL, text.as_bytes())?;
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_separate_their_causes() {
        let event = uuid::Uuid::now_v7();
        assert_eq!(
            MailId::for_event(MailKind::DepositConfirmation, event),
            MailId::for_event(MailKind::DepositConfirmation, event)
        );
        assert_ne!(
            MailId::for_event(MailKind::DepositConfirmation, event),
            MailId::for_event(MailKind::DeletionScheduled, event)
        );
        // Length prefixes: moving a byte between parts changes the id.
        assert_ne!(
            MailId::derive(&[b"ab", b"c"]),
            MailId::derive(&[b"a", b"bc"])
        );
        let id = MailId::for_verification("token");
        assert_eq!(MailId::parse(&id.to_string()), Some(id));
        assert_eq!(MailId::parse("not-an-id"), None);
        assert_eq!(
            MailId::parse(&format!("{}", uuid::Uuid::nil().hyphenated())),
            None
        );
    }
}
