//! Browser sessions: an opaque random id in an `HttpOnly`, `SameSite=Strict`
//! cookie, and server-side records keyed by the id's SHA-256 (the id itself is
//! stored nowhere), each with an absolute expiry.
//!
//! An index by account (`account || key` in its own tree) finds every session of
//! an account, to end them together (a password change ends the others), and
//! bounds them: at most [`MAX_SESSIONS_PER_ACCOUNT`], the oldest ended first.
//!
//! A record also keeps when the session's password was last entered (at
//! sign-in, and again by [`SessionStore::confirm`]): the sensitive routes
//! need it recent ([`LiveSession::fresh_at`]).

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use nexus_core::domain::ids::AccountId;
use sha2::{Digest, Sha256};

/// How long a session lasts.
pub const SESSION_HOURS: i64 = 24;
/// Bytes of randomness in a session id.
const SESSION_ID_BYTES: usize = 32;
pub const COOKIE_NAME: &str = "nexus_session";
/// Live sessions one account may have; a new one past this ends the oldest.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 32;
/// How long after its password was last entered a session counts as fresh
/// (may change the e-mail, the password, the webhook, API keys, or ask for
/// deletion).
pub const FRESH_PASSWORD_MINUTES: i64 = 10;

/// A live session: its account and when its password was last entered
/// (`None`: a session from before that was recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveSession {
    pub account: AccountId,
    pub password_at: Option<DateTime<Utc>>,
}

impl LiveSession {
    /// Whether the password was entered at most [`FRESH_PASSWORD_MINUTES`]
    /// before `now` (and not after it: a clock set back proves nothing).
    pub fn fresh_at(&self, now: DateTime<Utc>) -> bool {
        self.password_at
            .is_some_and(|at| at <= now && now - at <= Duration::minutes(FRESH_PASSWORD_MINUTES))
    }
}

pub struct SessionStore {
    tree: sled::Tree,
    /// `account (16) || session key (32)` → expiry (8, big-endian).
    by_account: sled::Tree,
    _db: sled::Db,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session store: {0}")]
    Store(#[from] sled::Error),
    #[error("the system's random source failed")]
    Random,
}

impl SessionStore {
    pub fn open(dir: &Path) -> Result<Self, SessionError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .open()?;
        let tree = db.open_tree("sessions")?;
        let by_account = db.open_tree("sessions_by_account")?;
        let store = Self {
            tree,
            by_account,
            _db: db,
        };
        store.index_unindexed()?;
        Ok(store)
    }

    /// Sessions written before the index existed get their index entries.
    fn index_unindexed(&self) -> Result<(), SessionError> {
        if !self.by_account.is_empty() {
            return Ok(());
        }
        for item in self.tree.iter() {
            let (k, v) = item?;
            if let (Some((account, expires)), Ok(key)) = (decode(&v), <[u8; 32]>::try_from(&*k)) {
                self.by_account
                    .insert(index_key(account, &key), &expires.to_be_bytes())?;
            }
        }
        Ok(())
    }

