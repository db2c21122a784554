//! The wallet: balance, held, available; ledger entries with running balance;
//! deposit history (both from the wallets read model).

use actix_web::{web, HttpResponse};
use nexus_core::domain::ledger::Owner;
use nexus_projections::wallets::{DepositStatus, LedgerRow, Reference};
use nexus_projections::{Cursor, MAX_PAGE_SIZE};
use serde::{Deserialize, Deserializer, Serialize};

use super::auth::Customer;
use super::error::{ApiError, Problem};
use super::route::{Auth, Method, Op, Route};
use super::schema::{list_of, list_params, rfc3339, schema_ref};
use super::state::AppState;
use nexus_core::domain::account::ApiKeyScope;

/// This module's routes: the server registers each handler from here and the
/// OpenAPI document describes each from here (one source for both).
pub(super) const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/v1/wallet",
        handler: |route| route.to(wallet),
        doc: || Op {
            summary: "Wallet balance",
            tag: "wallet",
            auth: Auth::Customer(ApiKeyScope::Read),
            params: vec![],
            body: None,
            success: (200, "Wallet", Some(schema_ref("Wallet"))),
            errors: vec![],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/wallet/entries",
        handler: |route| route.to(entries),
        doc: || Op {
            summary: "Ledger entries of the wallet",
            tag: "wallet",
            auth: Auth::Customer(ApiKeyScope::Read),
            params: list_params(DEFAULT_PAGE),
            body: None,
            success: (200, "Page", Some(list_of("LedgerEntry"))),
            errors: vec![Problem::InvalidCursor, Problem::InvalidQuery],
        },
    },
    Route {
        method: Method::Get,
        path: "/v1/deposits",
        handler: |route| route.to(deposits),
        doc: || Op {
            summary: "List deposits",
            tag: "wallet",
            auth: Auth::Customer(ApiKeyScope::Read),
            params: list_params(DEFAULT_PAGE),
            body: None,
            success: (200, "Page", Some(list_of("Deposit"))),
            errors: vec![Problem::InvalidCursor, Problem::InvalidQuery],
        },
    },
];

/// Default page of a list.
pub(super) const DEFAULT_PAGE: usize = 20;

/// A page size a client asked for: 1 to [`MAX_PAGE_SIZE`]. Any other value
/// fails the query's deserialization, so it is refused as 400 `invalid_query`
/// like every bad query value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit(usize);

impl PageLimit {
    /// The size asked for, or `default` when none was.
    pub fn or(limit: Option<PageLimit>, default: usize) -> usize {
        limit.map_or(default, |limit| limit.0)
    }
}

impl<'de> Deserialize<'de> for PageLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let limit = usize::deserialize(deserializer)?;
        if (1..=MAX_PAGE_SIZE).contains(&limit) {
            Ok(PageLimit(limit))
        } else {
            Err(serde::de::Error::custom(format_args!(
                "limit must be 1 to {MAX_PAGE_SIZE}"
            )))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<PageLimit>,
}

impl ListQuery {
    pub fn page(&self) -> Result<(Option<Cursor>, usize), ApiError> {
        let limit = PageLimit::or(self.limit, DEFAULT_PAGE);
        let cursor = match self.cursor.as_deref() {
            None => None,
            Some(c) => Some(c.parse::<Cursor>().map_err(|_| {
                ApiError::new(
                    Problem::InvalidCursor,
                    "the cursor is not one this API gave",
                )
            })?),
        };
        Ok((cursor, limit))
    }
}

async fn wallet(state: web::Data<AppState>, customer: Customer) -> Result<HttpResponse, ApiError> {
    let wallet = state
        .commerce
        .wallet(Owner::Account(customer.account))
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "balance": wallet.balance().to_string(),
        "held": wallet.held().to_string(),
        "available": wallet.available.to_string(),
    })))
}

/// What a ledger entry is for: the order or deposit it belongs to, or the
/// move of the balance to unclaimed balances at the account's erasure.
#[derive(Serialize)]
struct EntryReference {
    /// `order`, `deposit` or `unclaimed` (no id).
    kind: &'static str,
    id: Option<String>,
}

/// A ledger entry as the API shows it (the `LedgerEntry` schema), in the list
/// and in the data export alike.
#[derive(Serialize)]
pub(super) struct LedgerEntryView {
    position: u64,
    at: String,
    reason: &'static str,
    reference: EntryReference,
    available_change: String,
    held_change: String,
    available: String,
    held: String,
    balance: String,
}

pub(super) fn ledger_entry(row: &LedgerRow) -> LedgerEntryView {
    let reference = match row.reference {
        Reference::Order(id) => EntryReference {
            kind: "order",
            id: Some(id.to_string()),
        },
        Reference::Deposit(id) => EntryReference {
            kind: "deposit",
            id: Some(id.to_string()),
        },
        Reference::Unclaimed => EntryReference {
            kind: "unclaimed",
            id: None,
        },
    };
    LedgerEntryView {
        position: row.position,
        at: rfc3339(row.at),
        reason: row.reason.as_str(),
        reference,
        available_change: row.available_change.to_string(),
        held_change: row.held_change.to_string(),
        available: row.available.to_string(),
        held: row.held.to_string(),
        balance: row.balance().to_string(),
    }
}

async fn entries(
    state: web::Data<AppState>,
    customer: Customer,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (cursor, limit) = query.page()?;
    state.catch_up(nexus_projections::wallets::NAME).await;
    let wallets = state
        .read_models
        .wallets()
        .map_err(|e| ApiError::internal(&e))?;
    let page = wallets
        .ledger(&Owner::Account(customer.account), cursor, limit)
        .map_err(|e| ApiError::internal(&e))?;
    let items: Vec<LedgerEntryView> = page.items.iter().map(ledger_entry).collect();
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "items": items, "next_cursor": page.next.map(|c| c.to_string()) }),
    ))
}

async fn deposits(
    state: web::Data<AppState>,
    customer: Customer,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (cursor, limit) = query.page()?;
    state.catch_up(nexus_projections::wallets::NAME).await;
    let wallets = state
        .read_models
        .wallets()
        .map_err(|e| ApiError::internal(&e))?;
    let page = wallets
        .deposits(&Owner::Account(customer.account), cursor, limit)
        .map_err(|e| ApiError::internal(&e))?;
    let items: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|d| {
            serde_json::json!({
                "id": d.deposit.to_string(),
                "amount": d.invoiced.to_string(),
                "paid": d.paid.to_string(),
                "status": match d.status {
                    DepositStatus::Waiting => "waiting",
                    DepositStatus::Paid => "paid",
                    DepositStatus::Failed => "failed",
                },
                "created_at": rfc3339(d.requested_at),
                "expires_at": rfc3339(d.expires_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "items": items, "next_cursor": page.next.map(|c| c.to_string()) }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Query {
        limit: Option<PageLimit>,
    }

    fn limit(query: &str) -> Result<usize, String> {
        web::Query::<Query>::from_query(query)
            .map(|q| PageLimit::or(q.limit, DEFAULT_PAGE))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_page_limit_is_1_to_the_page_bound() {
        assert_eq!(limit(""), Ok(DEFAULT_PAGE));
        assert_eq!(limit("limit=1"), Ok(1));
        assert_eq!(limit(&format!("limit={MAX_PAGE_SIZE}")), Ok(MAX_PAGE_SIZE));
        for refused in ["limit=0", "limit=101", "limit=-1", "limit=x", "limit="] {
            assert!(limit(refused).is_err(), "{refused}");
        }
        assert!(limit("limit=0")
            .unwrap_err()
            .contains("limit must be 1 to 100"));
    }
}
