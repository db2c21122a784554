//! Queries over the orders read model. Personal fields are opened with the
//! vault here, and read as erased once the owner's subject is erased.

use crate::value::get;
use chrono::{DateTime, Utc};
use nexus_core::domain::codec::Personal;
use nexus_core::domain::ids::{AccountId, AnonymousId, DepositId, OrderId};
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{
    CancelReason, DeliveryChannel, OrderDetails, OrderPolicy, OrderStatus, PhonePii,
};
use nexus_core::vault::Vault;

use super::*;
use crate::error::{QueryError, StoredValueError};
use crate::list::{Cursor, ListHead, Page, MAX_PAGE_SIZE};
use crate::sealed::{map_personal, open_optional};

/// An order as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub order: OrderId,
    pub owner: Owner,
    pub status: OrderStatus,
    pub price: Micros,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub provider: Option<String>,
    pub codes_received: u32,
    pub first_code_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub delivered_via: Option<DeliveryChannel>,
    pub resend_requested: bool,
    pub closed_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<CancelReason>,
    /// Service, country and channel: `Unopened` when the log holds none for
    /// this order, `Erased` once the owner's data is erased.
    pub details: Personal<OrderDetails>,
    /// The phone number (digits with the dial code).
    pub phone: Personal<String>,
}

impl OrderView {
    /// When the customer may cancel: `None` before a number is assigned (at
    /// once), as the order aggregate decides it with the same policy.
    pub fn cancel_available_at(&self, policy: &OrderPolicy) -> Option<DateTime<Utc>> {
        self.assigned_at.map(|at| at + policy.cancel_guard)
    }

    /// Whether a cancel would be accepted at `now`: before any code was
    /// received, and after the guard once a number was assigned.
    pub fn can_cancel(&self, policy: &OrderPolicy, now: DateTime<Utc>) -> bool {
        match self.status {
            OrderStatus::Placed => true,
            OrderStatus::NumberAssigned => self
                .cancel_available_at(policy)
                .is_none_or(|from| now >= from),
            _ => false,
        }
    }
}

/// One line of an account's verification history (never the code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    pub order: OrderId,
    pub placed_at: DateTime<Utc>,
    /// Service, country, channel (sealed under the owner's subject).
    pub details: Personal<OrderDetails>,
    pub outcome: OrderStatus,
    pub provider: Option<String>,
}

/// An anonymous buyer as its tracking ID may see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnonymousView {
    pub anon: AnonymousId,
    pub created_at: DateTime<Utc>,
    pub invoice: DepositId,
    pub price: Micros,
    pub details: Personal<OrderDetails>,
    pub orders_started: u32,
}

/// Lookups of one order that find the bucket state changed before giving up
/// (each change is a bucket split committed meanwhile).
const MAX_LOOKUP_ATTEMPTS: usize = 8;

/// Read access to the orders read model.
#[derive(Clone)]
pub struct OrdersView {
    tree: sled::Tree,
    vault: std::sync::Arc<Vault>,
}

impl OrdersView {
    pub(crate) fn new(tree: sled::Tree, vault: std::sync::Arc<Vault>) -> Self {
        Self { tree, vault }
    }

    /// Whether the owner's personal data was erased: then every personal field
    /// of their orders reads as erased, whatever key sealed it.
    fn owner_erased(&self, owner: &Owner) -> Result<bool, QueryError> {
        Ok(self.vault.is_erased(&owner.subject())?)
    }

    /// The order as shown; `erased` says whether its owner's data is erased.
    fn view(&self, row: OrderRow, erased: bool) -> Result<OrderView, QueryError> {
        let (details, phone) = if erased {
            (Personal::Erased, Personal::Erased)
        } else {
            (
                open_optional::<OrderDetails>(row.details.as_ref(), &self.vault)?,
                map_personal(
                    open_optional::<PhonePii>(row.phone.as_ref(), &self.vault)?,
                    |p| p.phone,
                ),
            )
        };
        Ok(OrderView {
            order: row.order,
            owner: row.owner,
            status: row.status,
            price: row.price,
            placed_at: row.placed_at,
            expires_at: row.expires_at,
            assigned_at: row.assigned_at,
            provider: row.provider,
            codes_received: row.codes_received,
            first_code_at: row.first_code_at,
            delivered_at: row.delivered_at,
            delivered_via: row.delivered_via,
            resend_requested: row.resend_requested,
            closed_at: row.closed_at,
            cancel_reason: row.cancel_reason,
            details,
            phone,
        })
    }

    /// Where the order rows are.
    fn bucket_state(&self) -> Result<BucketState, QueryError> {
        Ok(get(&self.tree, BUCKET_STATE_KEY)?.unwrap_or_default())
    }

    /// The row of `id` in its bucket under `state`.
    fn row_in(&self, state: &BucketState, id: OrderId) -> Result<Option<OrderRow>, QueryError> {
        let key = bucket_key(state.bucket_of(id));
        match self.tree.get(key)? {
            Some(stored) => Ok(find_in_bucket(&key, &stored, id)?),
            None => Ok(None),
        }
    }

    /// The row of `id`. A bucket split committed between the read of the
    /// state and the read of the bucket can move the row: a miss is certain
    /// only once the state read again is the state the bucket was chosen by.
    fn row(&self, id: OrderId, mut state: BucketState) -> Result<Option<OrderRow>, QueryError> {
        for _ in 0..MAX_LOOKUP_ATTEMPTS {
            if let Some(row) = self.row_in(&state, id)? {
                return Ok(Some(row));
            }
            let now = self.bucket_state()?;
            if now == state {
                return Ok(None);
            }
            state = now;
        }
        self.row_in(&state, id)
    }

