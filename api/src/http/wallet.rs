//! The wallet: balance, held, available; ledger entries with running balance;
//! deposit history (both from the wallets read model).

use actix_web::{get, web, HttpResponse};
use chrono::SecondsFormat;
use nexus_core::domain::ledger::Owner;
use nexus_projections::wallets::DepositStatus;
use nexus_projections::Cursor;
use serde::Deserialize;

use super::auth::Customer;
use super::error::{ApiError, Problem};
use super::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(wallet).service(entries).service(deposits);
}

/// Default page of a list.
pub(super) const DEFAULT_PAGE: usize = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

impl ListQuery {
    pub fn page(&self) -> Result<(Option<Cursor>, usize), ApiError> {
        let limit = self
            .limit
            .unwrap_or(DEFAULT_PAGE)
            .clamp(1, nexus_projections::MAX_PAGE_SIZE);
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

#[get("/v1/wallet")]
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

#[get("/v1/wallet/entries")]
async fn entries(
    state: web::Data<AppState>,
    customer: Customer,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (cursor, limit) = query.page()?;
    let wallets = state
        .read_models
        .wallets()
        .map_err(|e| ApiError::internal(&e))?;
    let page = wallets
        .ledger(&Owner::Account(customer.account), cursor, limit)
        .map_err(|e| ApiError::internal(&e))?;
    let items: Vec<serde_json::Value> = page
        .items
        .iter()
        .map(|row| {
            serde_json::json!({
                "at": row.at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "reason": row.reason.as_str(),
                "available_change": row.available_change.to_string(),
                "held_change": row.held_change.to_string(),
                "available": row.available.to_string(),
                "held": row.held.to_string(),
                "balance": row.balance().to_string(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "items": items, "next_cursor": page.next.map(|c| c.to_string()) }),
    ))
}

#[get("/v1/deposits")]
async fn deposits(
    state: web::Data<AppState>,
    customer: Customer,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (cursor, limit) = query.page()?;
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
                "created_at": d.requested_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "expires_at": d.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "items": items, "next_cursor": page.next.map(|c| c.to_string()) }),
    ))
}
