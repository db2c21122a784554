//! Browser sessions: an opaque random id in an `HttpOnly`, `SameSite=Strict`
//! cookie, and server-side records keyed by the id's SHA-256 (the id itself is
//! stored nowhere), each with an absolute expiry.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use nexus_core::domain::ids::AccountId;
use sha2::{Digest, Sha256};

/// How long a session lasts.
pub const SESSION_HOURS: i64 = 24;
/// Bytes of randomness in a session id.
const SESSION_ID_BYTES: usize = 32;
pub const COOKIE_NAME: &str = "nexus_session";

pub struct SessionStore {
    tree: sled::Tree,
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
        Ok(Self { tree, _db: db })
    }

    /// A new session for `account`: the id to put in the cookie.
    pub fn create(&self, account: AccountId, now: DateTime<Utc>) -> Result<String, SessionError> {
        let mut bytes = [0u8; SESSION_ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|_| SessionError::Random)?;
        let id = hex::encode(bytes);
        let expires = (now + Duration::hours(SESSION_HOURS)).timestamp();
        let mut value = account.0.as_bytes().to_vec();
        value.extend_from_slice(&expires.to_be_bytes());
        self.tree.insert(key(&id), value)?;
        self.prune(now)?;
        Ok(id)
    }

    /// The session's account, if the session exists and has not expired.
    pub fn account(&self, id: &str, now: DateTime<Utc>) -> Result<Option<AccountId>, SessionError> {
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
            self.tree.remove(key(id))?;
            return Ok(None);
        }
        Ok(Some(account))
    }

    pub fn remove(&self, id: &str) -> Result<(), SessionError> {
        self.tree.remove(key(id))?;
        Ok(())
    }

    /// Drops expired sessions, a bounded number per call.
    fn prune(&self, now: DateTime<Utc>) -> Result<(), SessionError> {
        const MAX_PRUNED: usize = 64;
        let mut pruned = 0;
        for item in self.tree.iter() {
            let (k, v) = item?;
            if decode(&v).is_none_or(|(_, expires)| expires <= now.timestamp()) {
                self.tree.remove(k)?;
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
    }
}
