//! Transactional mail: address verification, deposit confirmations, account
//! deletion (scheduled, done) and policy-change notices.
//!
//! # Never blocking a request, never losing a mail
//!
//! [`Mailer::send`] renders the message, checks it, writes it to the durable
//! spool ([`spool`]: one file per mail under `<data-dir>/mail/spool/`, sealed
//! under the recipient account's vault key, written atomically and fsynced)
//! and only then answers `Ok` and queues it in memory; it never waits on the
//! network. After delivery the file is removed; at start every spooled mail
//! is loaded and delivered, so a crash loses nothing. Erasing the account
//! shreds its spooled mails: they are dropped (and counted), never sent.
//!
//! Every mail has a [`MailId`] derived from what caused it (an event, an
//! announcement and an account, a verification token). Sending an id that is
//! spooled already, or was delivered in the last
//! [`spool::DELIVERED_RETENTION_DAYS`] days, is a no-op
//! ([`Accepted::Duplicate`]): a caller that replays its work after a crash
//! mails nobody twice (exactly once up to the SMTP server's acceptance; a
//! crash between that acceptance and the delivery record sends it again).
//!
//! The queue is bounded ([`MailerConfig::queue_capacity`], 10,000 by default)
//! and counts every mail not finished yet, the ones waiting for a retry
//! included: when it is full, `send` answers [`MailError::QueueFull`] (and the
//! report counts it), nothing is dropped silently. Mails restored at start
//! are queued whatever the capacity (they were accepted before).
//!
//! # Retries and the failure report
//!
//! A worker task delivers with a few sends in parallel. A failed attempt is
//! retried with exponential back-off ([`RetryPolicy`]: 8 attempts, 7 s doubling,
//! about 15 minutes in all), whatever the failure: a temporary 4xx answer, a
//! refused connection, and a permanent 5xx too, since a 5xx from a
//! misconfigured relay (authentication, relaying denied) is often fixed by an
//! operator within the window. A mail still not sent after the last attempt is
//! recorded in the [`MailReport`] (a counter and the last error per kind),
//! logged at warn with its kind and a redacted recipient (`a***@example.com`),
//! and kept, still sealed, in the spool's `failed/` part
//! ([`MailerConfig::failed_capacity`] mails; beyond, `send` answers
//! [`MailError::SpoolFull`]). Failed mails are tried again at the next start:
//! the operator's path after fixing the relay is a restart.
//! [`Mailer::drain`] (a graceful stop) waits a moment; what is not sent by
//! then stays spooled for the next start.
//! No log line and no report ever holds a full address or a token: errors
//! from servers are scrubbed ([`redact::scrub`]).
//!
//! # Transports
//!
//! - [`MailTransport::Smtp`]: lettre over tokio; `smtp://host:port` in plain,
//!   `smtp://host:port?tls=required` with STARTTLS, `smtps://host:port` with
//!   TLS from the first byte (rustls); credentials in the URL or given apart.
//! - [`MailTransport::Outbox`]: one RFC 5322 `.eml` file per message in a
//!   folder (`<data-dir>/outbox/`, the embedded default), written atomically
//!   (a hidden temporary file, flushed, then renamed), readable by the owner
//!   only. A development aid: these files hold addresses and tokens in plain.

pub mod mail;
pub mod redact;
pub mod spool;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use nexus_core::domain::clock::{Clock, SystemClock};
use nexus_core::domain::ids::AccountId;
use nexus_core::vault::Vault;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

pub use mail::{Mail, MailKind, MailSettings, Recipient, POLICY_NOTICE_DAYS};
pub use redact::redact_address;
pub use spool::{MailId, MAX_MESSAGE_BYTES};

use spool::{Loaded, Outgoing, Reserved, Spool};

