//! The wallet: balance, held, available.

use actix_web::{get, web, HttpResponse};
use nexus_core::domain::ledger::Owner;

use super::auth::Customer;
use super::error::ApiError;
use super::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(wallet);
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
