//! The double-entry ledger: accounts, entries, and the invariants they keep.
//!
//! Sign convention: an entry moves `amount` (> 0) from its debit account to its
//! credit account; an account's balance is its credits minus its debits. So what
//! Nexus owes (customer wallets, revenue) is positive and what it holds or spends
//! (crypto clearing, costs, cashback expense) is negative, and the balances of all
//! accounts sum to zero after every entry, by construction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::{AccountId, AnonymousId};
use super::money::{Micros, MoneyError};
use crate::log::StreamName;

/// Whose wallet: a registered customer's, or an anonymous buyer's credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Owner {
    Account(AccountId),
    Anonymous(AnonymousId),
}

impl Owner {
    /// The vault subject of the owner's personal data.
    pub fn subject(&self) -> crate::vault::SubjectId {
        match self {
            Owner::Account(id) => id.subject(),
            Owner::Anonymous(id) => id.subject(),
        }
    }

    /// The wallet's stream: `wallet-account-<hex>` or `wallet-anon-<hex>`.
    pub fn wallet_stream(&self) -> StreamName {
        let name = match self {
            Owner::Account(id) => format!("wallet-{}-{}", AccountId::PREFIX, id.0.simple()),
            Owner::Anonymous(id) => format!("wallet-{}-{}", AnonymousId::PREFIX, id.0.simple()),
        };
        StreamName::new(name).expect("a prefix and hex digits make a valid stream name")
    }
}

/// A ledger account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LedgerAccount {
    /// What a customer (or anonymous buyer) can spend.
    Available(Owner),
    /// What is held for their open orders.
    Held(Owner),
    /// Crypto received through the payment gateway (and paid out to upstreams).
    CryptoClearing,
    /// Sales: captured order prices.
    Revenue,
    /// What upstreams charge for the numbers sold.
    ProviderCost,
    /// Cashback paid to customers.
    CashbackExpense,
    /// Balances left by erased accounts and expired anonymous credit.
    Unclaimed,
}

/// Why money moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    Deposit,
    AnonymousPayment,
    Hold,
    Capture,
    Void,
    Cashback,
    ProviderCost,
    Unclaimed,
}

impl Reason {
    /// The name in reports and JSON (`deposit`, `anonymous_payment`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Deposit => "deposit",
            Reason::AnonymousPayment => "anonymous_payment",
            Reason::Hold => "hold",
            Reason::Capture => "capture",
            Reason::Void => "void",
            Reason::Cashback => "cashback",
            Reason::ProviderCost => "provider_cost",
            Reason::Unclaimed => "unclaimed",
        }
    }
}

/// One balanced movement of money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub debit: LedgerAccount,
    pub credit: LedgerAccount,
    pub amount: Micros,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("an entry moves a positive amount")]
    NotPositive,
    #[error("an entry moves money between two different accounts")]
    SameAccount,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl Entry {
    pub fn new(
        debit: LedgerAccount,
        credit: LedgerAccount,
        amount: Micros,
        reason: Reason,
    ) -> Result<Entry, LedgerError> {
        if !amount.is_positive() {
            return Err(LedgerError::NotPositive);
        }
        if debit == credit {
            return Err(LedgerError::SameAccount);
        }
        Ok(Entry {
            debit,
            credit,
            amount,
            reason,
        })
    }
}

/// Balances of every account touched, from a sequence of entries: what the
/// finance audit and the wallet projection compute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Balances {
    balances: BTreeMap<LedgerAccount, Micros>,
}

impl Balances {
    /// Posts an entry. One read back from storage is checked again as
    /// [`Entry::new`] checks a new one: a tampered or corrupt entry is a typed
    /// error for the audit to report, never a panic.
    pub fn post(&mut self, entry: &Entry) -> Result<(), LedgerError> {
        if !entry.amount.is_positive() {
            return Err(LedgerError::NotPositive);
        }
        if entry.debit == entry.credit {
            return Err(LedgerError::SameAccount);
        }
        let debit = self.get(entry.debit).checked_sub(entry.amount)?;
        let credit = self.get(entry.credit).checked_add(entry.amount)?;
        self.balances.insert(entry.debit, debit);
        self.balances.insert(entry.credit, credit);
        Ok(())
    }

    pub fn get(&self, account: LedgerAccount) -> Micros {
        self.balances.get(&account).copied().unwrap_or_default()
    }

    /// The sum over all accounts; zero whenever only [`Entry`]s were posted.
    pub fn total(&self) -> i128 {
        self.balances.values().map(|m| i128::from(m.0)).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LedgerAccount, &Micros)> {
        self.balances.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn account_strategy() -> impl Strategy<Value = LedgerAccount> {
        let owner = prop_oneof![
            Just(Owner::Account(AccountId(uuid::Uuid::from_u128(1)))),
            Just(Owner::Anonymous(AnonymousId(uuid::Uuid::from_u128(2))))
        ];
        prop_oneof![
            owner.clone().prop_map(LedgerAccount::Available),
            owner.prop_map(LedgerAccount::Held),
            Just(LedgerAccount::CryptoClearing),
            Just(LedgerAccount::Revenue),
            Just(LedgerAccount::CashbackExpense),
        ]
    }

    #[test]
    fn entries_refuse_zero_negative_and_self_transfers() {
        let wallet = LedgerAccount::Available(Owner::Account(AccountId::new()));
        assert_eq!(
            Entry::new(
                LedgerAccount::CryptoClearing,
                wallet,
                Micros(0),
                Reason::Deposit
            ),
            Err(LedgerError::NotPositive)
        );
        assert_eq!(
            Entry::new(
                LedgerAccount::CryptoClearing,
                wallet,
                Micros(-5),
                Reason::Deposit
            ),
            Err(LedgerError::NotPositive)
        );
        assert_eq!(
            Entry::new(wallet, wallet, Micros(5), Reason::Hold),
            Err(LedgerError::SameAccount)
        );
    }

    proptest! {
        #[test]
        fn balances_sum_to_zero_after_any_entries(
            moves in proptest::collection::vec((account_strategy(), account_strategy(), 1i64..1_000_000_000), 0..200)
        ) {
            let mut balances = Balances::default();
            for (debit, credit, amount) in moves {
                if let Ok(entry) = Entry::new(debit, credit, Micros(amount), Reason::Deposit) {
                    balances.post(&entry).unwrap();
                }
                prop_assert_eq!(balances.total(), 0);
            }
        }
    }
}
