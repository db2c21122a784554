//! Orders: by id; each owner's orders newest first (which is also the
//! verification history of an account, and the orders of an anonymous buyer);
//! the active (non-final) orders by deadline.
//!
//! # Tree `orders`
//!
//! | key | value |
//! |---|---|
//! | `m` | [`BucketState`]: how many buckets the order rows are in, and how many orders |
//! | `o` bucket(u32 BE) | [`OrderBucket`]: the rows of the orders whose id hashes to the bucket |
//! | `w` owner(17) | the head page of the owner's order ids ([`crate::list::ListHead`]) |
//! | `p` owner(17) page(u64 BE) | an archived page of order ids ([`OWNER_PAGE_IDS`]) |
//! | `a` expires_at(8) order(16) | empty: the order is active |
//! | `n` anon(16) | `AnonRow`: an anonymous buyer's invoice and sealed order details |
//!
//! What was ordered (service, country, channel) and the phone number are kept
//! as the events' sealed sections ([`StoredPii`]) and opened on read.
//!
//! # Order rows in buckets
//!
//! sled's cost per key written is high and falls steeply with the value's size,
//! so order rows are not one key each: they are packed into buckets by a hash
//! of the order id (linear hashing). The buckets grow in number with the
//! orders: when the orders exceed [`ORDERS_PER_BUCKET`] times the buckets, the
//! next bucket in turn is split in two (its rows move by one more bit of their
//! hash), so a bucket holds [`ORDERS_PER_BUCKET`] rows on average and about
//! twice that before its split; no bucket grows with the log. A lookup by id
//! reads [`BucketState`] and one bucket, and decodes only the row it wants
//! (a bucket's value indexes its rows by id). Splits depend only on the
//! sequence of `OrderPlaced` events, so the buckets of a rebuild equal those
//! of the incremental build byte for byte.

mod apply;
mod query;

use chrono::{DateTime, Utc};
use nexus_core::domain::ids::{AnonymousId, DepositId, OrderId};
use nexus_core::domain::ledger::Owner;
use nexus_core::domain::money::Micros;
use nexus_core::domain::order::{CancelReason, DeliveryChannel, OrderStatus};
use serde::{Deserialize, Serialize};

use crate::keys;
use crate::sealed::StoredPii;

pub use apply::OrdersProjection;
pub use query::{AnonymousView, HistoryItem, OrderView, OrdersView};

/// The projection's (and its tree's) name.
pub const NAME: &str = "orders";
/// Order ids per archived page of an owner's list.
pub const OWNER_PAGE_IDS: usize = 128;
/// The format of this tree's rows. 2: order rows in buckets (1: one key per
/// order).
pub const FORMAT_VERSION: u32 = 2;
/// Orders per bucket on average: a bucket is split when the orders exceed this
/// many times the buckets.
pub const ORDERS_PER_BUCKET: u64 = 16;
/// The most buckets (2^31): beyond, buckets are not split any more.
const MAX_BUCKET_LEVEL: u8 = 31;

/// An order as the read model keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderRow {
    pub order: OrderId,
    pub owner: Owner,
    pub status: OrderStatus,
    pub price: Micros,
    #[serde(with = "crate::keys::ts")]
    pub placed_at: DateTime<Utc>,
    #[serde(with = "crate::keys::ts")]
    pub expires_at: DateTime<Utc>,
    #[serde(with = "crate::keys::ts::option")]
    pub assigned_at: Option<DateTime<Utc>>,
    pub provider: Option<String>,
    pub provider_cost: Option<Micros>,
    pub codes_received: u32,
    #[serde(with = "crate::keys::ts::option")]
    pub first_code_at: Option<DateTime<Utc>>,
    #[serde(with = "crate::keys::ts::option")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub delivered_via: Option<DeliveryChannel>,
    pub resend_requested: bool,
    #[serde(with = "crate::keys::ts::option")]
    pub closed_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<CancelReason>,
    pub completed_automatically: bool,
    /// Sealed `OrderDetails` (from `OrderPlaced`, or from the anonymous
    /// buyer's `AnonymousOrderCreated`).
    pub details: Option<StoredPii>,
    /// Sealed `PhonePii` from `OrderNumberAssigned`.
    pub phone: Option<StoredPii>,
}