    /// How many orders the read model holds.
    pub fn order_count(&self) -> Result<u64, QueryError> {
        Ok(self.bucket_state()?.orders)
    }

    pub fn order(&self, id: OrderId) -> Result<Option<OrderView>, QueryError> {
        match self.row(id, self.bucket_state()?)? {
            Some(row) => {
                let erased = self.owner_erased(&row.owner)?;
                self.view(row, erased).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The order, if `owner` owns it (another owner's order does not exist for them).
    pub fn owned_order(&self, id: OrderId, owner: &Owner) -> Result<Option<OrderView>, QueryError> {
        Ok(self.order(id)?.filter(|o| o.owner == *owner))
    }

    fn owner_ids(
        &self,
        owner: &Owner,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<OrderId>, QueryError> {
        let list: ListHead<OrderId> = get(&self.tree, &owner_key(owner))?.unwrap_or_default();
        let page = list.newest_first(OWNER_PAGE_IDS, before, limit, |n| {
            Ok(get(&self.tree, &owner_page_key(owner, n))?.unwrap_or_default())
        })?;
        Ok(page.map(|(_, id)| id))
    }

    fn rows(&self, ids: &[OrderId]) -> Result<Vec<OrderRow>, QueryError> {
        let mut rows = Vec::with_capacity(ids.len());
        let state = self.bucket_state()?;
        for id in ids {
            if let Some(row) = self.row(*id, state)? {
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// The owner's orders, newest first, `limit` at most [`MAX_PAGE_SIZE`].
    pub fn by_owner(
        &self,
        owner: &Owner,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<OrderView>, QueryError> {
        let ids = self.owner_ids(owner, before, limit)?;
        let erased = self.owner_erased(owner)?;
        let mut items = Vec::with_capacity(ids.items.len());
        for row in self.rows(&ids.items)? {
            items.push(self.view(row, erased)?);
        }
        Ok(Page {
            items,
            next: ids.next,
        })
    }

    /// An account's verification history, newest first: service, country,
    /// time and outcome of each order (no code, no phone number).
    pub fn history(
        &self,
        account: AccountId,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<HistoryItem>, QueryError> {
        let owner = Owner::Account(account);
        let ids = self.owner_ids(&owner, before, limit)?;
        let erased = self.owner_erased(&owner)?;
        let mut items = Vec::with_capacity(ids.items.len());
        for row in self.rows(&ids.items)? {
            let details = if erased {
                Personal::Erased
            } else {
                open_optional(row.details.as_ref(), &self.vault)?
            };
            items.push(HistoryItem {
                order: row.order,
                placed_at: row.placed_at,
                details,
                outcome: row.status,
                provider: row.provider,
            });
        }
        Ok(Page {
            items,
            next: ids.next,
        })
    }

    /// An anonymous buyer (by the id its tracking ID hashes to).
    pub fn anonymous(&self, anon: AnonymousId) -> Result<Option<AnonymousView>, QueryError> {
        let Some(row) = get::<AnonRow>(&self.tree, &anon_key(anon))? else {
            return Ok(None);
        };
        let details = if self.owner_erased(&Owner::Anonymous(anon))? {
            Personal::Erased
        } else {
            open_optional(row.details.as_ref(), &self.vault)?
        };
        Ok(Some(AnonymousView {
            anon,
            created_at: row.created_at,
            invoice: row.invoice,
            price: row.price,
            details,
            orders_started: row.orders_started,
        }))
    }

    /// The anonymous buyer's orders, newest first.
    pub fn by_anonymous(
        &self,
        anon: AnonymousId,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<OrderView>, QueryError> {
        self.by_owner(&Owner::Anonymous(anon), before, limit)
    }

    /// Active (non-final) orders by deadline, earliest first, after the given
    /// `(expires_at, order)` of the previous page: what the deadline worker
    /// scans. At most [`MAX_PAGE_SIZE`].
    pub fn active(
        &self,
        after: Option<(DateTime<Utc>, OrderId)>,
        limit: usize,
    ) -> Result<Vec<(DateTime<Utc>, OrderId)>, QueryError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let start = match after {
            Some((at, order)) => {
                let mut key = active_key(at, order);
                key.push(0);
                key
            }
            None => vec![b'a'],
        };
        let mut out = Vec::with_capacity(limit);
        for item in self.tree.range(start..vec![b'b']) {
            let (key, _) = item?;
            let parsed = (key.len() == 25)
                .then(|| Some((keys::time_from(&key[1..9])?, keys::uuid_from(&key[9..])?)))
                .flatten();
            let (at, id) =
                parsed.ok_or_else(|| StoredValueError::new(&key, "not an active-order key"))?;
            out.push((at, OrderId(id)));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Whether the owner has any order that is not final (scans the owner's
    /// orders newest first, up to `max_orders`).
    pub fn has_active_orders(&self, owner: &Owner, max_orders: usize) -> Result<bool, QueryError> {
        let mut before = None;
        let mut seen = 0;
        loop {
            let page = self.owner_ids(owner, before, MAX_PAGE_SIZE)?;
            for row in self.rows(&page.items)? {
                if !row.status.is_final() {
                    return Ok(true);
                }
            }
            seen += page.items.len();
            match page.next {
                Some(next) if seen < max_orders => before = Some(next),
                _ => return Ok(false),
            }
        }
    }
}
