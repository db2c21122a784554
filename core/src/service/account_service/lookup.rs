//! Addresses by keyed lookup hash, and their move to a new key when the vault
//! rotates its key epoch.
//!
//! An address is reserved by the stream `email-<HMAC(lookup key, address)>`.
//! The lookup key is derived from the vault's current epoch key
//! ([`Vault::lookup_keys`]), so once a rotation destroys an epoch, nothing on
//! the machine can recompute the stream names made under it: an erased
//! account's address can no longer be tested ("was it registered?") nor linked
//! to its ledger. A rotation therefore moves every live reservation to the new
//! key before the old one is destroyed ([`Accounts::rotate_keys`]):
//!
//! 1. under the write half of `lookup_lock` (so no command holds stream names
//!    computed with the old keys), the vault begins the new epoch;
//! 2. every account registered so far is listed from the log, and each live
//!    one that holds its address under an older key reserves it under the new
//!    one (in batches, each one conditional append);
//! 3. the vault destroys the older epochs.
//!
//! Between 1 and 3 a lookup tries every key, newest first; a reservation is
//! made under the newest and refused if any key has the address taken.

use super::*;
use crate::domain::account::{decide_move_reservation, EmailReservationEvent};
use crate::log::RecordedEvent;
use crate::vault::Rotation;

/// The purpose the e-mail lookup keys are derived for.
pub const EMAIL_LOOKUP: &str = "email-lookup";
/// Events read from the log per page while listing the accounts.
const SCAN_PAGE_EVENTS: usize = 4096;
/// Accounts whose reservations move in one append.
const MOVE_BATCH_ACCOUNTS: usize = 64;

/// What a rotation of the vault's key epoch did to the address lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    pub rotation: Rotation,
    /// Accounts listed from the log.
    pub accounts: u64,
    /// Reservations made under the new lookup key.
    pub moved_addresses: u64,
    /// Live addresses the new key had reserved for another account (never
    /// expected: registration checks every key during a rotation).
    pub conflicts: u64,
}

impl<S: EventStore> Accounts<S> {
    /// The streams that may reserve `email`, one per lookup key, newest first:
    /// a reservation is made in the first; a lookup tries each.
    pub(super) fn email_streams(&self, email: &Email) -> Result<Vec<StreamName>> {
        let keys = self.vault.lookup_keys(EMAIL_LOOKUP)?;
        assert!(!keys.is_empty(), "a vault always has a current epoch");
        Ok(keys
            .into_iter()
            .map(|key| LookupKey::new(key).email_stream(email))
            .collect())
    }

    /// The account holding the address of these streams, if any.
    pub(super) async fn holder(&self, streams: &[StreamName]) -> Result<Option<AccountId>> {
        for stream in streams {
            let reservation = self.load::<EmailReservation>(stream).await?;
            if let Some(holder) = reservation.state.holder {
                return Ok(Some(holder));
            }
        }
        Ok(None)
    }

    /// The lookup hash of an address under the current key, as the accounts
    /// read model indexes it (until the next rotation).
    pub fn email_lookup_hash(&self, email: &str) -> Result<Sha256Hash> {
        Ok(self.current_lookup_key()?.email_hash(&Email::parse(email)?))
    }

    /// The stream reserving an address under the current key.
    pub fn email_stream(&self, email: &str) -> Result<StreamName> {
        Ok(self
            .current_lookup_key()?
            .email_stream(&Email::parse(email)?))
    }

    fn current_lookup_key(&self) -> Result<LookupKey> {
        let keys = self.vault.lookup_keys(EMAIL_LOOKUP)?;
        let current = keys.into_iter().next();
        assert!(current.is_some(), "a vault always has a current epoch");
        Ok(LookupKey::new(current.unwrap_or_default()))
    }

    /// Rotates the vault's key epoch, moving every live address reservation to
    /// the new lookup key before the old keys are destroyed (see the module
    /// documentation). Interrupted, the next call completes it.
    pub async fn rotate_keys(&self, now_unix_s: u64) -> Result<KeyRotation> {
        let begun = {
            let _no_lookups_in_flight = self.lookup_lock.write().await;
            let vault = Arc::clone(&self.vault);
            self.off_runtime(move || vault.begin_rotation(now_unix_s))
                .await??
        };
        let accounts = self.registered_accounts().await?;
        let mut moved_addresses = 0;
        let mut conflicts = 0;
        for batch in accounts.chunks(MOVE_BATCH_ACCOUNTS) {
            let (moved, taken) = self.move_reservations(batch).await?;
            moved_addresses += moved;
            conflicts += taken;
        }
        if conflicts > 0 {
            tracing::warn!(
                conflicts,
                "key rotation: addresses reserved by another account"
            );
        }
        let vault = Arc::clone(&self.vault);
        let rotation = self
            .off_runtime(move || vault.finish_rotation(begun))
            .await??;
        Ok(KeyRotation {
            rotation,
            accounts: u64::try_from(accounts.len()).unwrap_or(u64::MAX),
            moved_addresses,
            conflicts,
        })
    }