/// Why a mail was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("the mail queue is full ({capacity} mails waiting)")]
    QueueFull { capacity: usize },
    #[error("the mail spool's failed part is full ({capacity} mails); an operator must act")]
    SpoolFull { capacity: usize },
    #[error("the recipient's account was erased")]
    RecipientErased,
    #[error("the mail is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the mail spool: {0}")]
    Spool(String),
    #[error("the mailer has stopped")]
    Closed,
    #[error("not a valid e-mail address")]
    InvalidAddress,
    #[error("a policy change must be announced at least {POLICY_NOTICE_DAYS} days ahead")]
    NoticeTooShort,
    #[error("the mail could not be built: {0}")]
    Render(String),
    #[error("mailer configuration: {0}")]
    Config(String),
}

/// SMTP credentials. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SmtpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SmtpCredentials(..)")
    }
}

/// Where mail goes.
#[derive(Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// `smtp://host:port`, `smtp://host:port?tls=required` or
    /// `smtps://host:port`, optionally `user:password@` (percent-encoded);
    /// `credentials`, when given, take precedence.
    Smtp {
        url: String,
        credentials: Option<SmtpCredentials>,
    },
    /// One `.eml` file per message in `dir`.
    Outbox { dir: PathBuf },
}

impl MailTransport {
    /// The embedded default: `<data_dir>/outbox/`.
    pub fn outbox_in(data_dir: &Path) -> MailTransport {
        MailTransport::Outbox {
            dir: data_dir.join("outbox"),
        }
    }
}

impl std::fmt::Debug for MailTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailTransport::Smtp { url, credentials } => {
                // Only the scheme, host and port: a URL may hold a password.
                let shown = url
                    .split_once("://")
                    .map(|(scheme, rest)| {
                        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                        format!("{scheme}://{rest}")
                    })
                    .unwrap_or_else(|| "?".into());
                f.debug_struct("Smtp")
                    .field("url", &shown)
                    .field("credentials", credentials)
                    .finish()
            }
            MailTransport::Outbox { dir } => f.debug_struct("Outbox").field("dir", dir).finish(),
        }
    }
}

/// How failed sends are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait after the first failure; each next wait doubles.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about 15 minutes: waits of 7, 14, 28, 56, 112, 224 and
    /// 448 seconds.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            first_delay: Duration::from_secs(7),
            max_delay: Duration::from_secs(448),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

impl MailError {
    /// A refusal that can pass (a full queue, a disk error, a stopped
    /// mailer): the caller may try the same mail again later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MailError::QueueFull { .. }
                | MailError::SpoolFull { .. }
                | MailError::Spool(_)
                | MailError::Closed
        )
    }
}

/// What [`Mailer::send`] did with a mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Spooled durably and queued.
    Spooled,
    /// A mail with this id is spooled already or was delivered recently:
    /// nothing done.
    Duplicate,
}

#[derive(Clone, Debug)]
pub struct MailerConfig {
    pub transport: MailTransport,
    pub settings: MailSettings,
    /// The spool folder (`<data-dir>/mail/spool/`, see [`MailerConfig::spool_in`]).
    pub spool_dir: PathBuf,
    /// Mails accepted and not finished (queued, sending or waiting for a
    /// retry) at most.
    pub queue_capacity: usize,
    /// Mails in the spool's failed part at most; when full, `send` refuses.
    pub failed_capacity: usize,
    /// Sends in parallel.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// Bound on one SMTP attempt.
    pub smtp_timeout: Duration,
}

impl MailerConfig {
    pub fn new(transport: MailTransport, settings: MailSettings, spool_dir: PathBuf) -> Self {
        Self {
            transport,
            settings,
            spool_dir,
            queue_capacity: 10_000,
            failed_capacity: 10_000,
            concurrency: 4,
            retry: RetryPolicy::default(),
            smtp_timeout: Duration::from_secs(30),
        }
    }

    /// The spool folder in a data dir: `<data_dir>/mail/spool/`.
    pub fn spool_in(data_dir: &Path) -> PathBuf {
        data_dir.join("mail").join("spool")
    }
}

