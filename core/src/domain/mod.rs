//! The domain: accounts, the double-entry wallet ledger, orders, anonymous orders.
//! Every change is an event in the log; commands decide from state folded from the
//! log, never from a read model.

pub mod account;
pub mod aggregate;
pub mod anonymous;
pub mod clock;
pub mod codec;
pub mod commerce;
pub mod deposit;
pub mod idempotency;
pub mod ids;
pub mod ledger;
pub mod legal_hold;
pub mod money;
pub mod order;
pub mod policy;
pub mod wallet;