    /// Every account ever registered, from the log (one pass, page by page).
    async fn registered_accounts(&self) -> Result<Vec<AccountId>> {
        let head = self.store.head();
        let max_pages = head / SCAN_PAGE_EVENTS as u64 + 2;
        let mut accounts = Vec::new();
        let mut from = 1;
        for _ in 0..max_pages {
            let page = self.store.read_all(from, SCAN_PAGE_EVENTS).await?;
            let Some(last) = page.last() else {
                break;
            };
            from = last.position + 1;
            accounts.extend(page.iter().filter_map(registered_account));
            if from > head {
                break;
            }
        }
        Ok(accounts)
    }

    /// Moves the reservations of one batch of accounts in one append; answers
    /// how many moved and how many found their address taken.
    async fn move_reservations(&self, batch: &[AccountId]) -> Result<(u64, u64)> {
        let clock = &self.clock;
        let committed = self
            .runner()
            .run(|tx| {
                Box::pin(async move {
                    let (mut moved, mut taken) = (0u64, 0u64);
                    let now = clock.now();
                    for &account in batch {
                        let state = tx.load::<Account>(&account.stream()).await?;
                        let Some(email) = state.email.plain() else {
                            continue;
                        };
                        let streams = self.email_streams(&Email::from_stored(email.clone()))?;
                        let newest = tx.load::<EmailReservation>(&streams[0]).await?;
                        let mut older = Vec::with_capacity(streams.len() - 1);
                        for stream in &streams[1..] {
                            older.push(tx.load::<EmailReservation>(stream).await?);
                        }
                        match decide_move_reservation(&state, account, &newest, &older, now) {
                            Ok(events) => {
                                moved += u64::from(!events.is_empty());
                                tx.emit(&streams[0], &events)?;
                            }
                            Err(AccountError::EmailTaken) => taken += 1,
                            Err(refused) => return Err(refused.into()),
                        }
                    }
                    Ok((moved, taken))
                })
            })
            .await?;
        Ok(committed.value)
    }
}

/// The account a recorded event registered, if it is a registration.
fn registered_account(event: &RecordedEvent) -> Option<AccountId> {
    if event.event_type != "AccountRegistered" {
        return None;
    }
    let hex = event
        .stream
        .as_str()
        .strip_prefix(AccountId::PREFIX)?
        .strip_prefix('-')?;
    AccountId::parse(hex)
}

/// Reserves the address of `streams` for `account` under the newest key,
/// refused if any key has it reserved for another account: the events for
/// `streams[0]`. Every stream becomes a condition of the append.
pub(super) async fn reserve_under_every_key<S: EventStore>(
    tx: &Tx<'_, S>,
    streams: &[StreamName],
    account: AccountId,
    now: DateTime<Utc>,
) -> Result<Vec<EmailReservationEvent>> {
    let mut newest = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        let reservation = tx.load::<EmailReservation>(stream).await?;
        let events = decide_reserve_email(&reservation, account, now)?;
        if i == 0 {
            newest = events;
        }
    }
    Ok(newest)
}

/// Releases `account`'s reservation of the address of `streams` under every
/// key that has it.
pub(super) async fn release_under_every_key<S: EventStore>(
    tx: &Tx<'_, S>,
    streams: &[StreamName],
    account: AccountId,
    now: DateTime<Utc>,
) -> Result<()> {
    for stream in streams {
        let reservation = tx.load::<EmailReservation>(stream).await?;
        let release = decide_release_email(&reservation, account, now)?;
        tx.emit(stream, &release)?;
    }
    Ok(())
}

/// Moves `account`'s reservation from the address of `from` to that of `to`
/// (each under every key), in the step's append.
pub(super) async fn move_reservation<S: EventStore>(
    tx: &Tx<'_, S>,
    account: AccountId,
    from: &[StreamName],
    to: &[StreamName],
    now: DateTime<Utc>,
) -> Result<()> {
    let reserve = reserve_under_every_key(tx, to, account, now).await?;
    tx.emit(&to[0], &reserve)?;
    release_under_every_key(tx, from, account, now).await
}