/// Mails of one kind that could not be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindFailures {
    pub count: u64,
    /// The last error, scrubbed of addresses and tokens.
    pub last_error: String,
    /// Redacted.
    pub last_recipient: String,
    pub last_at: DateTime<Utc>,
}

/// What the mailer did since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailReport {
    /// Accepted and not finished (queued, sending or waiting for a retry).
    pub pending: usize,
    pub sent: u64,
    /// Failed attempts that were retried.
    pub retried: u64,
    /// Mails given up after the last attempt.
    pub failed: u64,
    /// Mails refused because the queue (or the failed part) was full.
    pub rejected_queue_full: u64,
    pub failures: BTreeMap<MailKind, KindFailures>,
    /// Sends of an id already spooled or delivered recently (nothing done).
    pub duplicates: u64,
    /// Spooled mails dropped because their account was erased.
    pub dropped_erased: u64,
    /// Spool files that could not be read (moved to `unreadable/`).
    pub unreadable: u64,
    /// Mails found in the spool at start and queued again.
    pub restored: u64,
    /// Mails in the spool's failed part now.
    pub failed_spooled: usize,
}

/// A queued mail: its contents stay sealed in the spool until an attempt.
struct Job {
    id: MailId,
    kind: MailKind,
    /// Redacted.
    recipient: String,
}

enum Sender {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

impl Sender {
    fn new(config: &MailerConfig) -> Result<Sender, MailError> {
        match &config.transport {
            MailTransport::Smtp { url, credentials } => {
                if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                    return Err(MailError::Config(
                        "the SMTP URL must start with smtp:// or smtps://".into(),
                    ));
                }
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|_| MailError::Config("the SMTP URL is not valid".into()))?
                    .timeout(Some(config.smtp_timeout));
                if let Some(c) = credentials {
                    builder = builder
                        .credentials(Credentials::new(c.username.clone(), c.password.clone()));
                }
                Ok(Sender::Smtp(builder.build()))
            }
            MailTransport::Outbox { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    MailError::Config(format!("cannot create the outbox folder: {}", e.kind()))
                })?;
                Ok(Sender::Outbox(dir.clone()))
            }
        }
    }

    async fn send(
        &self,
        from: &lettre::Address,
        kind: MailKind,
        letter: &spool::Letter,
    ) -> Result<(), String> {
        match self {
            Sender::Smtp(transport) => {
                let envelope = Envelope::new(Some(from.clone()), vec![letter.to.clone()])
                    .map_err(|e| e.to_string())?;
                transport
                    .send_raw(&envelope, &letter.message)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Sender::Outbox(dir) => {
                let dir = dir.clone();
                let bytes = letter.message.clone();
                tokio::task::spawn_blocking(move || write_eml(&dir, kind, &bytes))
                    .await
                    .map_err(|_| "the outbox writer stopped".to_owned())?
                    .map(|_| ())
                    .map_err(|e| format!("outbox: {}", e.kind()))
            }
        }
    }
}

