//! Queries over the wallets read model.

use crate::value::get;
use nexus_core::domain::ids::DepositId;
use nexus_core::domain::ledger::{LedgerAccount, Owner};
use nexus_core::domain::money::Micros;

use super::*;
use crate::error::{QueryError, StoredValueError};
use crate::list::{Cursor, Page};

/// A wallet's money.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalletBalance {
    pub available: Micros,
    pub held: Micros,
}

impl WalletBalance {
    /// Available plus held.
    pub fn balance(&self) -> Micros {
        Micros(self.available.0.saturating_add(self.held.0))
    }
}

/// Read access to the wallets read model.
#[derive(Clone)]
pub struct WalletsView {
    tree: sled::Tree,
}

impl WalletsView {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    fn row(&self, owner: &Owner) -> Result<WalletRow, QueryError> {
        Ok(get(&self.tree, &wallet_key(owner))?.unwrap_or_default())
    }

    /// The owner's wallet (zero for an owner the log never funded).
    pub fn balance(&self, owner: &Owner) -> Result<WalletBalance, QueryError> {
        let row = self.row(owner)?;
        Ok(WalletBalance {
            available: row.available,
            held: row.held,
        })
    }

    /// The wallet's ledger rows, newest first, `limit` at most
    /// [`crate::list::MAX_PAGE_SIZE`].
    pub fn ledger(
        &self,
        owner: &Owner,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<LedgerRow>, QueryError> {
        let row = self.row(owner)?;
        let page = row
            .ledger
            .newest_first(LEDGER_PAGE_ROWS, before, limit, |n| {
                Ok(get(&self.tree, &ledger_page_key(owner, n))?.unwrap_or_default())
            })?;
        Ok(page.map(|(_, row)| row))
    }

    /// The owner's deposits, newest first.
    pub fn deposits(
        &self,
        owner: &Owner,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<DepositRecord>, QueryError> {
        let row = self.row(owner)?;
        let ids = row
            .deposits
            .newest_first(DEPOSIT_PAGE_IDS, before, limit, |n| {
                Ok(get(&self.tree, &deposit_page_key(owner, n))?.unwrap_or_default())
            })?;
        let mut items = Vec::with_capacity(ids.items.len());
        for (_, id) in ids.items {
            if let Some(deposit) = self.deposit(id)? {
                items.push(deposit);
            }
        }
        Ok(Page {
            items,
            next: ids.next,
        })
    }

    pub fn deposit(&self, id: DepositId) -> Result<Option<DepositRecord>, QueryError> {
        get(&self.tree, &deposit_key(id))
    }

    /// Every system account's balance.
    pub fn system_balances(&self) -> Result<Vec<(LedgerAccount, Micros)>, QueryError> {
        let mut out = Vec::with_capacity(SYSTEM_ACCOUNTS.len());
        for (account, tag) in SYSTEM_ACCOUNTS {
            let balance: i64 = get(&self.tree, &[b's', tag])?.unwrap_or(0);
            out.push((account, Micros(balance)));
        }
        Ok(out)
    }

    /// Every wallet, in key order (audits and tests; not for request paths).
    pub fn all_wallets(
        &self,
    ) -> impl Iterator<Item = Result<(Owner, WalletBalance), QueryError>> + '_ {
        self.tree.scan_prefix([b'w']).map(|item| {
            let (key, value) = item?;
            let owner = keys::owner_from(&key[1..])
                .ok_or_else(|| StoredValueError::new(&key, "not an owner key"))?;
            let row: WalletRow = crate::value::decode(&key, &value)?;
            Ok((
                owner,
                WalletBalance {
                    available: row.available,
                    held: row.held,
                },
            ))
        })
    }

    /// The sum of every wallet's and every system account's balance: zero when
    /// the read model is consistent (a trial balance).
    pub fn trial_balance(&self) -> Result<i128, QueryError> {
        let mut total: i128 = 0;
        for wallet in self.all_wallets() {
            let (_, balance) = wallet?;
            total += i128::from(balance.available.0) + i128::from(balance.held.0);
        }
        for (_, balance) in self.system_balances()? {
            total += i128::from(balance.0);
        }
        Ok(total)
    }
}
