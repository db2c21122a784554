//! Policy-change announcements (stream `policy-changes`): the published privacy
//! policy promises that a change is announced to registered users at least
//! [`MIN_NOTICE_DAYS`] days before it takes effect. An announcement is an event;
//! the mail to every user follows from it (the notifier in `providers`).
//!
//! Every announcement is an event of the one `policy-changes` stream, decided
//! against the whole list at one version (announcements are rare; the list is
//! bounded by [`MAX_ANNOUNCEMENTS`]). An optional idempotency key makes a repeat
//! of the same request return the first announcement instead of announcing
//! twice: the key's digest and the request's fingerprint sit in the event, and
//! the decision reads them from the same stream it appends to.
//!
//! Titles, summaries and links are the operator's text about the policy, never
//! personal data: they are plain in the payload.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::aggregate::Aggregate;
use super::codec::EventBody;
use super::idempotency::{fingerprint, MAX_IDEMPOTENCY_KEY_BYTES};
use crate::domain_events;
use crate::log::StreamName;

/// The stream of every announcement.
pub const POLICY_CHANGES_STREAM: &str = "policy-changes";
/// Days of notice a change needs, at least (the published privacy policy).
pub const MIN_NOTICE_DAYS: i64 = 14;
/// Time on top of [`MIN_NOTICE_DAYS`] for the notices to go out: the mailer
/// refuses a notice less than 14 days ahead of the change *when it sends it*,
/// so an announcement exactly 14 days ahead would lose its mails.
pub const NOTICE_MARGIN_MINUTES: i64 = 60;
/// Days ahead a change may be announced, at most.
pub const MAX_NOTICE_DAYS: i64 = 5 * 366;
/// Longest title, in characters (one line).
pub const MAX_TITLE_CHARS: usize = 120;
/// Longest summary, in characters (lines allowed).
pub const MAX_SUMMARY_CHARS: usize = 4_000;
/// Longest link to the full text, in bytes.
pub const MAX_URL_BYTES: usize = 512;
/// Announcements at most, over the service's life.
pub const MAX_ANNOUNCEMENTS: usize = 10_000;

/// The announcements' stream.
pub fn changes_stream() -> StreamName {
    StreamName::new(POLICY_CHANGES_STREAM).expect("a valid stream name")
}

/// An announcement's id (UUIDv7, time-ordered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyChangeId(pub Uuid);

impl PolicyChangeId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok().map(Self)
    }
}

impl Default for PolicyChangeId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for PolicyChangeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

/// A client's idempotency key for an announcement, kept as a digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnnouncementKey([u8; 32]);

impl AnnouncementKey {
    /// 1–255 printable ASCII characters, as every idempotency key.
    pub fn new(key: &str) -> Option<AnnouncementKey> {
        let ok = !key.is_empty()
            && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
            && key.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| AnnouncementKey(fingerprint(&[b"policy-change-key", key.as_bytes()])))
    }
}

/// What the operator asks to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyChangeRequest {
    pub title: String,
    pub summary: String,
    pub effective_at: DateTime<Utc>,
    pub url: Option<String>,
}

impl PolicyChangeRequest {
    fn fingerprint(&self) -> [u8; 32] {
        let effective = self.effective_at.timestamp_micros().to_be_bytes();
        fingerprint(&[
            self.title.as_bytes(),
            self.summary.as_bytes(),
            &effective,
            self.url.as_deref().unwrap_or("").as_bytes(),
        ])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChangeAnnounced {
    pub id: PolicyChangeId,
    pub title: String,
    pub summary: String,
    pub effective_at: DateTime<Utc>,
    pub url: Option<String>,
    pub announced_at: DateTime<Utc>,
    /// The idempotency key's digest, when the request had one.
    pub key: Option<AnnouncementKey>,
    /// The request's fingerprint, to tell a repeat from another request.
    pub fingerprint: [u8; 32],
}

impl EventBody for PolicyChangeAnnounced {}

domain_events! {
    /// The events of the `policy-changes` stream.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum PolicyEvent {
        PolicyChangeAnnounced(PolicyChangeAnnounced) = 1,
    }
}

/// Every announcement, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChanges {
    announced: Vec<PolicyChangeAnnounced>,
    by_key: HashMap<AnnouncementKey, usize>,
}

impl PolicyChanges {
    pub fn announced(&self) -> &[PolicyChangeAnnounced] {
        &self.announced
    }

    /// The announcement made with this key, if any.
    pub fn by_key(&self, key: &AnnouncementKey) -> Option<&PolicyChangeAnnounced> {
        self.by_key.get(key).map(|i| &self.announced[*i])
    }
}

impl Aggregate for PolicyChanges {
    type Event = PolicyEvent;