/// An anonymous buyer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AnonRow {
    #[serde(with = "crate::keys::ts")]
    pub created_at: DateTime<Utc>,
    pub invoice: DepositId,
    pub price: Micros,
    /// Sealed `OrderDetails`, under the buyer's subject.
    pub details: Option<StoredPii>,
    pub orders_started: u32,
}

/// The key of the bucket state.
const BUCKET_STATE_KEY: &[u8] = b"m";

/// How many buckets the order rows are in: `2^level + split` (linear hashing:
/// buckets below `split` are split already in this round).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BucketState {
    pub level: u8,
    pub split: u32,
    /// Orders placed (rows in all buckets).
    pub orders: u64,
}

impl BucketState {
    pub fn buckets(&self) -> u64 {
        (1u64 << self.level) + u64::from(self.split)
    }

    /// The bucket of an order.
    pub fn bucket_of(&self, order: OrderId) -> u32 {
        let hash = order_hash(order);
        let low = hash & ((1u64 << self.level) - 1);
        let bucket = if low < u64::from(self.split) {
            hash & ((1u64 << (self.level + 1)) - 1)
        } else {
            low
        };
        bucket as u32
    }

    /// Counts a new order; returns the bucket to split, if it is time to.
    /// After the split, the rows of the returned bucket whose
    /// [`BucketState::bucket_of`] changed belong to the new bucket.
    pub fn add_order(&mut self) -> Option<u32> {
        self.orders = self.orders.saturating_add(1);
        if self.orders <= ORDERS_PER_BUCKET.saturating_mul(self.buckets())
            || self.level >= MAX_BUCKET_LEVEL
        {
            return None;
        }
        let splitting = self.split;
        self.split += 1;
        if u64::from(self.split) == 1u64 << self.level {
            self.level += 1;
            self.split = 0;
        }
        Some(splitting)
    }
}

/// A fixed 64-bit hash of an order id (the same on every machine and in every
/// build: it places rows in stored buckets).
fn order_hash(order: OrderId) -> u64 {
    let bytes = order.0.as_bytes();
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&bytes[..8]);
    low.copy_from_slice(&bytes[8..]);
    // splitmix64's finalizer over both halves.
    let mut x = u64::from_be_bytes(high) ^ u64::from_be_bytes(low).rotate_left(29);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn bucket_key(bucket: u32) -> [u8; 5] {
    let mut key = [b'o'; 5];
    key[1..].copy_from_slice(&bucket.to_be_bytes());
    key
}

/// The rows of the orders in one bucket (in memory in no particular order;
/// stored sorted by order id).
///
/// Stored as one value that indexes its rows: the row count (u32 LE), the
/// sorted ids (16 bytes each), the end offset of each row's bytes (u32 LE
/// each), then each row's own encoding ([`crate::value`]). A lookup finds the
/// id and decodes that row only ([`find_in_bucket`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OrderBucket {
    pub rows: Vec<OrderRow>,
}

impl OrderBucket {
    /// An empty bucket with room for the rows it will have until its split
    /// (rows are large: growing the vector row by row moves them repeatedly).
    pub fn with_room() -> Self {
        Self {
            rows: Vec::with_capacity(2 * ORDERS_PER_BUCKET as usize),
        }
    }

    fn position(&self, order: OrderId) -> Option<usize> {
        // A few dozen rows at most: a scan is as fast as keeping them sorted.
        self.rows.iter().position(|row| row.order == order)
    }

    pub fn get_mut(&mut self, order: OrderId) -> Option<&mut OrderRow> {
        let at = self.position(order)?;
        self.rows.get_mut(at)
    }

    /// Inserts the row, or replaces the row of the same order. Returns whether
    /// the order is new to the bucket.
    pub fn upsert(&mut self, row: OrderRow) -> bool {
        match self.position(row.order) {
            Some(at) => {
                self.rows[at] = row;
                false
            }
            None => {
                self.rows.push(row);
                true
            }
        }
    }