    /// A new session for `account`, its password entered `now`: the id to put
    /// in the cookie.
    pub fn create(&self, account: AccountId, now: DateTime<Utc>) -> Result<String, SessionError> {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| SessionError::Random)?;
        let id = hex::encode(bytes);
        let expires = (now + Duration::hours(SESSION_HOURS)).timestamp();
        let value = encode(account, expires, now.timestamp());
        let session_key = key(&id);
        self.tree.insert(session_key, value)?;
        self.by_account
            .insert(index_key(account, &session_key), &expires.to_be_bytes())?;
        self.bound_sessions_of(account, now)?;
        self.prune(now)?;
        Ok(id)
    }

    /// Ends every session of `account` but the one with id `keep` (every one
    /// when `None`). Returns how many ended.
    pub fn end_others(
        &self,
        account: AccountId,
        keep: Option<&str>,
    ) -> Result<usize, SessionError> {
        let keep = keep.map(key);
        let mut ended = 0;
        for item in self.by_account.scan_prefix(account.0.as_bytes()) {
            let (index, _) = item?;
            let Some(session_key) = index.get(16..) else {
                continue;
            };
            if keep.as_ref().is_some_and(|k| k.as_slice() == session_key) {
                continue;
            }
            self.tree.remove(session_key)?;
            self.by_account.remove(&index)?;
            ended += 1;
        }
        Ok(ended)
    }

    /// Drops the account's expired sessions, then its oldest while it has more
    /// than [`MAX_SESSIONS_PER_ACCOUNT`].
    fn bound_sessions_of(
        &self,
        account: AccountId,
        now: DateTime<Utc>,
    ) -> Result<(), SessionError> {
        let mut live: Vec<(i64, sled::IVec)> = Vec::new();
        for item in self.by_account.scan_prefix(account.0.as_bytes()) {
            let (index, expires) = item?;
            let expires = <[u8; 8]>::try_from(&*expires).map_or(i64::MIN, i64::from_be_bytes);
            if expires <= now.timestamp() {
                self.forget(&index)?;
            } else {
                live.push((expires, index));
            }
        }
        // Sessions last equally long: the soonest expiry is the oldest.
        live.sort();
        let excess = live.len().saturating_sub(MAX_SESSIONS_PER_ACCOUNT);
        for (_, index) in live.iter().take(excess) {
            self.forget(index)?;
        }
        Ok(())
    }

    /// Removes a session and its index entry, given the index entry.
    fn forget(&self, index: &[u8]) -> Result<(), SessionError> {
        if let Some(session_key) = index.get(16..) {
            self.tree.remove(session_key)?;
        }
        self.by_account.remove(index)?;
        Ok(())
    }

    /// The session's account, if the session exists and has not expired.
    #[cfg(test)]
    pub fn account(&self, id: &str, now: DateTime<Utc>) -> Result<Option<AccountId>, SessionError> {
        Ok(self.lookup(id, now)?.map(|live| live.account))
    }

    /// The session, if it exists and has not expired.
    pub fn lookup(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<LiveSession>, SessionError> {
        if id.len() != 2 * SESSION_ID_BYTES {
            return Ok(None);
        }
        let Some(value) = self.tree.get(key(id))? else {
            return Ok(None);
        };
        let Some((account, expires)) = decode(&value) else {
            return Ok(None);
        };
        if expires <= now.timestamp() {
            self.forget(&index_key(account, &key(id)))?;
            return Ok(None);
        }
        let password_at = value
            .get(24..32)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .and_then(|b| DateTime::from_timestamp(i64::from_be_bytes(b), 0));
        Ok(Some(LiveSession {
            account,
            password_at,
        }))
    }

    /// Records that the session's password was entered again `now`; false
    /// when the session is gone (expired or ended meanwhile).
    pub fn confirm(&self, id: &str, now: DateTime<Utc>) -> Result<bool, SessionError> {
        let Some(live) = self.lookup(id, now)? else {
            return Ok(false);
        };
        let session_key = key(id);
        let Some(value) = self.tree.get(session_key)? else {
            return Ok(false);
        };
        let Some((_, expires)) = decode(&value) else {
            return Ok(false);
        };
        // Only if the record is still the one read: a concurrent sign-out or
        // password change wins.
        let swapped = self.tree.compare_and_swap(
            session_key,
            Some(value),
            Some(encode(live.account, expires, now.timestamp()).as_slice()),
        )?;
        Ok(swapped.is_ok())
    }

    pub fn remove(&self, id: &str) -> Result<(), SessionError> {
        let session_key = key(id);
        if let Some(value) = self.tree.remove(session_key)? {
            if let Some((account, _)) = decode(&value) {
                self.by_account.remove(index_key(account, &session_key))?;
            }
        }
        Ok(())
    }

    /// Drops expired sessions, a bounded number per call.
    fn prune(&self, now: DateTime<Utc>) -> Result<(), SessionError> {
        const MAX_PRUNED: usize = 64;
        let mut pruned = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            if decode(&v).is_none_or(|(_, expires)| expires <= now.timestamp()) {
                self.tree.remove(&k)?;
                if let (Some((account, _)), Ok(session_key)) =
                    (decode(&v), <[u8; 32]>::try_from(&*k))
                {
                    self.by_account.remove(index_key(account, &session_key))?;
                }
                pruned += 1;
                if pruned == MAX_PRUNED {
                    break;
                }
            }
        }
        Ok(())
    }
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn index_key(account: AccountId, session_key: &[u8; 32]) -> [u8; 48] {
    let mut index = [0u8; 48];
    index[..16].copy_from_slice(account.0.as_bytes());
    index[16..].copy_from_slice(session_key);
    index
}

/// `account (16) || expiry (8) || password entered at (8)`, seconds since
/// the epoch, big-endian. Records from before the last field have 24 bytes.
fn encode(account: AccountId, expires: i64, password_at: i64) -> Vec<u8> {
    let mut value = account.0.as_bytes().to_vec();
    value.extend_from_slice(&expires.to_be_bytes());
    value.extend_from_slice(&password_at.to_be_bytes());
    value
}