    fn apply(&mut self, event: &PolicyEvent) {
        let PolicyEvent::PolicyChangeAnnounced(e) = event;
        if let Some(key) = e.key {
            self.by_key.entry(key).or_insert(self.announced.len());
        }
        self.announced.push(e.clone());
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("a title is 1-{MAX_TITLE_CHARS} characters on one line")]
    InvalidTitle,
    #[error("a summary is 1-{MAX_SUMMARY_CHARS} characters")]
    InvalidSummary,
    #[error("a link is an http(s) URL of at most {MAX_URL_BYTES} bytes, without spaces")]
    InvalidUrl,
    #[error("a policy change takes effect at least {MIN_NOTICE_DAYS} days (and {NOTICE_MARGIN_MINUTES} minutes for the mails) after it is announced")]
    NoticeTooShort,
    #[error("a policy change takes effect at most {MAX_NOTICE_DAYS} days after it is announced")]
    NoticeTooLong,
    #[error("this idempotency key was used for another announcement")]
    KeyReused,
    #[error("there are {MAX_ANNOUNCEMENTS} announcements already")]
    TooManyAnnouncements,
}

fn check(request: &PolicyChangeRequest, now: DateTime<Utc>) -> Result<(), PolicyError> {
    let title_chars = request.title.trim().chars().count();
    if title_chars == 0
        || request.title.chars().count() > MAX_TITLE_CHARS
        || request.title.chars().any(char::is_control)
    {
        return Err(PolicyError::InvalidTitle);
    }
    let summary_chars = request.summary.chars().count();
    if request.summary.trim().is_empty()
        || summary_chars > MAX_SUMMARY_CHARS
        || request.summary.chars().any(|c| c.is_control() && c != '\n')
    {
        return Err(PolicyError::InvalidSummary);
    }
    if let Some(url) = &request.url {
        let ok = url.len() <= MAX_URL_BYTES
            && (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() > "https://".len()
            && url.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(PolicyError::InvalidUrl);
        }
    }
    let earliest = now + Duration::days(MIN_NOTICE_DAYS) + Duration::minutes(NOTICE_MARGIN_MINUTES);
    if request.effective_at < earliest {
        return Err(PolicyError::NoticeTooShort);
    }
    if request.effective_at > now + Duration::days(MAX_NOTICE_DAYS) {
        return Err(PolicyError::NoticeTooLong);
    }
    Ok(())
}

