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
                if !matches!(
                    record.event_type.as_str(),
                    "AccountDeletionRequested" | "AccountDeletionWithdrawn" | "AccountErased"
                ) && stream::known_and_ignored::<AccountEvent>(
                    record,
                    &[record.event_type.as_str()],
                ) {
                    return Ok(());
                }
                let account = stream::account_of(record, rest)?;
                match stream::decode::<AccountEvent>(record)? {
                    AccountEvent::AccountDeletionRequested(e) => {
                        schedule(st, ACCOUNT, &account.0, Some(keys::time(e.erase_due_at)))
                    }
                    AccountEvent::AccountDeletionWithdrawn(_) | AccountEvent::AccountErased(_) => {
                        schedule(st, ACCOUNT, &account.0, None)
                    }
                    _ => Ok(()),
                }
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
