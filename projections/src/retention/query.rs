//! Queries over the retention schedule.

use chrono::{DateTime, NaiveDate, Utc};
use nexus_core::domain::ids::{AccountId, AnonymousId};
use nexus_core::vault::SubjectId;

use super::*;
use crate::error::{QueryError, StoredValueError};
use crate::keys;
use crate::list::MAX_PAGE_SIZE;

/// A subject whose personal data is scheduled for erasure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DueSubject {
    Account(AccountId),
    Anonymous(AnonymousId),
}

impl DueSubject {
    /// The vault subject to erase.
    pub fn subject(&self) -> SubjectId {
        match self {
            DueSubject::Account(id) => id.subject(),
            DueSubject::Anonymous(id) => id.subject(),
        }
    }
}

/// A schedule entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledSubject {
    pub subject: DueSubject,
    pub due_at: DateTime<Utc>,
}

/// A month of financial records and when it is due for pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueMonth {
    pub year: i32,
    pub month: u32,
    /// The end of the month plus the retention period.
    pub due_at: DateTime<Utc>,
    pub records: u64,
    pub first_position: u64,
    pub last_position: u64,
}

/// Read access to the retention schedule.
#[derive(Clone)]
pub struct RetentionView {
    tree: sled::Tree,
}

fn due_of_month(year: i32, month: u32) -> Option<DateTime<Utc>> {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let end = NaiveDate::from_ymd_opt(next_year + FINANCIAL_RETENTION_YEARS, next_month, 1)?;
    Some(end.and_hms_opt(0, 0, 0)?.and_utc())
}

impl RetentionView {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// Subjects due at or before `until`, earliest first, after the entry
    /// `after` (the last one of the previous page); at most [`MAX_PAGE_SIZE`].
    pub fn due(
        &self,
        until: DateTime<Utc>,
        after: Option<ScheduledSubject>,
        limit: usize,
    ) -> Result<Vec<ScheduledSubject>, QueryError> {
        self.scan(Some(until), after, limit)
    }

    /// The whole schedule, earliest first, paged like [`RetentionView::due`].
    pub fn schedule(
        &self,
        after: Option<ScheduledSubject>,
        limit: usize,
    ) -> Result<Vec<ScheduledSubject>, QueryError> {
        self.scan(None, after, limit)
    }

    fn scan(
        &self,
        until: Option<DateTime<Utc>>,
        after: Option<ScheduledSubject>,
        limit: usize,
    ) -> Result<Vec<ScheduledSubject>, QueryError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let start = match after {
            Some(entry) => {
                let (kind, id) = match entry.subject {
                    DueSubject::Account(id) => (ACCOUNT, id.0),
                    DueSubject::Anonymous(id) => (ANONYMOUS, id.0),
                };
                let mut key = due_key(&keys::time(entry.due_at), kind, &id);
                key.push(0);
                key
            }
            None => vec![b'd'],
        };
        let mut out = Vec::with_capacity(limit);
        for item in self.tree.range(start..vec![b'e']) {
            let (key, _) = item?;
            let entry =
                parse_due(&key).ok_or_else(|| StoredValueError::new(&key, "not a schedule key"))?;
            if until.is_some_and(|until| entry.due_at > until) || out.len() >= limit {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// When the subject is due, if it is on the schedule.
    pub fn due_at(&self, subject: DueSubject) -> Result<Option<DateTime<Utc>>, QueryError> {
        let (kind, id) = match subject {
            DueSubject::Account(id) => (ACCOUNT, id.0),
            DueSubject::Anonymous(id) => (ANONYMOUS, id.0),
        };
        let key = subject_key(kind, &id);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(due) => keys::time_from(&due)
                .map(Some)
                .ok_or_else(|| StoredValueError::new(&key, "not a time").into()),
        }
    }

    /// Months of financial records, oldest first, with their due dates (all
    /// of them: one entry per month of the log's life).
    pub fn financial_months(&self) -> Result<Vec<DueMonth>, QueryError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([b'f']) {
            let (key, value) = item?;
            let bad = || StoredValueError::new(&key, "not a month key");
            if key.len() != 4 {
                return Err(bad().into());
            }
            let year = i32::from(u16::from_be_bytes([key[1], key[2]]));
            let month = u32::from(key[3]);
            let counts: FinancialMonth = crate::value::decode(&key, &value)?;
            out.push(DueMonth {
                year,
                month,
                due_at: due_of_month(year, month).ok_or_else(bad)?,
                records: counts.records,
                first_position: counts.first_position,
                last_position: counts.last_position,
            });
        }
        Ok(out)
    }
}

fn parse_due(key: &[u8]) -> Option<ScheduledSubject> {
    if key.len() != 1 + 8 + 1 + 16 {
        return None;
    }
    let due_at = keys::time_from(&key[1..9])?;
    let id = keys::uuid_from(&key[10..])?;
    let subject = match key[9] {
        ACCOUNT => DueSubject::Account(AccountId(id)),
        ANONYMOUS => DueSubject::Anonymous(AnonymousId(id)),
        _ => return None,
    };
    Some(ScheduledSubject { subject, due_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_due_seven_years_after_its_end() {
        let due = due_of_month(2026, 12).unwrap();
        assert_eq!(due.to_rfc3339(), "2034-01-01T00:00:00+00:00");
        assert_eq!(
            due_of_month(2026, 3).unwrap().to_rfc3339(),
            "2033-04-01T00:00:00+00:00"
        );
    }
}
