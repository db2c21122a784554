//! Retention policies and the sweeps that carry them out.
//!
//! | data | kept | carried out by |
//! |---|---|---|
//! | an account's personal data | its lifetime, plus 30 days after a deletion request | [`Sweeper::sweep`]: `Accounts::erase_account` (crypto-shredding) |
//! | an anonymous order's data | 90 days after its creation | [`Sweeper::sweep`]: `Commerce::erase_anonymous` |
//! | financial records | 7 years | counted per month by the schedule ([`Sweeper::status`]); pruning is not built yet |
//!
//! The sweep reads what is due from the retention schedule (the `retention`
//! read model) and acts through the domain's commands, which decide again
//! against the log: a schedule that lags the log can only make a sweep skip a
//! subject (it is counted, never erased early). A subject under a legal hold is
//! skipped and stays on the schedule until the hold is released; a hold on an
//! order freezes its owner, whose key seals the order's phone number.
//!
//! [`Sweeper::verify`] is the proof an operator or auditor runs: it walks the
//! log and checks that every recorded erasure's vault key is gone, and that no
//! subject is overdue on the schedule without a hold.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Duration;
use nexus_core::domain::account::{AccountError, AccountEvent};
use nexus_core::domain::anonymous::{AnonymousError, AnonymousEvent};
use nexus_core::domain::clock::Clock;
use nexus_core::domain::codec::DomainEvent;
use nexus_core::domain::commerce::CommerceError;
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::legal_hold::HoldSubject;
use nexus_core::log::{EventStore, LogError};
use nexus_core::service::account_service::{AccountServiceError, Accounts};
use nexus_core::service::commerce_service::{CommandError, Commerce};
use nexus_core::service::legal_hold_service::{LegalHoldService, LegalHoldServiceError};
use nexus_core::vault::{SubjectId, Vault, VaultError};
use nexus_projections::retention::{DueMonth, DueSubject, RetentionView, ScheduledSubject};
use nexus_projections::stream::{account_of, Category};
use nexus_projections::QueryError;
use tracing::{info, warn};

/// Subjects one sweep examines at most; the rest wait for the next run (the
/// report says so). Bounds the time and memory of a run.
pub const MAX_SUBJECTS_PER_SWEEP: usize = 10_000;
/// Schedule entries read per page.
const PAGE: usize = 500;
/// A subject due longer ago than this, not held and not erased, is overdue:
/// sweeps run hourly, so a day means they are not running.
pub const OVERDUE_AFTER_HOURS: i64 = 24;
/// Events read per batch by [`Sweeper::verify`].
const VERIFY_BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("reading the retention schedule: {0}")]
    Schedule(#[from] QueryError),
    #[error("reading the legal holds: {0}")]
    Holds(#[from] LegalHoldServiceError),
    #[error("reading a held order: {0}")]
    HeldOrder(#[source] CommandError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Due subjects looked at.
    pub examined: u64,
    pub accounts_erased: u64,
    pub anonymous_erased: u64,
    /// Skipped: under a legal hold.
    pub held: u64,
    /// Skipped: the log says otherwise than the (lagging) schedule — already
    /// erased, the deletion withdrawn, or an order still active.
    pub skipped: u64,
    /// Failed (logged with the subject's id); tried again on the next sweep.
    pub failed: u64,
    /// The run stopped at [`MAX_SUBJECTS_PER_SWEEP`] with more due.
    pub more_due: bool,
}

/// The schedule at a glance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionStatus {
    /// Subjects due now (held ones included).
    pub due_now: u64,
    /// Subjects on the schedule in all.
    pub scheduled: u64,
    /// The earliest entry not yet due.
    pub next_due: Option<ScheduledSubject>,
    /// Subjects frozen by a legal hold.
    pub held: u64,
    /// Months of financial records and when each is due for pruning.
    pub financial_months: Vec<DueMonth>,
}

/// What [`Sweeper::verify`] found; `ok()` when nothing is wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Erasures recorded in the log (accounts and anonymous buyers).
    pub erasures_recorded: u64,
    /// Recorded erasures whose vault key still exists: broken promises.
    pub keys_still_present: Vec<String>,
    /// Due more than [`OVERDUE_AFTER_HOURS`] ago, not held, not erased.
    pub overdue: Vec<String>,
    /// Events read.
    pub events_checked: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.keys_still_present.is_empty() && self.overdue.is_empty()
    }
}

