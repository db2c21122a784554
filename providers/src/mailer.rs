//! Transactional mail: address verification, deposit confirmations, account
//! deletion (scheduled, done) and policy-change notices.
//!
//! # Never blocking a request
//!
//! [`Mailer::send`] renders the message, checks it, and queues it; it never
//! waits on the network. The queue is bounded ([`MailerConfig::queue_capacity`],
//! 10,000 by default) and counts every mail not finished yet, the ones waiting
//! for a retry included: when it is full, `send` answers
//! [`MailError::QueueFull`] (and the report counts it), nothing is dropped
//! silently.
//!
//! # Retries and the failure report
//!
//! A worker task delivers with a few sends in parallel. A failed attempt is
//! retried with exponential back-off ([`RetryPolicy`]: 8 attempts, 7 s doubling,
//! about 15 minutes in all), whatever the failure: a temporary 4xx answer, a
//! refused connection, and a permanent 5xx too, since a 5xx from a
//! misconfigured relay (authentication, relaying denied) is often fixed by an
//! operator within the window. A mail still not sent after the last attempt is
//! recorded in the [`MailReport`] (a counter and the last error per kind) and
//! logged at warn with its kind and a redacted recipient (`a***@example.com`).
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

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use nexus_core::domain::clock::{Clock, SystemClock};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

pub use mail::{Mail, MailKind, MailSettings, Recipient, POLICY_NOTICE_DAYS};
pub use redact::redact_address;

/// Why a mail was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    #[error("the mail queue is full ({capacity} mails waiting)")]
    QueueFull { capacity: usize },
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

#[derive(Clone, Debug)]
pub struct MailerConfig {
    pub transport: MailTransport,
    pub settings: MailSettings,
    /// Mails accepted and not finished (queued, sending or waiting for a
    /// retry) at most.
    pub queue_capacity: usize,
    /// Sends in parallel.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// Bound on one SMTP attempt.
    pub smtp_timeout: Duration,
}

impl MailerConfig {
    pub fn new(transport: MailTransport, settings: MailSettings) -> Self {
        Self {
            transport,
            settings,
            queue_capacity: 10_000,
            concurrency: 4,
            retry: RetryPolicy::default(),
            smtp_timeout: Duration::from_secs(30),
        }
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
    /// Mails refused because the queue was full.
    pub rejected_queue_full: u64,
    pub failures: BTreeMap<MailKind, KindFailures>,
}

struct Job {
    kind: MailKind,
    recipient: String,
    /// The full address and the token, to scrub from errors.
    secrets: Vec<String>,
    message: Message,
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

    async fn send(&self, job: &Job) -> Result<(), String> {
        match self {
            Sender::Smtp(transport) => transport
                .send(job.message.clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Sender::Outbox(dir) => {
                let dir = dir.clone();
                let bytes = job.message.formatted();
                let kind = job.kind;
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
    /// Starts the worker on the current tokio runtime (call from within one;
    /// outside, a [`MailError::Config`]).
    pub fn start(config: MailerConfig) -> Result<Mailer, MailError> {
        Mailer::start_with_clock(config, Arc::new(SystemClock))
    }

    pub fn start_with_clock(
        config: MailerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Mailer, MailError> {
        if config.queue_capacity == 0 || config.concurrency == 0 || config.retry.max_attempts == 0 {
            return Err(MailError::Config(
                "queue capacity, concurrency and attempts must be at least 1".into(),
            ));
        }
        config
            .settings
            .from
            .parse::<lettre::message::Mailbox>()
            .map_err(|_| MailError::Config("the sender address is not valid".into()))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| MailError::Config("the mailer starts inside a tokio runtime".into()))?;
        let sender = Arc::new(Sender::new(&config)?);
        let (pending, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            config,
            clock,
            pending,
            report: Mutex::new(MailReport::default()),
        });
        let (queue, jobs) = mpsc::unbounded_channel();
        runtime.spawn(dispatch(shared.clone(), sender, jobs));
        Ok(Mailer { shared, queue })
    }

    /// Queues a mail; never waits. Refused when the queue is full (counted in
    /// the report), when the mail is not valid, or after the worker stopped.
    pub fn send(&self, mail: Mail) -> Result<(), MailError> {
        let kind = mail.kind();
        mail.validate(self.shared.clock.now())?;
        let message = mail.message(&self.shared.config.settings)?;
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
            return Err(MailError::QueueFull { capacity });
        }
        let mut secrets = vec![mail.to().address().to_owned()];
        secrets.extend(mail.secret().map(str::to_owned));
        let job = Job {
            kind,
            recipient: mail.to().redacted(),
            secrets,
            message,
        };
        if self.queue.send(job).is_err() {
            self.shared.finish();
            return Err(MailError::Closed);
        }
        Ok(())
    }

    pub fn report(&self) -> MailReport {
        let mut report = self.shared.report().clone();
        report.pending = *self.shared.pending.borrow();
        report
    }

    /// Waits until every accepted mail is sent or given up.
    pub async fn idle(&self) {
        let mut pending = self.shared.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// For a shutdown: waits up to `grace` for the queue to empty, and reports
    /// (at warn) and returns how many mails were still pending.
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

/// Sends one mail, retrying with back-off; the slot is given back while waiting.
async fn deliver(
    shared: Arc<Shared>,
    sender: Arc<Sender>,
    slots: Arc<Semaphore>,
    slot: tokio::sync::OwnedSemaphorePermit,
    job: Job,
) {
    let policy = shared.config.retry;
    let secrets: Vec<&str> = job.secrets.iter().map(String::as_str).collect();
    let mut slot = Some(slot);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if slot.is_none() {
            slot = slots.clone().acquire_owned().await.ok();
        }
        let result = sender.send(&job).await;
        match result {
            Ok(()) => {
                shared.report().sent += 1;
                debug!(kind = job.kind.as_str(), to = %job.recipient, attempt, "mail sent");
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
                    warn!(
                        kind = job.kind.as_str(),
                        to = %job.recipient,
                        attempts = attempt,
                        error = %error,
                        "mail could not be sent; given up"
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
        );
        assert!(matches!(Mailer::start(config), Err(MailError::Config(_))));
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
