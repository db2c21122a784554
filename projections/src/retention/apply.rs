//! Applying account, anonymous-buyer and financial events to the schedule.

use chrono::{Datelike, Duration};
use nexus_core::domain::account::AccountEvent;
use nexus_core::domain::anonymous::AnonymousEvent;
use nexus_core::log::RecordedEvent;

use super::*;
use crate::error::ApplyError;
use crate::keys;
use crate::projection::Projection;
use crate::staging::Staging;
use crate::stream::{self, Category};

/// The retention schedule projection.
#[derive(Debug, Default)]
pub struct RetentionProjection;

impl Projection for RetentionProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn format_version(&self) -> u32 {
        FORMAT_VERSION
    }

    fn apply(&mut self, record: &RecordedEvent, st: &mut Staging) -> Result<(), ApplyError> {
        let Some((category, rest)) = Category::of(record.stream.as_str()) else {
            return Ok(());
        };
        if category.is_financial() {
            count_financial(record, st)?;
        }
        match category {
            Category::Account => {
                const SCHEDULING: &[&str] = &[
                    "AccountRegistered",
                    "AccountEmailVerified",
                    "EmailChangeUndone",
                    "AccountDeletionRequested",
                    "AccountDeletionWithdrawn",
                    "AccountErased",
                ];
                let event_type = record.event_type.as_str();
                if !SCHEDULING.contains(&event_type)
                    && stream::known_and_ignored::<AccountEvent>(record, &[event_type])
                {
                    return Ok(());
                }
                let account = stream::account_of(record, rest)?;
                let event = stream::decode::<AccountEvent>(record)?;
                schedule_account(st, &account.0, &event)
            }
            Category::Anonymous => match stream::decode::<AnonymousEvent>(record)? {
                AnonymousEvent::AnonymousOrderCreated(e) => {
                    let due = e.at + Duration::days(ANONYMOUS_RETENTION_DAYS);
                    schedule(st, ANONYMOUS, &e.anon.0, Some(keys::time(due)))
                }
                AnonymousEvent::AnonymousOrderStarted(_) => Ok(()),
                AnonymousEvent::AnonymousDataErased(e) => schedule(st, ANONYMOUS, &e.anon.0, None),
            },
            _ => Ok(()),
        }
    }
}

/// Follows what may make an account due and puts it on the schedule at the
/// earliest (or takes it off).
fn schedule_account(
    st: &mut Staging,
    id: &uuid::Uuid,
    event: &AccountEvent,
) -> Result<(), ApplyError> {
    let key = dues_key(id);
    let mut dues = st.get::<AccountDues>(&key)?.copied().unwrap_or_default();
    match event {
        AccountEvent::AccountRegistered(e) => {
            let lapse = e.registered_at + Duration::hours(UNVERIFIED_LAPSE_HOURS);
            dues.lapse = Some(keys::time(lapse));
        }
        AccountEvent::AccountEmailVerified(_) | AccountEvent::EmailChangeUndone(_) => {
            dues.lapse = None;
        }
        AccountEvent::AccountDeletionRequested(e) => {
            dues.deletion = Some(keys::time(e.erase_due_at));
        }
        AccountEvent::AccountDeletionWithdrawn(_) => dues.deletion = None,
        AccountEvent::AccountErased(_) => dues = AccountDues::default(),
        _ => return Ok(()),
    }
    match dues {
        AccountDues {
            lapse: None,
            deletion: None,
        } => st.delete(&key),
        _ => st.put(key, dues),
    }
    schedule(st, ACCOUNT, id, dues.earliest())
}

/// Puts the subject on the schedule at `due` (replacing an earlier entry), or
/// takes it off (`None`).
fn schedule(
    st: &mut Staging,
    kind: u8,
    id: &uuid::Uuid,
    due: Option<[u8; 8]>,
) -> Result<(), ApplyError> {
    let subject = subject_key(kind, id);
    if let Some(previous) = st.get::<[u8; 8]>(&subject)?.copied() {
        st.delete(&due_key(&previous, kind, id));
    }
    match due {
        Some(due) => {
            st.put(due_key(&due, kind, id), ());
            st.put(subject, due);
        }
        None => st.delete(&subject),
    }
    Ok(())
}

fn count_financial(record: &RecordedEvent, st: &mut Staging) -> Result<(), ApplyError> {
    let at = record.recorded_at;
    let month =
        st.get_or_insert_with(&month_key(at.year(), at.month()), FinancialMonth::default)?;
    if month.records == 0 {
        month.first_position = record.position;
    }
    month.records = month.records.saturating_add(1);
    month.last_position = record.position;
    Ok(())
}
