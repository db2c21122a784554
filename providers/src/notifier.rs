//! Transactional mail queued from events: a process manager that follows the log
//! and asks the mailer to send a deposit confirmation for every credited deposit
//! and a notice for every deletion request. Each mail's id is derived from the
//! event that caused it ([`MailId::for_event`]), and the mailer spools it durably
//! before answering, then drops a repeat of an id it holds or delivered
//! recently. The notifier keeps its position in a small file (written
//! atomically) *after* the mails of a batch are spooled: a crash in between
//! handles those events again, and their mails are deduplicated by id. So every
//! mail is sent exactly once up to the SMTP server's acceptance. A mail the
//! mailer refuses for a passing reason (a full queue, a disk error) is asked
//! for again until spooled or until shutdown; the position does not pass its
//! event before. The verification mail is not here: its token exists only in
//! the request that made it (the log keeps a hash).
//!
//! # Policy-change announcements
//!
//! On a `PolicyChangeAnnounced` event, every account registered before the
//! announcement (its `AccountRegistered` sits at a lower log position) that is
//! still active when its turn comes is mailed the notice, verified or not. An
//! account with a deletion pending, or erased, is not mailed: it is disabled
//! and its owner asked to leave. Accounts are taken in log order, in groups of
//! [`POLICY_MAILS_PER_STEP`]: a group's notices are spooled first (each with
//! the id [`MailId::for_policy_notice`] of the announcement and the account),
//! and only then is the position of its last account written to a progress
//! file per announcement (`notifier.policy-<id>.position`, written atomically
//! and synced). A crash in between resumes the walk at the same group, whose
//! notices the mailer recognizes by id and does not send again; a crash after
//! it resumes after the group, whose notices are safe in the spool. So every
//! registered, non-erased account is mailed once per announcement, exactly once
//! up to the SMTP server's acceptance. The walk waits while the mailer has
//! [`MAX_PENDING_MAILS`] or more mails pending, and stops between two groups
//! on shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nexus_core::domain::account::{AccountEvent, AccountView, AccountViewStatus};
use nexus_core::domain::codec::{DomainEvent, Personal};
use nexus_core::domain::deposit::{DepositEvent, DepositRequested};
use nexus_core::domain::ids::AccountId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::policy::{PolicyChangeAnnounced, PolicyEvent, POLICY_CHANGES_STREAM};
use nexus_core::domain::wallet::{DepositOutcome, WalletEvent};
use nexus_core::log::{AllSubscription, EventStore, LogError, RecordedEvent};
use nexus_core::service::account_service::Accounts;
use nexus_core::vault::Vault;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::mailer::{Mail, MailId, MailKind, Mailer, Recipient};

/// Events read per batch.
const BATCH: usize = 500;
/// Policy notices handed to the mailer per step of an announcement's walk (the
/// progress file is written once per step).
pub const POLICY_MAILS_PER_STEP: usize = 50;
/// The walk waits while the mailer has this many mails or more not finished,
/// so a large user base never fills the mailer's queue.
pub const MAX_PENDING_MAILS: usize = 1_000;
/// How often a waiting walk looks at the mailer's queue again.
const PENDING_POLL: Duration = Duration::from_millis(50);
/// The wait before asking again for a mail the mailer refused for a passing
/// reason (a full queue, a disk error).
const SPOOL_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the notifier's checkpoint: {0}")]
    Checkpoint(#[from] std::io::Error),
}

pub struct Notifier<S: EventStore> {
    store: Arc<S>,
    vault: Arc<Vault>,
    accounts: Arc<Accounts<S>>,
    mailer: Mailer,
    /// Holds the last position handled, as decimal text.
    checkpoint: PathBuf,
}

impl<S: EventStore> Notifier<S> {
    pub fn new(
        store: Arc<S>,
        vault: Arc<Vault>,
        accounts: Arc<Accounts<S>>,
        mailer: Mailer,
        checkpoint: PathBuf,
    ) -> Self {
        Self {
            store,
            vault,
            accounts,
            mailer,
            checkpoint,
        }
    }