    fn encode(&self) -> Option<Vec<u8>> {
        let count = u32::try_from(self.rows.len()).ok()?;
        let mut sorted: Vec<&OrderRow> = self.rows.iter().collect();
        sorted.sort_unstable_by_key(|row| row.order.0);
        let mut encoded_rows = Vec::with_capacity(self.rows.len() * 192);
        let mut ends = Vec::with_capacity(self.rows.len());
        for row in &sorted {
            crate::value::encode_into(&mut encoded_rows, *row)?;
            ends.push(u32::try_from(encoded_rows.len()).ok()?);
        }
        let mut out = Vec::with_capacity(4 + self.rows.len() * 20 + encoded_rows.len());
        out.extend_from_slice(&count.to_le_bytes());
        for row in &sorted {
            out.extend_from_slice(row.order.0.as_bytes());
        }
        for end in ends {
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&encoded_rows);
        Some(out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let layout = BucketLayout::parse(bytes)?;
        let mut rows = Vec::with_capacity(layout.count);
        for index in 0..layout.count {
            rows.push(layout.row(index)?);
        }
        Ok(Self { rows })
    }
}

/// A stored bucket's parts, borrowed.
struct BucketLayout<'a> {
    count: usize,
    ids: &'a [u8],
    ends: &'a [u8],
    rows: &'a [u8],
}

impl<'a> BucketLayout<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let (count, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("a bucket shorter than its count")?;
        let count = u32::from_le_bytes(*count) as usize;
        let index_len = count
            .checked_mul(20)
            .filter(|len| *len <= rest.len())
            .ok_or("a bucket shorter than its index")?;
        let (ids, rest) = rest.split_at(count * 16);
        let (ends, rows) = rest.split_at(index_len - count * 16);
        Ok(Self {
            count,
            ids,
            ends,
            rows,
        })
    }

    fn id(&self, index: usize) -> &'a [u8] {
        &self.ids[index * 16..index * 16 + 16]
    }

    fn end(&self, index: usize) -> usize {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(&self.ends[index * 4..index * 4 + 4]);
        u32::from_le_bytes(raw) as usize
    }

    fn row(&self, index: usize) -> Result<OrderRow, String> {
        let start = if index == 0 { 0 } else { self.end(index - 1) };
        let end = self.end(index);
        let bytes = self
            .rows
            .get(start..end)
            .ok_or("a bucket row out of bounds")?;
        crate::value::decode(b"o", bytes).map_err(|e| e.reason)
    }

    fn find(&self, order: OrderId) -> Result<Option<OrderRow>, String> {
        let wanted = order.0.as_bytes().as_slice();
        let (mut low, mut high) = (0, self.count);
        while low < high {
            let middle = (low + high) / 2;
            match self.id(middle).cmp(wanted) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return self.row(middle).map(Some),
            }
        }
        Ok(None)
    }
}

/// The row of `order` in a stored bucket (the tree's value), decoding no other
/// row.
pub(crate) fn find_in_bucket(
    key: &[u8],
    stored: &[u8],
    order: OrderId,
) -> Result<Option<OrderRow>, crate::error::StoredValueError> {
    let bytes: &[u8] = crate::value::decode_borrowed(key, stored)?;
    BucketLayout::parse(bytes)
        .and_then(|layout| layout.find(order))
        .map_err(|reason| crate::error::StoredValueError::new(key, reason))
}

impl Serialize for OrderBucket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = self
            .encode()
            .ok_or_else(|| serde::ser::Error::custom("a bucket row does not encode"))?;
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for OrderBucket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderBucket;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an order bucket")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<OrderBucket, E> {
                OrderBucket::decode(bytes).map_err(E::custom)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

fn owner_key(owner: &Owner) -> Vec<u8> {
    keys::key(b'w', &[&keys::owner(owner)])
}

fn owner_page_key(owner: &Owner, page: u64) -> Vec<u8> {
    keys::key(b'p', &[&keys::owner(owner), &page.to_be_bytes()])
}

fn active_key(expires_at: DateTime<Utc>, order: OrderId) -> Vec<u8> {
    keys::key(b'a', &[&keys::time(expires_at), order.0.as_bytes()])
}