/// Writes one message: a hidden temporary file, flushed, then renamed to
/// `<time>-<kind>-<uuid>.eml`. Readers never see a partial file.
fn write_eml(dir: &Path, kind: MailKind, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let id = uuid::Uuid::new_v4().simple();
    let name = format!(
        "{}-{}-{id}.eml",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        kind.as_str()
    );
    let temp = dir.join(format!(".{id}.tmp"));
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
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
        std::fs::rename(&temp, &path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map(|_| path)
}

struct Shared {
    config: MailerConfig,
    clock: Arc<dyn Clock>,
    spool: Arc<Spool>,
    /// The envelope sender.
    from: lettre::Address,
    /// Mails accepted and not finished.
    pending: watch::Sender<usize>,
    report: Mutex<MailReport>,
}

impl Shared {
    fn finish(&self) {
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }

    fn report(&self) -> std::sync::MutexGuard<'_, MailReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The mail queue and its worker. Cheap to clone; every clone feeds the same
/// worker.
#[derive(Clone)]
pub struct Mailer {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Job>,
}

impl Mailer {
    /// Opens the spool (sealing with `vault`), queues every mail found in it,
    /// and starts the worker on the current tokio runtime (call from within
    /// one; outside, a [`MailError::Config`]). One mailer per spool folder.
    pub fn start(config: MailerConfig, vault: Arc<Vault>) -> Result<Mailer, MailError> {
        Mailer::start_with_clock(config, vault, Arc::new(SystemClock))
    }

    pub fn start_with_clock(
        config: MailerConfig,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
    ) -> Result<Mailer, MailError> {
        if config.queue_capacity == 0
            || config.failed_capacity == 0
            || config.concurrency == 0
            || config.retry.max_attempts == 0
        {
            return Err(MailError::Config(
                "queue and failed capacities, concurrency and attempts must be at least 1".into(),
            ));
        }
        let from = config
            .settings
            .from
            .parse::<lettre::message::Mailbox>()
            .map_err(|_| MailError::Config("the sender address is not valid".into()))?
            .email;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| MailError::Config("the mailer starts inside a tokio runtime".into()))?;
        let sender = Arc::new(Sender::new(&config)?);
        let (spool, recovery) = Spool::open(&config.spool_dir, vault, clock.now())?;
        let restored = recovery.restored.len();
        if restored > 0 || recovery.dropped_erased > 0 || recovery.unreadable > 0 {
            info!(
                restored,
                dropped_erased = recovery.dropped_erased,
                unreadable = recovery.unreadable,
                already_delivered = recovery.already_delivered,
                "mail spool loaded"
            );
        }
        let (pending, _) = watch::channel(restored);
        let shared = Arc::new(Shared {
            config,
            clock,
            spool: Arc::new(spool),
            from,
            pending,
            report: Mutex::new(MailReport {
                dropped_erased: recovery.dropped_erased,
                unreadable: recovery.unreadable,
                restored: restored as u64,
                ..MailReport::default()
            }),
        });
        let (queue, jobs) = mpsc::unbounded_channel();
        for mail in recovery.restored {
            // The receiver is alive: it is ours, not spawned yet.
            let _ = queue.send(Job {
                id: mail.id,
                kind: mail.kind,
                recipient: mail.recipient,
            });
        }
        runtime.spawn(dispatch(shared.clone(), sender, jobs));
        Ok(Mailer { shared, queue })
    }

    /// Spools a mail for `account` (its contents sealed under the account's
    /// vault key, which must exist: every registered account has one) and
    /// queues it. Answers once the spool file is on disk (an fsync, never the
    /// network). A mail whose `id` is spooled already or was delivered
    /// recently is not sent again ([`Accepted::Duplicate`], counted). Refused
    /// when the queue or the failed part is full (counted in the report),
    /// when the mail is not valid or too large, when the account was erased,
    /// or when the spool cannot be written.
    pub fn send(&self, id: MailId, account: AccountId, mail: Mail) -> Result<Accepted, MailError> {
        let kind = mail.kind();
        mail.validate(self.shared.clock.now())?;
        let message = mail
            .message_with_id(&self.shared.config.settings, &id.to_string())?
            .formatted();
        let spool = &self.shared.spool;
        if let Reserved::Duplicate = spool.reserve(id) {
            self.shared.report().duplicates += 1;
            debug!(kind = kind.as_str(), mail = %id, "mail already spooled or delivered");
            return Ok(Accepted::Duplicate);
        }
        let refuse = |error: MailError| {
            spool.unreserve(id);
            error
        };
        let failed_capacity = self.shared.config.failed_capacity;
        if spool.failed_count() >= failed_capacity {
            self.shared.report().rejected_queue_full += 1;
            warn!(
                kind = kind.as_str(),
                to = %mail.to().redacted(),
                capacity = failed_capacity,
                "mail refused: the spool's failed part is full"
            );
            return Err(refuse(MailError::SpoolFull {
                capacity: failed_capacity,
            }));
        }
        let capacity = self.shared.config.queue_capacity;
        let accepted = self.shared.pending.send_if_modified(|n| {
            if *n >= capacity {
                false
            } else {
                *n += 1;
                true
            }
        });
        if !accepted {
            self.shared.report().rejected_queue_full += 1;
            warn!(
                kind = kind.as_str(),
                to = %mail.to().redacted(),
                capacity,
                "mail refused: the queue is full"
            );
            return Err(refuse(MailError::QueueFull { capacity }));
        }
        let written = spool.write(
            &Outgoing {
                id,
                kind,
                subject: account.subject(),
                to: mail.to().address(),
                token: mail.secret(),
                message: &message,
            },
            self.shared.clock.now(),
        );
        if let Err(error) = written {
            self.shared.finish();
            warn!(kind = kind.as_str(), to = %mail.to().redacted(), error = %error, "mail not spooled");
            return Err(refuse(error));
        }
        let job = Job {
            id,
            kind,
            recipient: mail.to().redacted(),
        };
        if self.queue.send(job).is_err() {
            // Spooled: the next start sends it.
            self.shared.finish();
            return Err(MailError::Closed);
        }
        Ok(Accepted::Spooled)
    }

    pub fn report(&self) -> MailReport {
        let mut report = self.shared.report().clone();
        report.pending = *self.shared.pending.borrow();
        report.failed_spooled = self.shared.spool.failed_count();
        report
    }

    /// Waits until every accepted mail is sent or given up.
    pub async fn idle(&self) {
        let mut pending = self.shared.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// For a shutdown: waits up to `grace` for the queue to empty, and reports
    /// (at warn) and returns how many mails were still pending. They stay in
    /// the spool and are sent after the next start.
    pub async fn drain(&self, grace: Duration) -> usize {
        let _ = tokio::time::timeout(grace, self.idle()).await;
        let left = *self.shared.pending.borrow();
        if left > 0 {
            warn!(pending = left, "mailer stopping with mails not sent");
        }
        left
    }
}

async fn dispatch(
    shared: Arc<Shared>,
    sender: Arc<Sender>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency));
    while let Some(job) = jobs.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        tokio::spawn(deliver(
            shared.clone(),
            sender.clone(),
            slots.clone(),
            slot,
            job,
        ));
    }
}