    fn read_checkpoint(&self) -> Result<Option<u64>, NotifierError> {
        match std::fs::read_to_string(&self.checkpoint) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write_checkpoint(&self, position: u64) -> Result<(), NotifierError> {
        let tmp = self.checkpoint.with_extension("tmp");
        std::fs::write(&tmp, position.to_string())?;
        std::fs::rename(&tmp, &self.checkpoint)?;
        Ok(())
    }

    /// Runs until `shutdown` turns true. A first start begins at the head: mail
    /// is for what happens from now on, not for history.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), NotifierError> {
        let from = match self.read_checkpoint()? {
            Some(position) => position + 1,
            None => {
                let head = self.store.head();
                self.write_checkpoint(head)?;
                head + 1
            }
        };
        let mut subscription = AllSubscription::new(self.store.clone(), from, BATCH);
        loop {
            let batch = tokio::select! {
                batch = subscription.next_batch() => batch?,
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    continue;
                }
            };
            for record in &batch {
                if !self.handle(record, &shutdown).await? {
                    // Stopped inside an announcement's walk: it resumes from
                    // its progress file at the next start.
                    self.write_checkpoint(record.position.saturating_sub(1))?;
                    return Ok(());
                }
            }
            if let Some(last) = batch.last() {
                self.write_checkpoint(last.position)?;
            }
        }
    }

    /// Handles one event; false when a shutdown stopped it half-way.
    async fn handle(
        &self,
        record: &RecordedEvent,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<bool, NotifierError> {
        let stream = record.stream.as_str();
        if stream == POLICY_CHANGES_STREAM {
            if let Ok(PolicyEvent::PolicyChangeAnnounced(e)) =
                PolicyEvent::decode(&record.event_type, record.schema_version, &record.payload)
            {
                return self.announce(record.position, &e, shutdown).await;
            }
        } else if stream.starts_with("wallet-account-") {
            if let Ok(WalletEvent::WalletDepositCredited(e)) =
                WalletEvent::decode(&record.event_type, record.schema_version, &record.payload)
            {
                let Some(Owner::Account(account)) = self.deposit_owner(e.deposit).await else {
                    return Ok(true);
                };
                let invoiced = self.invoiced(e.deposit).await.unwrap_or(e.entry.amount);
                let late = e.late;
                let credited = e.entry.amount;
                debug_assert!(matches!(
                    e.outcome,
                    DepositOutcome::Exact | DepositOutcome::Partial | DepositOutcome::Over
                ));
                let id = MailId::for_event(MailKind::DepositConfirmation, record.id.0);
                let make = |to, view: &AccountView| Mail::DepositConfirmation {
                    to,
                    deposit: e.deposit,
                    invoiced,
                    credited,
                    late,
                    deletion_due_at: view.deletion_due_at,
                };
                return Ok(self.mail(id, account, make, shutdown).await);
            }
        } else if let Some(hex) = stream.strip_prefix("account-") {
            if let Ok(AccountEvent::AccountDeletionRequested(e)) =
                AccountEvent::decode(&record.event_type, record.schema_version, &record.payload)
            {
                let Some(account) = AccountId::parse(hex) else {
                    return Ok(true);
                };
                let id = MailId::for_event(MailKind::DeletionScheduled, record.id.0);
                let make = |to, _: &AccountView| Mail::DeletionScheduled {
                    to,
                    effective_at: e.erase_due_at,
                    forfeit_balance: e.forfeit_balance.unwrap_or_default(),
                };
                return Ok(self.mail(id, account, make, shutdown).await);
            }
        }
        Ok(true)
    }

    /// The progress file of one announcement's walk.
    fn policy_progress_path(&self, change: &PolicyChangeAnnounced) -> PathBuf {
        self.checkpoint
            .with_file_name(format!("notifier.policy-{}.position", change.id))
    }

    fn read_policy_progress(&self, path: &std::path::Path) -> Result<u64, NotifierError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the progress durably (a synced temporary file, renamed) after
    /// the mails it covers are spooled.
    fn write_policy_progress(
        &self,
        path: &std::path::Path,
        position: u64,
    ) -> Result<(), NotifierError> {
        use std::io::Write as _;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(position.to_string().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    /// Mails the announcement to every account registered before `position`,
    /// resuming after the progress file. False when a shutdown stopped it.
    async fn announce(
        &self,
        position: u64,
        change: &PolicyChangeAnnounced,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<bool, NotifierError> {
        let progress = self.policy_progress_path(change);
        let mut done = self.read_policy_progress(&progress)?;
        let mut mailed = 0u64;
        while done + 1 < position {
            let limit = usize::try_from(position - 1 - done).map_or(BATCH, |n| n.min(BATCH));
            let records = self.store.read_all(done + 1, limit).await?;
            let Some(last) = records.last().map(|r| r.position) else {
                break;
            };
            let registered: Vec<(u64, AccountId)> = records
                .iter()
                .filter(|r| r.position < position && r.event_type == "AccountRegistered")
                .filter_map(|r| {
                    let id = r.stream.as_str().strip_prefix("account-")?;
                    AccountId::parse(id).map(|account| (r.position, account))
                })
                .collect();
            for step in registered.chunks(POLICY_MAILS_PER_STEP) {
                if !self.wait_for_mailer(shutdown).await {
                    return Ok(false);
                }
                let step_end = step.last().map_or(done, |(p, _)| *p);
                for (_, account) in step {
                    match self.mail_policy(*account, change, shutdown).await {
                        Some(true) => mailed += 1,
                        Some(false) => {}
                        // Stopped before the group was spooled: the progress
                        // stays before it, and its spooled notices are
                        // recognized by id at the next start.
                        None => return Ok(false),
                    }
                }
                self.write_policy_progress(&progress, step_end)?;
                done = step_end;
            }
            done = done.max(last.min(position - 1));
        }
        self.write_policy_progress(&progress, position.saturating_sub(1))?;
        info!(
            announcement = %change.id,
            mailed,
            "policy change: notices spooled"
        );
        Ok(true)
    }

    /// Waits while the mailer's queue is long; false on shutdown.
    async fn wait_for_mailer(&self, shutdown: &watch::Receiver<bool>) -> bool {
        loop {
            if *shutdown.borrow() {
                return false;
            }
            if self.mailer.report().pending < MAX_PENDING_MAILS {
                return true;
            }
            tokio::time::sleep(PENDING_POLL).await;
        }
    }

    /// Spools the notice to an active account (verified or not): whether it
    /// was asked for, `None` when a shutdown stopped the wait for a mailer
    /// that refused for a passing reason.
    async fn mail_policy(
        &self,
        account: AccountId,
        change: &PolicyChangeAnnounced,
        shutdown: &watch::Receiver<bool>,
    ) -> Option<bool> {
        let view = match self.accounts.account(account).await {
            Ok(view) => view,
            Err(e) => {
                debug!(error = %e, "no policy notice: the account cannot be read");
                return Some(false);
            }
        };
        if view.status != AccountViewStatus::Active {
            return Some(false);
        }
        let Personal::Plain(address) = &view.email else {
            return Some(false);
        };
        let to = match Recipient::parse(address) {
            Ok(to) => to,
            Err(e) => {
                warn!(error = %e, "no policy notice: the address does not parse");
                return Some(false);
            }
        };
        let mail = Mail::PolicyChange {
            to,
            title: change.title.clone(),
            summary: change.summary.clone(),
            effective_at: change.effective_at,
            url: change.url.clone(),
        };
        let id = MailId::for_policy_notice(&change.id.to_string(), account.0);
        self.spool(id, account, mail, shutdown)
            .await
            .then_some(true)
    }

    /// Hands a mail to the mailer; a refusal for a passing reason is asked
    /// again after [`SPOOL_RETRY`]. False only when a shutdown stopped it
    /// before the mail was spooled.
    async fn spool(
        &self,
        id: MailId,
        account: AccountId,
        mail: Mail,
        shutdown: &watch::Receiver<bool>,
    ) -> bool {
        let mut warned = false;
        loop {
            match self.mailer.send(id, account, mail.clone()) {
                Ok(_) => return true,
                Err(e) if e.is_transient() => {
                    if !warned {
                        warn!(error = %e, kind = mail.kind().as_str(), "a mail was not spooled; asking again");
                        warned = true;
                    }
                    tokio::time::sleep(SPOOL_RETRY).await;
                    if *shutdown.borrow() {
                        return false;
                    }
                }
                Err(e) => {
                    warn!(error = %e, kind = mail.kind().as_str(), "a mail was not spooled");
                    return true;
                }
            }
        }
    }

    async fn deposit_owner(&self, deposit: nexus_core::domain::ids::DepositId) -> Option<Owner> {
        self.requested(deposit).await.map(|r| r.owner)
    }

    async fn invoiced(
        &self,
        deposit: nexus_core::domain::ids::DepositId,
    ) -> Option<nexus_core::domain::money::Micros> {
        self.requested(deposit).await.map(|r| r.amount)
    }

    async fn requested(
        &self,
        deposit: nexus_core::domain::ids::DepositId,
    ) -> Option<DepositRequested> {
        let records = self
            .store
            .read_stream(
                &deposit.stream(),
                1,
                nexus_core::log::Direction::Forwards,
                1,
            )
            .await
            .ok()?;
        match DepositEvent::from_recorded(records.first()?, &self.vault).ok()? {
            DepositEvent::DepositRequested(r) => Some(r),
            _ => None,
        }
    }

    /// Spools a mail to the account's current address (nothing once erased);
    /// false when a shutdown stopped it before the mail was spooled.
    async fn mail(
        &self,
        id: MailId,
        account: AccountId,
        make: impl FnOnce(Recipient, &AccountView) -> Mail,
        shutdown: &watch::Receiver<bool>,
    ) -> bool {
        let view = match self.accounts.account(account).await {
            Ok(view) => view,
            Err(e) => {
                debug!(error = %e, "no mail: the account cannot be read");
                return true;
            }
        };
        let Personal::Plain(address) = &view.email else {
            return true;
        };
        let to = match Recipient::parse(address) {
            Ok(to) => to,
            Err(e) => {
                warn!(error = %e, "no mail: the address does not parse");
                return true;
            }
        };
        let mail = make(to, &view);
        self.spool(id, account, mail, shutdown).await
    }
}
