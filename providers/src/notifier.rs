//! Transactional mail queued from events: a process manager that follows the log
//! and asks the mailer to send a deposit confirmation for every credited deposit
//! and a notice for every deletion request. It keeps its position in a small file
//! (written atomically), so a restart neither skips an event nor mails twice for
//! one it had finished. The verification mail is not here: its token exists only
//! in the request that made it (the log keeps a hash).

use std::path::PathBuf;
use std::sync::Arc;

use nexus_core::domain::account::AccountEvent;
use nexus_core::domain::accounts::Accounts;
use nexus_core::domain::codec::{DomainEvent, Personal};
use nexus_core::domain::deposit::{DepositEvent, DepositRequested};
use nexus_core::domain::ids::AccountId;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::wallet::{DepositOutcome, WalletEvent};
use nexus_core::log::{AllSubscription, EventStore, LogError, RecordedEvent};
use nexus_core::vault::Vault;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::mailer::{Mail, Mailer, Recipient};

/// Events read per batch.
const BATCH: usize = 500;

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
                self.handle(record).await;
            }
            if let Some(last) = batch.last() {
                self.write_checkpoint(last.position)?;
            }
        }
    }

    async fn handle(&self, record: &RecordedEvent) {
        let stream = record.stream.as_str();
        if stream.starts_with("wallet-account-") {
            if let Ok(WalletEvent::WalletDepositCredited(e)) =
                WalletEvent::decode(&record.event_type, record.schema_version, &record.payload)
            {
                let Some(Owner::Account(account)) = self.deposit_owner(e.deposit).await else {
                    return;
                };
                let invoiced = self.invoiced(e.deposit).await.unwrap_or(e.entry.amount);
                let late = e.late;
                let credited = e.entry.amount;
                debug_assert!(matches!(
                    e.outcome,
                    DepositOutcome::Exact | DepositOutcome::Partial | DepositOutcome::Over
                ));
                self.mail(account, |to| Mail::DepositConfirmation {
                    to,
                    deposit: e.deposit,
                    invoiced,
                    credited,
                    late,
                })
                .await;
            }
        } else if let Some(hex) = stream.strip_prefix("account-") {
            if let Ok(AccountEvent::AccountDeletionRequested(e)) =
                AccountEvent::decode(&record.event_type, record.schema_version, &record.payload)
            {
                let Some(account) = AccountId::parse(hex) else {
                    return;
                };
                self.mail(account, |to| Mail::DeletionScheduled {
                    to,
                    effective_at: e.erase_due_at,
                })
                .await;
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

    /// Queues a mail to the account's current address (nothing once erased).
    async fn mail(&self, account: AccountId, make: impl FnOnce(Recipient) -> Mail) {
        let view = match self.accounts.account(account).await {
            Ok(view) => view,
            Err(e) => return debug!(error = %e, "no mail: the account cannot be read"),
        };
        let Personal::Plain(address) = view.email else {
            return;
        };
        let to = match Recipient::parse(&address) {
            Ok(to) => to,
            Err(e) => return warn!(error = %e, "no mail: the address does not parse"),
        };
        if let Err(e) = self.mailer.send(make(to)) {
            warn!(error = %e, "a mail was not queued");
        }
    }
}