fn anon_key(anon: AnonymousId) -> Vec<u8> {
    keys::key(b'n', &[anon.0.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn row(order: OrderId) -> OrderRow {
        OrderRow {
            order,
            owner: Owner::Account(nexus_core::domain::ids::AccountId::new()),
            status: OrderStatus::Placed,
            price: Micros(1_500_000),
            placed_at: DateTime::from_timestamp(1_764_000_000, 0).unwrap(),
            expires_at: DateTime::from_timestamp(1_764_000_900, 0).unwrap(),
            assigned_at: None,
            provider: Some("sim-a".into()),
            provider_cost: None,
            codes_received: 0,
            first_code_at: None,
            delivered_at: None,
            delivered_via: None,
            resend_requested: false,
            closed_at: None,
            cancel_reason: None,
            completed_automatically: false,
            details: None,
            phone: None,
        }
    }

    /// Places orders as the projection does (split after each new order) and
    /// checks every order is found in its stored bucket, by the id alone.
    #[test]
    fn buckets_split_as_orders_come_and_every_order_is_found_by_id() {
        let mut state = BucketState::default();
        let mut buckets: HashMap<u32, OrderBucket> = HashMap::new();
        let mut orders = Vec::new();
        for _ in 0..5_000 {
            let order = OrderId::new();
            orders.push(order);
            let bucket = state.bucket_of(order);
            assert!(buckets.entry(bucket).or_default().upsert(row(order)));
            let level = state.level;
            if let Some(split) = state.add_order() {
                let old = buckets.remove(&split).unwrap_or_default();
                for moved in old.rows {
                    let to = state.bucket_of(moved.order);
                    assert!(
                        to == split || to == split + (1 << level),
                        "a split halves one bucket"
                    );
                    buckets.entry(to).or_default().upsert(moved);
                }
            }
        }
        assert_eq!(state.orders, 5_000);
        assert_eq!(state.buckets(), 5_000 / ORDERS_PER_BUCKET + 1);
        let largest = buckets.values().map(|b| b.rows.len()).max().unwrap();
        assert!(
            largest <= 4 * ORDERS_PER_BUCKET as usize,
            "a bucket of {largest} rows"
        );
        let stored: HashMap<u32, Vec<u8>> = buckets
            .iter()
            .map(|(n, b)| (*n, crate::value::encode(b).unwrap()))
            .collect();
        for order in &orders {
            let bucket = state.bucket_of(*order);
            let key = bucket_key(bucket);
            let found = find_in_bucket(&key, &stored[&bucket], *order).unwrap();
            assert_eq!(found.map(|r| r.order), Some(*order));
        }
        // An order that is not there is not found; a stored bucket decodes
        // whole to the same rows, in id order.
        let absent = OrderId::new();
        let bucket = state.bucket_of(absent);
        assert_eq!(
            find_in_bucket(&bucket_key(bucket), &stored[&bucket], absent).unwrap(),
            None
        );
        let decoded: OrderBucket = crate::value::decode(b"o", &stored[&bucket]).unwrap();
        let mut expected = buckets[&bucket].rows.clone();
        expected.sort_by_key(|row| row.order.0);
        assert_eq!(decoded.rows, expected);
    }

    #[test]
    fn a_damaged_bucket_is_an_error_not_a_panic() {
        let bucket = OrderBucket {
            rows: vec![row(OrderId::new()), row(OrderId::new())],
        };
        let stored = crate::value::encode(&bucket).unwrap();
        for len in 0..stored.len() {
            let _ = find_in_bucket(b"o", &stored[..len], bucket.rows[0].order);
            let _ = crate::value::decode::<OrderBucket>(b"o", &stored[..len]);
        }
        // A row count far beyond the value.
        let mut layout = bucket.encode().unwrap();
        layout[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let bad = crate::value::encode(&layout.as_slice()).unwrap();
        assert!(find_in_bucket(b"o", &bad, bucket.rows[0].order).is_err());
        assert!(crate::value::decode::<OrderBucket>(b"o", &bad).is_err());
    }
}