/// Runs blocking spool work off the runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

/// Sends one mail, retrying with back-off; the slot is given back while
/// waiting. Each attempt opens the spooled mail afresh, so an account erased
/// meanwhile is never mailed.
async fn deliver(
    shared: Arc<Shared>,
    sender: Arc<Sender>,
    slots: Arc<Semaphore>,
    slot: tokio::sync::OwnedSemaphorePermit,
    job: Job,
) {
    let policy = shared.config.retry;
    let mut slot = Some(slot);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if slot.is_none() {
            slot = slots.clone().acquire_owned().await.ok();
        }
        let spool = shared.spool.clone();
        let id = job.id;
        let loaded = blocking(move || spool.load(id)).await;
        let letter = match loaded {
            Some(Ok(Loaded::Letter(letter))) => letter,
            Some(Ok(Loaded::Missing)) => {
                shared.spool.unreserve(id);
                warn!(kind = job.kind.as_str(), mail = %job.id, "spooled mail gone before delivery");
                break;
            }
            Some(Ok(Loaded::Erased)) => {
                let spool = shared.spool.clone();
                if let Some(Err(e)) = blocking(move || spool.drop_erased(id)).await {
                    warn!(mail = %job.id, error = %e, "removing an erased mail");
                }
                shared.report().dropped_erased += 1;
                info!(kind = job.kind.as_str(), mail = %job.id, "mail dropped: its account was erased");
                break;
            }
            Some(Err(why)) => {
                let spool = shared.spool.clone();
                blocking(move || spool.set_aside(id, &why)).await;
                shared.report().unreadable += 1;
                break;
            }
            None => {
                warn!(mail = %job.id, "the spool reader stopped; the mail stays spooled");
                break;
            }
        };
        let secrets: Vec<&str> = letter.secrets.iter().map(String::as_str).collect();
        let result = sender.send(&shared.from, job.kind, &letter).await;
        match result {
            Ok(()) => {
                shared.report().sent += 1;
                debug!(kind = job.kind.as_str(), to = %job.recipient, attempt, "mail sent");
                let spool = shared.spool.clone();
                let now = shared.clock.now();
                if let Some(Err(e)) = blocking(move || spool.delivered(id, now)).await {
                    // The file stays: the next start sends it again.
                    warn!(mail = %job.id, error = %e, "a sent mail was not recorded as delivered");
                }
                break;
            }
            Err(error) => {
                let error = redact::scrub(&error, &secrets);
                if attempt >= policy.max_attempts {
                    {
                        let mut report = shared.report();
                        report.failed += 1;
                        let at = shared.clock.now();
                        let entry = report.failures.entry(job.kind).or_insert(KindFailures {
                            count: 0,
                            last_error: String::new(),
                            last_recipient: String::new(),
                            last_at: at,
                        });
                        entry.count += 1;
                        entry.last_error = error.clone();
                        entry.last_recipient = job.recipient.clone();
                        entry.last_at = at;
                    }
                    let spool = shared.spool.clone();
                    if let Some(Err(e)) = blocking(move || spool.fail(id)).await {
                        warn!(mail = %job.id, error = %e, "moving a failed mail aside");
                    }
                    warn!(
                        kind = job.kind.as_str(),
                        to = %job.recipient,
                        attempts = attempt,
                        error = %error,
                        "mail could not be sent; given up, kept in the spool's failed part"
                    );
                    break;
                }
                let delay = policy.delay_after(attempt);
                shared.report().retried += 1;
                info!(
                    kind = job.kind.as_str(),
                    to = %job.recipient,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %error,
                    "mail not sent; will retry"
                );
                slot = None;
                tokio::time::sleep(delay).await;
            }
        }
    }
    drop(slot);
    shared.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_about_fifteen_minutes() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (1..policy.max_attempts)
            .map(|a| policy.delay_after(a).as_secs())
            .collect();
        assert_eq!(waits, [7, 14, 28, 56, 112, 224, 448]);
        let total: u64 = waits.iter().sum();
        assert!((840..=960).contains(&total), "{total} s");
        assert_eq!(policy.delay_after(40), policy.max_delay);
    }

    #[test]
    fn starting_outside_a_runtime_is_a_typed_error() {
        let dir = std::env::temp_dir().join(format!("nexus-outbox-{}", uuid::Uuid::new_v4()));
        let config = MailerConfig::new(
            MailTransport::Outbox { dir: dir.clone() },
            MailSettings::default(),
            MailerConfig::spool_in(&dir),
        );
        let store = nexus_core::Store::open(&nexus_core::StoreConfig {
            dir: dir.join("store"),
            master_key: nexus_core::vault::MasterKeySource::GenerateAt(dir.join("master.key")),
            cache_capacity_bytes: 8 << 20,
        })
        .unwrap();
        assert!(matches!(
            Mailer::start(config, store.vault.clone()),
            Err(MailError::Config(_))
        ));
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn transports_do_not_print_secrets() {
        let smtp = MailTransport::Smtp {
            url: "smtps://user:hunter22@mail.example:465".into(),
            credentials: Some(SmtpCredentials {
                username: "user".into(),
                password: "hunter22".into(),
            }),
        };
        let shown = format!("{smtp:?}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert!(shown.contains("smtps://mail.example:465"), "{shown}");
    }
}