/// Announces a change, or, for a repeat of a keyed request, nothing (the first
/// announcement stands; [`PolicyChanges::by_key`] finds it).
pub fn announce(
    changes: &PolicyChanges,
    id: PolicyChangeId,
    request: &PolicyChangeRequest,
    key: Option<AnnouncementKey>,
    now: DateTime<Utc>,
) -> Result<Vec<PolicyEvent>, PolicyError> {
    let fingerprint = request.fingerprint();
    if let Some(first) = key.as_ref().and_then(|k| changes.by_key(k)) {
        return if first.fingerprint == fingerprint {
            Ok(vec![])
        } else {
            Err(PolicyError::KeyReused)
        };
    }
    check(request, now)?;
    if changes.announced.len() >= MAX_ANNOUNCEMENTS {
        return Err(PolicyError::TooManyAnnouncements);
    }
    Ok(vec![PolicyEvent::PolicyChangeAnnounced(
        PolicyChangeAnnounced {
            id,
            title: request.title.trim().to_owned(),
            summary: request.summary.trim().to_owned(),
            effective_at: request.effective_at,
            url: request.url.clone(),
            announced_at: now,
            key,
            fingerprint,
        },
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::given;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000, 0).unwrap()
    }

    fn id() -> PolicyChangeId {
        PolicyChangeId(Uuid::from_u128(3))
    }

    fn request(days_ahead: i64) -> PolicyChangeRequest {
        PolicyChangeRequest {
            title: "New retention periods".into(),
            summary: "Anonymous order data is kept 60 days instead of 90.".into(),
            effective_at: t0() + Duration::days(days_ahead),
            url: Some("https://nexus.example/privacy".into()),
        }
    }

    fn announced(request: &PolicyChangeRequest, key: Option<AnnouncementKey>) -> PolicyEvent {
        PolicyEvent::PolicyChangeAnnounced(PolicyChangeAnnounced {
            id: id(),
            title: request.title.clone(),
            summary: request.summary.clone(),
            effective_at: request.effective_at,
            url: request.url.clone(),
            announced_at: t0(),
            key,
            fingerprint: request.fingerprint(),
        })
    }

    #[test]
    fn a_change_fourteen_days_and_the_margin_ahead_is_announced() {
        let mut r = request(14);
        r.effective_at += Duration::minutes(NOTICE_MARGIN_MINUTES);
        let changes = given::<PolicyChanges>(vec![])
            .when(|c| announce(c, id(), &r, None, t0()))
            .then(vec![announced(&r, None)]);
        assert_eq!(changes.announced().len(), 1);
    }

    #[test]
    fn a_change_less_than_fourteen_days_ahead_is_refused() {
        let mut r = request(14);
        r.effective_at += Duration::minutes(NOTICE_MARGIN_MINUTES) - Duration::seconds(1);
        given::<PolicyChanges>(vec![])
            .when(|c| announce(c, id(), &r, None, t0()))
            .then_err(PolicyError::NoticeTooShort);
        given::<PolicyChanges>(vec![])
            .when(|c| announce(c, id(), &request(13), None, t0()))
            .then_err(PolicyError::NoticeTooShort);
    }

    #[test]
    fn a_change_years_ahead_is_refused() {
        given::<PolicyChanges>(vec![])
            .when(|c| announce(c, id(), &request(MAX_NOTICE_DAYS + 1), None, t0()))
            .then_err(PolicyError::NoticeTooLong);
    }

    #[test]
    fn a_repeat_with_the_same_key_announces_nothing_more() {
        let key = AnnouncementKey::new("announce-1");
        let r = request(20);
        let changes = given::<PolicyChanges>(vec![announced(&r, key)])
            .when(|c| announce(c, PolicyChangeId::new(), &r, key, t0()))
            .then(vec![]);
        assert_eq!(changes.by_key(&key.unwrap()).unwrap().id, id());
    }

    #[test]
    fn a_key_used_for_another_announcement_is_refused() {
        let key = AnnouncementKey::new("announce-1");
        given::<PolicyChanges>(vec![announced(&request(20), key)])
            .when(|c| announce(c, PolicyChangeId::new(), &request(21), key, t0()))
            .then_err(PolicyError::KeyReused);
    }

    #[test]
    fn without_a_key_the_same_text_can_be_announced_again() {
        let r = request(20);
        given::<PolicyChanges>(vec![announced(&r, None)])
            .when(|c| announce(c, id(), &r, None, t0()))
            .then(vec![announced(&r, None)]);
    }

    #[test]
    fn texts_and_links_have_limits() {
        let cases: Vec<(PolicyChangeRequest, PolicyError)> = vec![
            (
                PolicyChangeRequest {
                    title: " ".into(),
                    ..request(20)
                },
                PolicyError::InvalidTitle,
            ),
            (
                PolicyChangeRequest {
                    title: "x".repeat(MAX_TITLE_CHARS + 1),
                    ..request(20)
                },
                PolicyError::InvalidTitle,
            ),
            (
                PolicyChangeRequest {
                    title: "two\nlines".into(),
                    ..request(20)
                },
                PolicyError::InvalidTitle,
            ),
            (
                PolicyChangeRequest {
                    summary: String::new(),
                    ..request(20)
                },
                PolicyError::InvalidSummary,
            ),
            (
                PolicyChangeRequest {
                    summary: "é".repeat(MAX_SUMMARY_CHARS + 1),
                    ..request(20)
                },
                PolicyError::InvalidSummary,
            ),
            (
                PolicyChangeRequest {
                    url: Some("ftp://nexus.example/p".into()),
                    ..request(20)
                },
                PolicyError::InvalidUrl,
            ),
            (
                PolicyChangeRequest {
                    url: Some("https://a b".into()),
                    ..request(20)
                },
                PolicyError::InvalidUrl,
            ),
            (
                PolicyChangeRequest {
                    url: Some(format!("https://{}", "a".repeat(MAX_URL_BYTES))),
                    ..request(20)
                },
                PolicyError::InvalidUrl,
            ),
        ];
        for (r, expected) in cases {
            given::<PolicyChanges>(vec![])
                .when(|c| announce(c, id(), &r, None, t0()))
                .then_err(expected);
        }
        let longest = PolicyChangeRequest {
            title: "t".repeat(MAX_TITLE_CHARS),
            summary: "line\n".repeat(MAX_SUMMARY_CHARS / 5),
            url: None,
            ..request(20)
        };
        let events = given::<PolicyChanges>(vec![])
            .when(|c| announce(c, id(), &longest, None, t0()))
            .result()
            .unwrap();
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn the_number_of_announcements_is_bounded() {
        let r = request(20);
        let full: Vec<PolicyEvent> = (0..MAX_ANNOUNCEMENTS)
            .map(|_| announced(&r, None))
            .collect();
        given::<PolicyChanges>(full)
            .when(|c| announce(c, id(), &r, None, t0()))
            .then_err(PolicyError::TooManyAnnouncements);
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_up_to_255_bytes() {
        assert!(AnnouncementKey::new("k").is_some());
        assert!(AnnouncementKey::new(&"k".repeat(255)).is_some());
        assert!(AnnouncementKey::new("").is_none());
        assert!(AnnouncementKey::new("with space").is_none());
        assert!(AnnouncementKey::new(&"k".repeat(256)).is_none());
        assert_ne!(AnnouncementKey::new("a"), AnnouncementKey::new("b"));
    }
}