fn decode(value: &[u8]) -> Option<(AccountId, i64)> {
    let account: [u8; 16] = value.get(..16)?.try_into().ok()?;
    let expires: [u8; 8] = value.get(16..24)?.try_into().ok()?;
    Some((
        AccountId(uuid::Uuid::from_bytes(account)),
        i64::from_be_bytes(expires),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        let account = AccountId::new();
        let now = Utc::now();
        let id = store.create(account, now).unwrap();
        assert_eq!(store.account(&id, now).unwrap(), Some(account));
        assert_eq!(
            store
                .account(&id, now + Duration::hours(SESSION_HOURS))
                .unwrap(),
            None
        );
        let id = store.create(account, now).unwrap();
        store.remove(&id).unwrap();
        assert_eq!(store.account(&id, now).unwrap(), None);
        assert_eq!(store.account("not-a-session", now).unwrap(), None);
        // Only the hash is stored.
        assert!(store.tree.get(id.as_bytes()).unwrap().is_none());
        assert!(
            store.by_account.is_empty(),
            "ended sessions leave no index entry"
        );
    }

    #[test]
    fn a_session_is_fresh_for_ten_minutes_after_its_password_and_again_after_confirming() {
        use nexus_core::domain::clock::{Clock, ManualClock};
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        let clock = ManualClock::new(DateTime::from_timestamp(1_800_000_000, 0).unwrap());
        let id = store.create(AccountId::new(), clock.now()).unwrap();
        let live = |now| store.lookup(&id, now).unwrap().unwrap();
        assert!(live(clock.now()).fresh_at(clock.now()));
        clock.advance(Duration::minutes(FRESH_PASSWORD_MINUTES));
        assert!(live(clock.now()).fresh_at(clock.now()));
        clock.advance(Duration::minutes(1));
        assert!(
            !live(clock.now()).fresh_at(clock.now()),
            "11 minutes: stale"
        );
        assert!(store.confirm(&id, clock.now()).unwrap());
        assert!(live(clock.now()).fresh_at(clock.now()));
        // A time before the password was entered proves nothing.
        assert!(!live(clock.now()).fresh_at(clock.now() - Duration::minutes(1)));
        store.remove(&id).unwrap();
        assert!(!store.confirm(&id, clock.now()).unwrap());
    }

    #[test]
    fn a_session_from_before_password_times_is_live_but_not_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let account = AccountId::new();
        let id = store.create(account, now).unwrap();
        let old = encode(account, (now + Duration::hours(1)).timestamp(), 0);
        store.tree.insert(key(&id), &old[..24]).unwrap();
        let live = store.lookup(&id, now).unwrap().unwrap();
        assert_eq!((live.account, live.password_at), (account, None));
        assert!(!live.fresh_at(now));
        assert!(store.confirm(&id, now).unwrap());
        assert!(store.lookup(&id, now).unwrap().unwrap().fresh_at(now));
    }

    #[test]
    fn a_password_change_ends_the_other_sessions_of_that_account_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        let (alice, bob) = (AccountId::new(), AccountId::new());
        let now = Utc::now();
        let here = store.create(alice, now).unwrap();
        let elsewhere: Vec<String> = (0..3).map(|_| store.create(alice, now).unwrap()).collect();
        let bobs = store.create(bob, now).unwrap();
        assert_eq!(store.end_others(alice, Some(&here)).unwrap(), 3);
        assert_eq!(store.account(&here, now).unwrap(), Some(alice));
        for id in &elsewhere {
            assert_eq!(store.account(id, now).unwrap(), None);
        }
        assert_eq!(store.account(&bobs, now).unwrap(), Some(bob));
        assert_eq!(store.end_others(alice, None).unwrap(), 1);
        assert_eq!(store.account(&here, now).unwrap(), None);
    }

    #[test]
    fn an_account_has_a_bounded_number_of_sessions_the_oldest_ended_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        let alice = AccountId::new();
        let start = Utc::now();
        let ids: Vec<String> = (0..MAX_SESSIONS_PER_ACCOUNT + 2)
            .map(|i| {
                store
                    .create(alice, start + Duration::seconds(i as i64))
                    .unwrap()
            })
            .collect();
        let now = start + Duration::seconds(ids.len() as i64);
        assert_eq!(store.account(&ids[0], now).unwrap(), None);
        assert_eq!(store.account(&ids[1], now).unwrap(), None);
        for id in &ids[2..] {
            assert_eq!(store.account(id, now).unwrap(), Some(alice));
        }
        assert_eq!(store.by_account.len(), MAX_SESSIONS_PER_ACCOUNT);
    }

    #[test]
    fn sessions_from_before_the_index_are_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let alice = AccountId::new();
        let now = Utc::now();
        let id = {
            let store = SessionStore::open(dir.path()).unwrap();
            let id = store.create(alice, now).unwrap();
            store.by_account.clear().unwrap();
            id
        };
        let store = SessionStore::open(dir.path()).unwrap();
        assert_eq!(store.end_others(alice, None).unwrap(), 1);
        assert_eq!(store.account(&id, now).unwrap(), None);
    }
}