/// Runs the retention sweeps.
pub struct Sweeper<S: EventStore> {
    log: Arc<S>,
    vault: Arc<Vault>,
    accounts: Arc<Accounts<S>>,
    commerce: Arc<Commerce<S>>,
    holds: Arc<LegalHoldService<S>>,
    schedule: RetentionView,
    clock: Arc<dyn Clock>,
}

impl<S: EventStore> Sweeper<S> {
    pub fn new(
        log: Arc<S>,
        vault: Arc<Vault>,
        accounts: Arc<Accounts<S>>,
        commerce: Arc<Commerce<S>>,
        holds: Arc<LegalHoldService<S>>,
        schedule: RetentionView,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            log,
            vault,
            accounts,
            commerce,
            holds,
            schedule,
            clock,
        }
    }

    /// Erases every subject due now (at most [`MAX_SUBJECTS_PER_SWEEP`]),
    /// skipping held ones. A failure on one subject is counted and logged; the
    /// sweep goes on with the others.
    pub async fn sweep(&self) -> Result<SweepReport, RetentionError> {
        let now = self.clock.now();
        let frozen = self.frozen().await?;
        let mut report = SweepReport::default();
        let mut after = None;
        loop {
            let page = self.schedule.due(now, after, PAGE)?;
            let Some(last) = page.last().copied() else {
                break;
            };
            for entry in &page {
                if report.examined as usize >= MAX_SUBJECTS_PER_SWEEP {
                    report.more_due = true;
                    return Ok(self.finish(report));
                }
                report.examined += 1;
                if frozen.contains(&entry.subject) {
                    report.held += 1;
                    continue;
                }
                self.erase(entry.subject, &mut report).await;
            }
            if page.len() < PAGE {
                break;
            }
            after = Some(last);
        }
        Ok(self.finish(report))
    }

    fn finish(&self, report: SweepReport) -> SweepReport {
        info!(
            examined = report.examined,
            accounts_erased = report.accounts_erased,
            anonymous_erased = report.anonymous_erased,
            held = report.held,
            skipped = report.skipped,
            failed = report.failed,
            more_due = report.more_due,
            "retention sweep"
        );
        report
    }

    async fn erase(&self, subject: DueSubject, report: &mut SweepReport) {
        match subject {
            DueSubject::Account(id) => match self.accounts.erase_account(id).await {
                Ok(()) => report.accounts_erased += 1,
                Err(AccountServiceError::Refused(
                    AccountError::AccountErased
                    | AccountError::ErasureNotDue
                    | AccountError::NoDeletionPending
                    | AccountError::AccountNotFound,
                )) => report.skipped += 1,
                Err(e) => {
                    report.failed += 1;
                    warn!(account = %id, error = %e, "retention sweep: erasing an account failed");
                }
            },
            DueSubject::Anonymous(id) => match self.commerce.erase_anonymous(id).await {
                Ok(()) => report.anonymous_erased += 1,
                Err(CommandError::Refused(CommerceError::Anonymous(
                    AnonymousError::Erased
                    | AnonymousError::ErasureNotDue
                    | AnonymousError::OrderActive
                    | AnonymousError::NotFound,
                ))) => report.skipped += 1,
                Err(e) => {
                    report.failed += 1;
                    warn!(anon = %id, error = %e, "retention sweep: erasing anonymous data failed");
                }
            },
        }
    }

    /// The subjects a legal hold freezes now: held accounts and anonymous
    /// buyers, and the owners of held orders (the owner's key seals the
    /// order's phone number).
    pub async fn frozen(&self) -> Result<BTreeSet<DueSubject>, RetentionError> {
        let register = self.holds.register().await?.state;
        let mut frozen = BTreeSet::new();
        for hold in register.active() {
            match hold.subject {
                HoldSubject::Account(id) => {
                    frozen.insert(DueSubject::Account(id));
                }
                HoldSubject::Anonymous(id) => {
                    frozen.insert(DueSubject::Anonymous(id));
                }
                HoldSubject::Order(order) => {
                    let order = self
                        .commerce
                        .order(order)
                        .await
                        .map_err(RetentionError::HeldOrder)?;
                    match order.placed.map(|placed| placed.owner) {
                        Some(Owner::Account(id)) => frozen.insert(DueSubject::Account(id)),
                        Some(Owner::Anonymous(id)) => frozen.insert(DueSubject::Anonymous(id)),
                        None => false,
                    };
                }
            }
        }
        Ok(frozen)
    }

    /// The schedule at a glance (bounded: counts stop at
    /// [`MAX_SUBJECTS_PER_SWEEP`] × 10 entries).
    pub async fn status(&self) -> Result<RetentionStatus, RetentionError> {
        const MAX_COUNTED: u64 = (MAX_SUBJECTS_PER_SWEEP as u64) * 10;
        let now = self.clock.now();
        let frozen = self.frozen().await?;
        let mut status = RetentionStatus {
            due_now: 0,
            scheduled: 0,
            next_due: None,
            held: frozen.len() as u64,
            financial_months: self.schedule.financial_months()?,
        };
        let mut after = None;
        while status.scheduled < MAX_COUNTED {
            let page = self.schedule.schedule(after, PAGE)?;
            for entry in &page {
                status.scheduled += 1;
                if entry.due_at <= now {
                    status.due_now += 1;
                } else if status.next_due.is_none() {
                    status.next_due = Some(*entry);
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(*last),
                _ => break,
            }
        }
        Ok(status)
    }

    /// Proves the sweeps: every erasure the log records has its vault key gone,
    /// and nothing is overdue on the schedule but what a legal hold freezes.
    pub async fn verify(&self) -> Result<VerifyReport, RetentionError> {
        let mut report = VerifyReport::default();
        let head = self.log.head();
        let mut from = 0;
        while from <= head {
            let batch = self.log.read_all(from, VERIFY_BATCH).await?;
            let Some(last) = batch.last() else { break };
            from = last.position + 1;
            for record in &batch {
                report.events_checked += 1;
                let subject = match record.event_type.as_str() {
                    "AccountErased" => decode_subject::<AccountEvent>(record, |e| match e {
                        AccountEvent::AccountErased(_) => {
                            match Category::of(record.stream.as_str()) {
                                Some((Category::Account, rest)) => {
                                    account_of(record, rest).ok().map(|a| a.subject())
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    }),
                    "AnonymousDataErased" => {
                        decode_subject::<AnonymousEvent>(record, |e| match e {
                            AnonymousEvent::AnonymousDataErased(e) => Some(e.anon.subject()),
                            _ => None,
                        })
                    }
                    _ => continue,
                };
                report.erasures_recorded += 1;
                match subject {
                    Some(subject) if self.vault.is_erased(&subject)? => {}
                    Some(subject) => report.keys_still_present.push(subject.as_str().to_owned()),
                    None => report.keys_still_present.push(format!(
                        "undecodable erasure at position {}",
                        record.position
                    )),
                }
            }
        }
        let overdue_before = self.clock.now() - Duration::hours(OVERDUE_AFTER_HOURS);
        let frozen = self.frozen().await?;
        let mut after = None;
        loop {
            let page = self.schedule.due(overdue_before, after, PAGE)?;
            for entry in &page {
                if !frozen.contains(&entry.subject) {
                    report
                        .overdue
                        .push(entry.subject.subject().as_str().to_owned());
                }
            }
            match page.last() {
                Some(last)
                    if page.len() == PAGE && report.overdue.len() < MAX_SUBJECTS_PER_SWEEP =>
                {
                    after = Some(*last)
                }
                _ => break,
            }
        }
        Ok(report)
    }
}

fn decode_subject<E: DomainEvent>(
    record: &nexus_core::log::RecordedEvent,
    subject: impl FnOnce(E) -> Option<SubjectId>,
) -> Option<SubjectId> {
    E::decode(&record.event_type, record.schema_version, &record.payload)
        .ok()
        .and_then(subject)
}
